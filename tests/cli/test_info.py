import json

from deit.cli import main


def test_info_list_json_has_the_contract_keys_and_reference_figures(capsys):
    assert main(["info", "--list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    by_name = {r["name"]: r for r in rows}
    assert {"name", "params", "gmacs_linear", "gmacs_total", "num_tokens"} <= set(rows[0])
    row = by_name["deit_small_distilled_patch16_224"]
    assert (row["params"], row["gmacs_linear"], row["gmacs_total"], row["num_tokens"]) == (22_436_432, 4.27, 4.63, 198)
    assert by_name["deit_base_patch16_384"]["num_tokens"] == 577


def test_info_table_and_overrides(capsys):
    assert main(["info", "deit-tiny", "--img-size", "288", "--num-classes", "10"]) == 0
    out = capsys.readouterr().out
    assert "deit_tiny_patch16_224" in out and "325" in out  # 1 + 18*18 tokens


def test_info_unknown_model_is_a_clear_error(capsys):
    assert main(["info", "deit-tinyy"]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'deit-tinyy'" in err and "did you mean" in err


def test_info_list_shows_the_deit3_models_with_their_exact_sizes():
    """As typed: `deit info --list` (the models built on the meta device, ViT-H included)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "deit", "info", "--list"], capture_output=True, text=True,
                          timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    rows = {w[0]: w[1] for w in map(str.split, done.stdout.splitlines()) if len(w) > 1}
    assert {name: rows.get(name) for name in DEIT3_PARAMS} == DEIT3_PARAMS
    assert rows["deit3_small_distilled_patch16_224"] == "22,444,880"  # + dist token, its position-less slot, head


# timm 1.0's deit3_* parameter counts (the official models_v2.py's: LayerScale, pos_embed of the patches only).
DEIT3_PARAMS = {
    "deit3_small_patch16_224": "22,059,496", "deit3_small_patch16_384": "22,205,416",
    "deit3_medium_patch16_224": "38,849,512", "deit3_base_patch16_224": "86,585,320",
    "deit3_base_patch16_384": "86,877,160", "deit3_large_patch16_224": "304,374,760",
    "deit3_large_patch16_384": "304,763,880", "deit3_huge_patch14_224": "632,126,440",
}
