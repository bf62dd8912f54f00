"""The package's shape: imports run downward only, no import circles, no hidden (function-local) cadx imports,
and the command line is the only face (nothing imports it; no argparse / sys.argv parsing elsewhere)."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "cadx"

# Layers from the bottom up: a module may import its own layer and the layers below it, never one above.
LAYERS: list[set[str]] = [
    {"cadx", "cadx.errors", "cadx.utils"},
    {"cadx.registry", "cadx.config"},
    {"cadx.data"},
    {"cadx.evaluation", "cadx.classical", "cadx.pipeline", "cadx.dicom"},
    {"cadx.models", "cadx.objectives"},
    {"cadx.training", "cadx.explain"},
    {"cadx.report"},
    {"cadx.runs"},
    {"cadx.studies"},
    {"cadx.serve"},
    {"cadx.cli"},
]


def _modules() -> dict[str, Path]:
    mods = {}
    for p in SRC.rglob("*.py"):
        parts = p.relative_to(SRC.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        mods[name] = p
    return mods


MODULES = _modules()


def _resolve(target: str) -> str:
    while target not in MODULES and "." in target:
        target = target.rsplit(".", 1)[0]
    return target


def _imports() -> list[tuple[str, str, bool, int]]:
    """``(importer, imported module, function-local?, line)`` for every cadx import in src/cadx."""
    rows = []
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("cadx") and not node.level:
                targets = [_resolve(f"{node.module}.{a.name}") for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [_resolve(a.name) for a in node.names if a.name.startswith("cadx")]
            else:
                continue
            for t in targets:
                if t != name:
                    rows.append((name, t, node.col_offset > 0, node.lineno))
    return rows


IMPORTS = _imports()


def _layer(module: str) -> int:
    parts = module.split(".")
    for i in range(len(parts), 0, -1):
        head = ".".join(parts[:i])
        for k, layer in enumerate(LAYERS):
            if head in layer:
                return k
    raise AssertionError(f"{module} is in no layer of tests/test_architecture.py: add its package to LAYERS")


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(MODULES):
        if v not in index:
            visit(v)
    return out


def test_cycle_finder_finds_a_planted_cycle() -> None:
    edges = {"cadx.a": {"cadx.b"}, "cadx.b": {"cadx.c"}, "cadx.c": {"cadx.a"}, "cadx.d": {"cadx.a"}}
    saved = dict(MODULES)
    MODULES.clear()
    MODULES.update({m: Path(m) for m in edges})
    try:
        assert _cycles(edges) == [["cadx.a", "cadx.b", "cadx.c"]]
        assert _cycles({"cadx.a": {"cadx.b"}, "cadx.b": set()}) == []
    finally:
        MODULES.clear()
        MODULES.update(saved)


def test_no_import_cycles() -> None:
    edges: dict[str, set[str]] = defaultdict(set)
    for a, b, _, _ in IMPORTS:
        # a package's __init__ re-exporting its own submodules is not a cycle of jobs
        if not b.startswith(a + "."):
            edges[a].add(b)
    assert _cycles(edges) == []


def test_imports_run_downward_only() -> None:
    upward = [f"{a}:{line} imports {b}" for a, b, _, line in IMPORTS if _layer(b) > _layer(a)]
    assert upward == []


def test_no_function_local_cadx_imports() -> None:
    """The library imports at the top only. The one exception is the CLI, which imports each command's library
    module when that command runs, so ``cadx --help`` and ``cadx study --help`` answer without loading torch."""
    hidden = [f"{a}:{line} imports {b} inside a function" for a, b, local, line in IMPORTS
              if local and a != "cadx.cli"]
    assert hidden == []


def test_function_local_imports_say_which_optional_dependency() -> None:
    """A function-local import is only for an optional or heavy dependency, and its line says so in a comment."""
    bare = []
    for name, path in MODULES.items():
        lines = path.read_text(encoding="utf-8").splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, ast.Import | ast.ImportFrom) and node.col_offset > 0:
                mod = node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
                if isinstance(node, ast.ImportFrom) and (node.level or (mod or "").startswith("cadx")):
                    continue  # covered by test_no_function_local_cadx_imports
                if "#" not in lines[node.lineno - 1]:
                    bare.append(f"{name}:{node.lineno} {mod}")
    assert bare == []


def test_nothing_imports_the_cli_and_only_the_cli_parses_arguments() -> None:
    assert [a for a, b, _, _ in IMPORTS if b == "cadx.cli"] == []
    faces = []
    for name, path in MODULES.items():
        if name == "cadx.cli":
            continue
        text = path.read_text(encoding="utf-8")
        for needle in ("import argparse", "sys.argv", 'if __name__ == "__main__"'):
            if needle in text:
                faces.append(f"{name}: {needle}")
    assert faces == []


@pytest.mark.parametrize(("module", "layer"), [("cadx.runs.cv", 7), ("cadx.pipeline.items", 3), ("cadx", 0)])
def test_layer_lookup(module: str, layer: int) -> None:
    assert _layer(module) == layer
