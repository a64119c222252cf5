"""Using trained models: prediction, export with a parity check, and the distillation analyses of the paper."""

from deit.inference.analysis import (
    Agreement,
    AttentionMaps,
    TokenSimilarity,
    agreement,
    attention_maps,
    attention_probs,
    attention_rollout,
    head_weight_cosine,
    plot_attention,
    plot_token_similarity,
    token_similarity,
)
from deit.inference.common import InferenceHead, imagenet_class_names, resolve_class_names
from deit.inference.export import (
    FORMATS,
    PARITY_TOLERANCE,
    ExportError,
    ExportParityError,
    ExportResult,
    export_model,
)
from deit.inference.predictor import ClassScore, Prediction, Predictor, format_predictions

__all__ = [
    "FORMATS",
    "PARITY_TOLERANCE",
    "Agreement",
    "AttentionMaps",
    "ClassScore",
    "ExportError",
    "ExportParityError",
    "ExportResult",
    "InferenceHead",
    "Prediction",
    "Predictor",
    "TokenSimilarity",
    "agreement",
    "attention_maps",
    "attention_probs",
    "attention_rollout",
    "export_model",
    "format_predictions",
    "head_weight_cosine",
    "imagenet_class_names",
    "plot_attention",
    "plot_token_similarity",
    "resolve_class_names",
    "token_similarity",
]
