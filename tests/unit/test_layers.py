"""The package's import graph has no upward arrow, and the host layers name no technique.

Layers, bottom to top: errors and files (crash-safe writes); config; the shared technique layer
(models, surgery, accounting, the `Technique` protocol); the technique folders (pld, curriculum,
random_ltd), which never import each other; adopt (the only place that lists them, in `adopt/compose.py`); trainer, compare and demo; the
command line and the package root. Every import, including those inside functions, is read from
the source with `ast`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).parents[2] / "src" / "leantrain"

#: Layer of each top-level part of the package (a module may import its own layer or below).
LAYERS = {
    "errors": 0,
    "files": 0,
    "version": 0,
    "config": 1,
    "models": 2,
    "surgery": 2,
    "accounting": 2,
    "technique": 3,
    "pld": 4,
    "curriculum": 4,
    "random_ltd": 4,
    "adopt": 5,
    "trainer": 6,
    "compare": 6,
    "demo": 6,
    "cli": 7,
    "__init__": 7,
    "__main__": 7,
}
TECHNIQUE_FOLDERS = {"pld", "curriculum", "random_ltd"}
#: Modules of the host layers that must not know any technique, and the one that lists them.
HOSTS = ("adopt", "trainer", "compare", "config/check.py")
THE_LIST = "adopt/compose.py"
#: Words that give a technique away in code (names, config keys), outside docstrings.
TECHNIQUE_WORDS = (
    "pld",
    "random_ltd",
    "progressive_layer_drop",
    "curriculum_learning",
    "curriculum_metrics",
    "seqlen_",
)


def _modules() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py"))


def _part(path: Path) -> str:
    """The top-level part of the package a file belongs to."""
    rel = path.relative_to(SRC)
    return rel.parts[0].removesuffix(".py")


def _imports(path: Path) -> set[str]:
    """Top-level parts of leantrain that `path` imports (anywhere in the file)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
            if node.module == "leantrain":
                names = [f"leantrain.{a.name}" for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "leantrain":
                found.add(parts[1] if len(parts) > 1 else "__init__")
    return found


def _is_host(path: Path) -> bool:
    rel = path.relative_to(SRC).as_posix()
    return any(rel == h or rel.startswith(h + "/") for h in HOSTS) and rel != THE_LIST


def _code_strings(tree: ast.AST) -> list[str]:
    """String constants that are not docstrings."""
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                docstrings.add(id(body[0].value))
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
    ]


def test_every_part_has_a_layer() -> None:
    assert {_part(p) for p in _modules()} <= set(LAYERS)


@pytest.mark.parametrize("path", _modules(), ids=lambda p: p.relative_to(SRC).as_posix())
def test_no_import_runs_up_a_layer(path: Path) -> None:
    part = _part(path)
    for imported in _imports(path):
        assert LAYERS[imported] <= LAYERS[part], f"{part} imports {imported}, a higher layer"
        if part in TECHNIQUE_FOLDERS and imported in TECHNIQUE_FOLDERS:
            assert imported == part, f"technique {part} imports technique {imported}"


@pytest.mark.parametrize(
    "path", [p for p in _modules() if _is_host(p)], ids=lambda p: p.relative_to(SRC).as_posix()
)
def test_hosts_name_no_technique(path: Path) -> None:
    """Only the list in adopt/compose.py knows the techniques; the handle, `prepare`, the HF
    callback, the trainer, `leantrain compare` and `config check` loop over it."""
    assert not _imports(path) & TECHNIQUE_FOLDERS
    tree = ast.parse(path.read_text(encoding="utf-8"))
    named = [s for s in _code_strings(tree) if any(w in s for w in TECHNIQUE_WORDS)]
    assert not named, f"technique names in code: {named}"
