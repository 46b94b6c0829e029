"""The README's tour and tree name files that exist (tours drift; this keeps ours honest)."""

from __future__ import annotations

import re

from tests.conftest import REPO

GENERATED = ("results/", "logs/", "benchmarks/<", "resources/", "data/", "path/", "SlimPajama", "../shared", ".venv",
             "checkpoints/", "Efficient-Large-Model/",
             "llm/", "vision_tower/", "mm_projector/", "layers.", "merges.txt")   # inside a checkpoint folder


def named_paths(text: str) -> set[str]:
    # a lone `name/` in prose is a folder kind (a checkpoint's `llm/`), not a repository path
    names = {n for n in re.findall(r"`([\w./<>*-]+)`", text) if not (n.endswith("/") and n.count("/") == 1)}
    tree = text[text.index("## Layout"):]
    tree = tree[tree.index("```") + 3:]
    names |= {line.split()[0] for line in tree[: tree.index("```")].splitlines() if line.strip()}
    return {n.rstrip("/") for n in names
            if ("/" in n or n.endswith((".py", ".yaml", ".md", ".smk", ".toml", ".txt")) or n in ("Snakefile", "Makefile"))
            and not n.startswith(GENERATED) and "*" not in n and "<" not in n and not n.startswith("python")}


def test_every_path_in_the_readme_exists():
    names = named_paths((REPO / "README.md").read_text())
    assert len(names) > 15
    missing = sorted(n for n in names if not (REPO / n).exists())
    assert not missing, f"README names paths that do not exist: {missing}"


def test_readme_has_the_two_commands_and_every_rule():
    text = (REPO / "README.md").read_text()
    assert "make demo" in text and "make test" in text
    rules = re.findall(r"^rule (\w+):", "".join(p.read_text() for p in (REPO / "workflow/rules").glob("*.smk")), re.M)
    assert rules and all(f"`{r}`" in text for r in rules)
