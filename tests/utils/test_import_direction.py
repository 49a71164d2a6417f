"""Package layering: models never import rl, and eval depends on tasks, never the reverse (issue 14)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import rlhfkit

PACKAGE = Path(rlhfkit.__file__).parent


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at any depth (function bodies and TYPE_CHECKING blocks too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def offending(package: str, forbidden: str) -> dict[str, list[str]]:
    """Files of ``rlhfkit.<package>`` that import ``rlhfkit.<forbidden>`` or one of its submodules."""
    prefix = f"rlhfkit.{forbidden}"
    out = {}
    for path in sorted((PACKAGE / package).rglob("*.py")):
        bad = sorted(m for m in imported_modules(path) if m == prefix or m.startswith(prefix + "."))
        if bad:
            out[str(path.relative_to(PACKAGE))] = bad
    return out


def test_imported_modules_by_hand(tmp_path) -> None:
    source = tmp_path / "m.py"
    source.write_text("import a.b\nfrom c import d\nfrom . import e\ndef f():\n    from g.h import i\n")
    assert imported_modules(source) == {"a.b", "c", "c.d", "g.h", "g.h.i"}


@pytest.mark.parametrize("package,forbidden", [("models", "rl"), ("tasks", "eval")])
def test_lower_layer_does_not_import_upper_layer(package, forbidden) -> None:
    assert offending(package, forbidden) == {}
