"""The table's statistics come from results.json rows: mean and sample std checked against a hand example."""

from __future__ import annotations

import json

import pytest

from deit.reproduce import aggregate, load_rows, mean_std
from deit.reproduce.table import compare, render_markdown, render_text


def row(method: str, seed: int, top1: float, top5: float = 1.0, agreement: float = 0.9, seconds: float = 10.0):
    return {"method": method, "seed": seed, "top1": top1, "top5": top5, "agreement": agreement, "seconds": seconds}


# Hand example: deit-none top-1 0.90, 0.92, 0.94 -> mean 0.92, sample std 0.02 (deviations -0.02, 0, 0.02:
# (0.0004 + 0 + 0.0004) / 2 = 0.0004). teacher 0.97, 0.99, 0.98 -> mean 0.98, std 0.01.
ROWS = [
    row("deit-none", 0, 0.90), row("deit-none", 1, 0.92), row("deit-none", 2, 0.94, seconds=16.0),
    row("teacher", 0, 0.97), row("teacher", 1, 0.99), row("teacher", 2, 0.98),
    row("deit-cls-hard", 0, 0.91), row("deit-cls-hard", 1, 0.93), row("deit-cls-hard", 2, 0.92),
]


def test_mean_and_sample_std_by_hand(tmp_path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps(ROWS))
    summaries = {s.method: s for s in aggregate(load_rows(path))}
    assert list(summaries) == ["teacher", "deit-none", "deit-cls-hard"]  # the table's order, not the file's
    none = summaries["deit-none"].stats
    assert none["top1"].mean == pytest.approx(0.92)
    assert none["top1"].std == pytest.approx(0.02)
    assert none["seconds"].mean == pytest.approx(12.0)
    assert summaries["teacher"].stats["top1"].std == pytest.approx(0.01)
    assert summaries["deit-none"].seeds == 3


def test_one_seed_has_no_std_and_bad_rows_are_refused():
    assert mean_std([0.5]).std is None
    with pytest.raises(ValueError, match="unknown method"):
        aggregate([row("deit-magic", 0, 0.5)])
    with pytest.raises(ValueError, match="repeat a seed"):
        aggregate([row("teacher", 0, 0.5), row("teacher", 0, 0.6)])


def test_noise_rule():
    s = mean_std
    assert compare(s([0.98, 0.99, 0.97]), s([0.90, 0.92, 0.94]))[1] == "holds, beyond noise"  # 6 points > 2
    assert compare(s([0.91, 0.93, 0.92]), s([0.90, 0.92, 0.94]))[1].startswith("within noise")  # 0 <= 2
    assert compare(s([0.80, 0.81, 0.82]), s([0.90, 0.92, 0.94]))[1] == "reversed, beyond noise"
    assert compare(s([0.9]), s([0.8]))[1].startswith("one seed")


def test_rendered_table_shows_the_hand_figures():
    summaries = aggregate(ROWS)
    md = render_markdown(summaries, {"seeds": [0, 1, 2], "val_images": 597, "plan": {}})
    assert "| 92.00 ± 2.00 |" in md and "| 98.00 ± 1.00 |" in md
    assert "| +6.00 |" in md  # teacher vs deit-none: 6 points, beyond noise, no ≈ mark
    assert "holds, beyond noise" in md
    assert "+0.00 ≈" in md  # deit-cls-hard vs deit-none: within noise
    # teacher - deit-none per seed: 0.97-0.90, 0.99-0.92, 0.98-0.94
    assert "+7.00, +7.00, +4.00 (A ahead in 3 of 3)" in md
    text = render_text(summaries)
    assert "deit-cls-hard" in text and "92.00 ± 2.00" in text


def test_paired_deltas_match_seeds_not_positions():
    from deit.reproduce.table import paired_deltas

    a, b = aggregate([row("deit-none", 2, 0.80), row("deit-none", 0, 0.90),
                      row("deit-cls-hard", 0, 0.95), row("deit-cls-hard", 1, 0.50), row("deit-cls-hard", 2, 0.70)])
    assert paired_deltas(b, a) == pytest.approx({0: 0.05, 2: -0.10})  # seed 1 has no pair


def test_head_metrics_by_hand():
    import torch

    from deit.inference.evaluation import HeadTally, head_metrics
    from deit.reproduce.runs import head_row

    logits = torch.tensor([[0.9, 0.1, 0.0, 0.0, 0.0, 0.0],   # predicts 0, label 0
                           [0.1, 0.9, 0.0, 0.0, 0.0, 0.0],   # predicts 1, label 0 (in the top 5)
                           [0.5, 0.4, 0.0, 0.3, 0.2, 1.0]])  # predicts 5, label 2 (ranked last: not in the top 5)
    labels = torch.tensor([0, 0, 2])
    def metrics(teacher_pred):
        tally = HeadTally(("model",), labels=True, teacher=teacher_pred is not None)
        tally.add({"model": logits}, labels, teacher_pred)
        return head_row(head_metrics(tally.totals(), "model"))

    m = metrics(torch.tensor([0, 1, 1]))
    assert m == pytest.approx({"top1": 1 / 3, "top5": 2 / 3, "agreement": 2 / 3})
    assert metrics(None)["agreement"] == 1.0
