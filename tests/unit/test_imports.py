"""The package's import structure: no circle between files, and the layers import one way.

Every `import` / `from ... import` statement counts, also the ones inside functions (a function-level import
hides a loop from Python, not from a reader). Edges are between files: `from longvila.parallel import X`
counts as importing `longvila/parallel/__init__.py`, `from longvila.parallel.dims import X` as importing
`longvila/parallel/dims.py` (and X itself when X is a module).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("longvila", "pipeline")


def _modules() -> dict[str, tuple[Path, bool]]:
    """module name -> (file, is a package's __init__)."""
    mods = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            is_pkg = parts[-1] == "__init__"
            mods[".".join(parts[:-1] if is_pkg else parts)] = (path, is_pkg)
    return mods


def _resolve(name: str, mods) -> str | None:
    parts = name.split(".")
    while parts:
        if ".".join(parts) in mods:
            return ".".join(parts)
        parts.pop()
    return None


def import_graph() -> dict[str, set[str]]:
    """module -> the modules of ours it imports anywhere in its file."""
    mods, graph = _modules(), {}
    for name, (path, is_pkg) in mods.items():
        here = name if is_pkg else name.rpartition(".")[0]
        graph[name] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = here.split(".")[: len(here.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            for target in targets:
                if target.split(".")[0] in PACKAGES and (dep := _resolve(target, mods)) not in (None, name):
                    graph[name].add(dep)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _edges(graph, src_prefix: str, dst_prefix: str) -> list[str]:
    return sorted(f"{a} -> {b}" for a, deps in graph.items() if a == src_prefix or a.startswith(src_prefix + ".")
                  for b in deps if b == dst_prefix or b.startswith(dst_prefix + "."))


def test_no_import_circle_between_files():
    circles = cycles(import_graph())
    assert not circles, "import circles (function-level imports included): " + "; ".join(
        " <-> ".join(c) for c in circles)


def test_the_library_never_imports_the_pipeline():
    assert not _edges(import_graph(), "longvila", "pipeline")


def test_the_model_stays_single_process():
    """model/ is pure: parallelism enters through apply_* functions in parallel/, never from inside the model."""
    assert not _edges(import_graph(), "longvila.model", "longvila.parallel")


# What each part of the library may import (the README's "Where things live" map says the same); the
# `longvila` package itself (its __init__: the Auto-class registration) may be imported by any part.
MAY_IMPORT = {
    "utils": set(),
    "shapes": set(),
    "config": set(),
    "parallel": {"utils"},
    "model": {"shapes", "utils"},
    "data": {"config", "model", "utils"},
    "infer": {"data", "model", "parallel", "utils"},
    "plan": {"config", "parallel", "shapes", "utils"},
    "train": {"config", "data", "model", "parallel", "utils"},
    "eval": {"data", "infer", "model", "parallel", "utils"},
    "cli_checks": {"parallel", "utils"},
    "cli": {"cli_checks", "config", "data", "eval", "infer", "model", "parallel", "plan", "shapes", "train", "utils"},
}


def _part(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "longvila" and len(parts) > 1 else None


def test_each_part_of_the_library_imports_only_what_the_map_allows():
    graph = import_graph()
    parts = {p for m in graph if (p := _part(m))}
    assert parts == set(MAY_IMPORT), f"new or removed parts: add them to MAY_IMPORT and the README map ({parts})"
    wrong = sorted(f"{a} -> {b}" for a, deps in graph.items() for b in deps
                   if _part(a) and _part(b) and _part(a) != _part(b) and _part(b) not in MAY_IMPORT[_part(a)])
    assert not wrong, "imports outside the map: " + "; ".join(wrong)


def test_the_walk_sees_function_level_imports(tmp_path, monkeypatch):
    """The checker itself: a loop closed only by an import inside a function is found."""
    pkg = tmp_path / "longvila"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from longvila.b import g\n")
    (pkg / "b.py").write_text("def g():\n    from longvila import a\n")
    (tmp_path / "pipeline").mkdir()
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    assert cycles(import_graph()) == [["longvila.a", "longvila.b"]]
