"""The three rings, as the tree shows them: the core (every module outside the sub-packages below)
imports nothing from ``scale``, ``experiments`` or ``cli``; ``scale`` never imports ``experiments``
or ``cli``; ``experiments`` never imports ``cli``. Every import counts, also one inside a function."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "influencekit"
RINGS = {"core": 0, "scale": 1, "experiments": 2, "cli": 3}
#: what each ring may not import
FORBIDDEN = {"core": {"scale", "experiments", "cli"}, "scale": {"experiments", "cli"}, "experiments": {"cli"},
             "cli": set()}


def ring(module: str) -> str:
    """'influencekit.scale.pool' -> 'scale'; the entry module __main__ belongs to the command line."""
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in RINGS:
        return parts[1]
    return "cli" if parts[1:] == ["__main__"] else "core"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[int, str]]:
    """Every influencekit module that ``path`` imports, resolved to an absolute name, with its line."""
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # `from . import storage` imports the module influencekit.storage
            out += [(node.lineno, f"{target}.{a.name}") for a in node.names] if not node.module else []
            out.append((node.lineno, target))
    return [(line, name) for line, name in out if name.split(".")[0] == "influencekit"]


SOURCES = sorted(PACKAGE.rglob("*.py"))


def test_the_tree_has_the_three_rings_and_a_command_line():
    assert {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()} >= \
        {"scale", "experiments", "cli", "solvers"}


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_imports_a_ring_above_its_own(path: Path):
    mine = ring(module_name(path))
    bad = [f"line {line}: {name}" for line, name in imports(path) if ring(name) in FORBIDDEN[mine]]
    assert not bad, f"{path.relative_to(PACKAGE)} ({mine}) imports above its ring: {bad}"
