"""Predictions written to a file (``deit predict --output``): CSV or JSON lines, the format from the suffix.

A row per input: its path, its top-k labels and probabilities (those of the model's prediction), then, for a
two-head model, each head's (``cls``, ``dist``, ``avg``), and the error of an input that could not be read.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Sequence

from deit.inference.predictor import ClassScore, Prediction
from deit.runtime.files import atomic_write_text

OUTPUT_SUFFIXES: tuple[str, ...] = (".csv", ".jsonl")


def output_suffix(path: str | os.PathLike) -> str:
    """The format of a predictions file, from its suffix; a ValueError naming the ones written otherwise."""
    suffix = os.path.splitext(os.fspath(path))[1].lower()
    if suffix not in OUTPUT_SUFFIXES:
        raise ValueError(f"--output {os.fspath(path)}: cannot tell the format from {suffix or 'no suffix'!r}; "
                         f"name the file *.csv or *.jsonl")
    return suffix


def _header(top_k: int, heads: Sequence[str]) -> list[str]:
    columns = ["path"]
    for prefix in ("", *(f"{head}_" for head in heads)):
        for k in range(1, top_k + 1):
            columns += [f"{prefix}label_{k}", f"{prefix}prob_{k}"]
    return [*columns, "error"]


def _cells(scores: list[ClassScore], top_k: int) -> list[str]:
    cells = [value for c in scores for value in (c.name, f"{c.probability:.6f}")]
    return cells + [""] * (2 * top_k - len(cells))


def _csv(results: Sequence[Prediction], top_k: int, heads: Sequence[str]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(_header(top_k, heads))
    for r in results:
        parts = [_cells(r.top_k, top_k), *(_cells(r.heads.get(head, []), top_k) for head in heads)]
        writer.writerow([r.source, *(cell for part in parts for cell in part), r.error or ""])
    return out.getvalue()


def _jsonl(results: Sequence[Prediction]) -> str:
    def scores(top: list[ClassScore]) -> list[dict]:
        return [{"label": c.name, "index": c.index, "probability": c.probability} for c in top]

    rows = []
    for r in results:
        row: dict = {"path": r.source}
        if r.ok:
            row["predictions"] = scores(r.top_k)
            if r.heads:
                row["heads"] = {head: scores(top) for head, top in r.heads.items()}
        else:
            row["error"] = r.error
        rows.append(json.dumps(row))
    return "".join(f"{row}\n" for row in rows)


def write_predictions(results: Sequence[Prediction], path: str | os.PathLike, heads: Sequence[str] = ()) -> None:
    """Write ``results`` to ``path`` (.csv or .jsonl, whole or not at all); ``heads``: the per-head columns."""
    suffix = output_suffix(path)
    top_k = max((len(r.top_k) for r in results), default=0)
    text = _csv(results, top_k, heads) if suffix == ".csv" else _jsonl(results)
    atomic_write_text(path, text)


__all__ = ["OUTPUT_SUFFIXES", "output_suffix", "write_predictions"]
