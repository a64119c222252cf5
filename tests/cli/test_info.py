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
