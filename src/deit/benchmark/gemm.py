"""The hardware reference: a square matrix multiplication's achieved FLOP/s, timed in the same rounds as the models.

A model's "% of GEMM" is its achieved FLOP/s over this figure, measured in the same run (on a shared machine
an absolute peak from another time means little). On CUDA, MFU against the datasheet's dense peak is also given.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

# Dense (no sparsity) tensor-core peaks, TFLOP/s, from the vendors' datasheets: the denominator of GPU MFU.
DATASHEET_TFLOPS: dict[tuple[str, str], float] = {
    ("H100 SXM", "bf16"): 989.4,
    ("H100 NVL", "bf16"): 835.5,
    ("H100 PCIe", "bf16"): 756.5,
    ("H100", "bf16"): 989.4,  # an unnamed H100 (e.g. "NVIDIA H100 80GB HBM3") is the SXM part
    ("H200", "bf16"): 989.4,
    ("A100", "bf16"): 312.0,
    ("H100 SXM", "fp32"): 66.9,
    ("H100 NVL", "fp32"): 60.0,
    ("H100 PCIe", "fp32"): 51.2,
    ("H100", "fp32"): 66.9,
    ("H200", "fp32"): 66.9,
    ("A100", "fp32"): 19.5,
}

DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16}


def bf16_supported(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def datasheet_tflops(device_name: str, dtype: str) -> float | None:
    """The datasheet peak of a known accelerator, matching the longest name that appears in ``device_name``."""
    known = [(name, tf) for (name, dt), tf in DATASHEET_TFLOPS.items() if dt == dtype and name in device_name]
    return max(known, key=lambda item: len(item[0]))[1] if known else None


def default_size(device: torch.device) -> int:
    # 2048^2 saturates a few CPU cores; a large GPU needs a bigger problem to reach its tensor-core peak.
    return 8192 if device.type == "cuda" else 2048


def gemm(device: torch.device, dtype: str, n: int) -> tuple[Callable[[], object], float]:
    """(one n x n x n matmul in ``dtype``, its FLOPs = 2 n^3). bf16 runs natively, not through autocast."""
    if dtype == "bf16" and not bf16_supported(device):
        raise ValueError(f"bf16 matrix multiplication is not supported on {device}; use --dtype fp32")
    generator = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=DTYPES[dtype], generator=generator)
    b = torch.randn(n, n, device=device, dtype=DTYPES[dtype], generator=generator)
    out = torch.empty(n, n, device=device, dtype=DTYPES[dtype])
    return (lambda: torch.mm(a, b, out=out)), 2.0 * n**3


__all__ = ["DATASHEET_TFLOPS", "DTYPES", "bf16_supported", "datasheet_tflops", "default_size", "gemm"]
