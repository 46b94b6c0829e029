"""Config errors say what to do: short blocks naming the key, "did you mean", numbers as people write them, and
YAML syntax errors that name the file and line."""

from __future__ import annotations

import re

import jsonschema
import pytest
import yaml

from longvila.config import ConfigError, apply_overrides, load_config, load_config_file, numbers_as_numbers
from longvila.config.check import main as check_main
from longvila.config.schema import config_schema


def _error(data: dict) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(data)
    return str(info.value)


@pytest.mark.parametrize("data, key, guess", [
    ({"run_nmae": "x"}, "run_nmae", "run_name"),
    ({"train": {"cluster": {"gpus_per_nod": 2}}}, "train.cluster.gpus_per_nod", "gpus_per_node"),
    ({"train": {"stage4": [{"context": "512"}, {"contxt": "1k"}]}}, r"train.stage4\[1\].contxt", "context"),
    ({"pack": {"Seed": 3}}, "pack.Seed", "seed"),
])
def test_an_unknown_key_names_its_path_and_the_closest_valid_key(data, key, guess):
    message = _error(data)
    assert re.search(rf"config '{key}': unknown key; did you mean '{guess}'\?", message)
    assert "valid keys" in message and len(message.splitlines()) < 10
    assert "properties" not in message and "description" not in message   # never a schema dump


def test_every_unknown_key_is_reported_at_once_and_a_far_one_gets_no_guess():
    message = _error({"seed_typo": 1, "train": {"lrr": 1e-5, "stage5": [{"frams": 8}]}, "pack": {"sed": 1}})
    assert "config 'seed_typo': unknown key; check the spelling" in message
    assert "did you mean 'lr'?" in message and "did you mean 'frames'?" in message and "did you mean 'seed'?" in message
    assert len(message.splitlines()) < 14
    many = _error({f"typo{i}": i for i in range(20)})
    assert "... and 8 more" in many and len(many.splitlines()) < 16


@pytest.mark.parametrize("text", ["2e-5", "2E-5", "+2e-5", "0.00002"])
def test_a_number_in_e_notation_is_a_number_from_a_file_and_from_an_already_parsed_mapping(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(f"train:\n  lr: {text}\n  lora_alpha: 1E+3\n  stage4:\n    - {{context: '512', rope_theta: 1e6}}\n")
    assert isinstance(yaml.safe_load(path.read_text())["train"]["lora_alpha"], str)   # what PyYAML (YAML 1.1) gives
    cfg = load_config_file(path)
    assert cfg.train.lr == 2e-5 and type(cfg.train.lr) is float
    assert cfg.train.lora_alpha == 1000.0 and cfg.train.stage4[0].rope_theta == 1e6
    # snakemake's YAML parser hands over the string itself
    assert load_config({"train": {"lr": text}}).train.lr == 2e-5
    assert load_config(apply_overrides({}, [f"train.lr={text}"])).train.lr == 2e-5


def test_a_negative_e_number_reaches_the_fields_own_check():
    assert "config 'train.cluster.poll_seconds': must be > 0, got -1000000.0" in _error(
        {"train": {"cluster": {"poll_seconds": "-1e6"}}})


@pytest.mark.parametrize("value", ["abc", "1e", "e5", "nan", "inf", "2e-5x", True, [1]])
def test_a_float_field_refuses_what_is_not_a_number_naming_the_key(value):
    message = _error({"train": {"lr": value}})
    assert message.startswith("config 'train.lr': expected a number (e.g. 0.5 or 2e-5), got")
    assert len(message.splitlines()) == 1


def test_an_int_field_takes_an_integral_e_number_and_refuses_a_fraction():
    cfg = load_config({"corpus": {"num_tokens": "1e6"}, "pack": {"seed": "1E+3"}, "train": {"lora_r": 16.0}})
    assert cfg.corpus.num_tokens == 1_000_000 and type(cfg.corpus.num_tokens) is int
    assert cfg.pack.seed == 1000 and cfg.train.lora_r == 16 and type(cfg.train.lora_r) is int
    assert load_config({"corpus": {"num_tokens": "12345678901234567e3"}}).corpus.num_tokens == 12345678901234567000
    for bad in ("1.5e0", 1.5, "x", False):
        assert "config 'pack.seed': expected an integer" in _error({"pack": {"seed": bad}})


def test_a_string_field_that_looks_like_a_number_stays_a_string(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("run_name: 1e3\npack:\n  contexts:\n    - {name: 2e5, seq_len: 64}\n")
    cfg = load_config_file(path)
    assert cfg.run_name == "1e3" and cfg.pack.contexts[0].name == "2e5"


def test_numbers_as_numbers_lets_the_json_schema_agree_and_leaves_strings_alone():
    raw = {"run_name": "1e3", "train": {"lr": "2e-5", "stage4": [{"context": "512", "steps": "1e1"}]}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(raw, config_schema())
    assert numbers_as_numbers(raw, load_config(raw)) is raw
    assert raw == {"run_name": "1e3", "train": {"lr": 2e-5, "stage4": [{"context": "512", "steps": 10}]}}
    jsonschema.validate(raw, config_schema())


def test_a_yaml_syntax_error_names_the_file_line_and_a_hint(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  lr: 2e-5\n\tlora_r: 8\n")
    with pytest.raises(ValueError) as info:
        load_config_file(path)
    message = str(info.value)
    assert message.startswith(f"{path}, line 3, column 1: ") and "a tab cannot indent YAML; use spaces" in message
    assert "Traceback" not in message and len(message.splitlines()) <= 2
    path.write_text("run_name: a: b\n")
    with pytest.raises(ValueError, match=r"line 1, column 12: mapping values are not allowed here \(a value holding"):
        load_config_file(path)


def test_the_check_command_prints_ok_or_the_problems_and_exits_2(tmp_path, capsys):
    good, bad, broken = tmp_path / "good.yaml", tmp_path / "bad.yaml", tmp_path / "broken.yaml"
    good.write_text("train:\n  lr: 1e-5\n")
    bad.write_text("run_nmae: x\n")
    broken.write_text("pack:\n\tseed: 1\n")
    assert check_main([str(good)]) == 0 and capsys.readouterr().out == f"{good}: ok\n"
    assert check_main([str(good), str(bad), str(broken), str(tmp_path / "missing.yaml")]) == 2
    out, err = capsys.readouterr()
    assert out == f"{good}: ok\n"
    assert f"{bad}: 1 config problem\nconfig 'run_nmae': unknown key; did you mean 'run_name'?" in err
    assert f"{broken}, line 2, column 1" in err and "missing.yaml: cannot read it" in err
    assert check_main([str(good), "--set", "train.lr=abc"]) == 2
    assert "(with --set train.lr=abc)" in capsys.readouterr().err
