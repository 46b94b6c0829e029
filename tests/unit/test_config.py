"""Config: the dataclasses, the strict loader, the generated JSON schema, and every shipped config."""

from __future__ import annotations

import jsonschema
import pytest
import yaml

from longvila.config import Config, PackConfig, apply_overrides, config_to_dict, load_config, load_config_file
from longvila.config.schema import config_schema, render
from tests.conftest import REPO

SHIPPED = [REPO / "config.yaml", REPO / "workflow" / "configs" / "paper.yaml", REPO / "tests" / "workflow" / "config.yaml"]


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(REPO)))
def test_shipped_configs_pass_both_validators(path):
    data = yaml.safe_load(path.read_text())
    jsonschema.validate(data, config_schema())
    cfg = load_config(data)
    assert cfg.pack.contexts
    # the resolved form round-trips through both validators too
    jsonschema.validate(config_to_dict(cfg), config_schema())
    assert load_config(config_to_dict(cfg)) == cfg


def test_paper_config_has_the_paper_numbers():
    cfg = load_config_file(REPO / "workflow" / "configs" / "paper.yaml")
    assert [(c.seq_len, c.max_rows) for c in cfg.pack.contexts] == [
        (65536, 3000), (262144, 3000), (524288, 3000), (1048576, 1880)]
    assert cfg.pack.upsample == "per_source" and cfg.pack.short_threshold == 4096 and cfg.pack.keep_ratio == 0.1


def test_checked_in_schema_is_generated_from_the_dataclasses():
    on_disk = (REPO / "workflow" / "schemas" / "config.schema.yaml").read_text()
    assert on_disk == render(), "regenerate: python -m longvila.config.schema > workflow/schemas/config.schema.yaml"


def test_unknown_key_names_the_key_and_the_valid_ones():
    with pytest.raises(ValueError, match=r"'pack.sed': unknown key; did you mean 'seed'\?\n"
                                         r"    valid keys under 'pack': contexts, upsample"):
        load_config({"pack": {"sed": 1}})
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"pack": {"sed": 1}}, config_schema())


@pytest.mark.parametrize("data, message", [
    ({"pack": {"upsample": "sometimes"}}, r"pack.upsample.*one of \('none', 'per_source', 'global'\)"),
    ({"pack": {"keep_ratio": 2}}, r"pack.keep_ratio.*\[0, 1\]"),
    ({"pack": {"seed": "x"}}, r"pack.seed.*expected an integer"),
    ({"pack": {"mix": {"RedPajamaNews": 1.0}}}, r"pack.mix.*unknown sources \['RedPajamaNews'\]"),
    ({"pack": {"upsample": "none", "contexts": [{"name": "a", "seq_len": 64, "max_rows": 5}]}},
     r"max_rows: null"),
    ({"pack": {"contexts": [{"name": "a b", "seq_len": 64}]}}, r"letters, digits"),
    ({"pack": {"contexts": [{"name": "a", "seq_len": 64}, {"name": "a", "seq_len": 128}]}}, r"unique"),
    ({"slimpajama": {"files_per_batch": 0}}, r"slimpajama.files_per_batch"),
    ({"corpus": {"passkey": {"depths": [1.5]}}}, r"corpus.passkey.depths"),
    ({"tokenizer": {"path": ""}}, r"tokenizer.path"),
])
def test_bad_values_name_the_key_and_the_fix(data, message):
    with pytest.raises(ValueError, match=message):
        load_config(data)


def test_overrides_are_yaml_typed():
    data = apply_overrides({}, ["pack.seed=7", "pack.strict=true", "slimpajama.max_files=null"])
    cfg = load_config(data)
    assert cfg.pack.seed == 7 and cfg.pack.strict is True and cfg.slimpajama.max_files is None
    with pytest.raises(ValueError, match="key.sub=value"):
        apply_overrides({}, ["pack.seed"])


def test_defaults_are_valid_and_documented():
    cfg = Config()
    assert PackConfig().mix and cfg.tokenizer.path == "builtin:qwen2"
    schema = config_schema()
    missing = [f"{sec}.{k}" for sec, body in schema["properties"].items() if body.get("type") == "object"
               for k, v in body.get("properties", {}).items() if not v.get("description")]
    assert not missing, f"fields without a docstring: {missing}"


def test_conda_env_has_what_the_data_rules_import():
    import tomllib

    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {d.split("=")[0].split(">")[0].split("<")[0].strip() for d in deps}
    env = yaml.safe_load((REPO / "envs" / "prep.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    in_env = {p.split("=")[0].split(">")[0].split("<")[0].strip() for p in pip}
    workflow_only = {"snakemake", "snakemake-executor-plugin-slurm", "submitit"}
    assert names - workflow_only <= in_env, f"add to envs/prep.yaml: {sorted(names - workflow_only - in_env)}"
