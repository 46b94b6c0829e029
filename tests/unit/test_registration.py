"""`import longvila` registers llava_llama with the Auto classes, without importing torch for data tools."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO


def run(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True,
                          timeout=300).stdout.strip()


def test_import_longvila_then_transformers_registers():
    out = run("import longvila\nfrom transformers import AutoConfig, AutoModel\n"
              "from longvila.model import LongVILAConfig, LongVILAForCausalLM\n"
              "print(AutoConfig.for_model('llava_llama').__class__ is LongVILAConfig,"
              " AutoModel._model_mapping[LongVILAConfig] is LongVILAForCausalLM)")
    assert out == "True True"


def test_transformers_first_then_longvila_registers():
    out = run("import transformers\nimport longvila\nfrom transformers import AutoConfig\n"
              "print(type(AutoConfig.for_model('llava_llama')).__name__)")
    assert out == "LongVILAConfig"


def test_data_tools_do_not_import_torch():
    out = run("import sys, longvila.config, longvila.data.shards, longvila.cli\n"
              "print('torch' in sys.modules, 'transformers' in sys.modules)")
    assert out == "False False"


def test_reload_does_not_stack_import_hooks():
    out = run("import importlib, sys, longvila\nimportlib.reload(longvila); importlib.reload(longvila)\n"
              "print(sum(type(f).__name__ == '_AfterTransformersImport' for f in sys.meta_path))\n"
              "import transformers\n"
              "print(sum(type(f).__name__ == '_AfterTransformersImport' for f in sys.meta_path))")
    assert out.split() == ["1", "0"]
