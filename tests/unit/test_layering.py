"""The pure cores import no I/O: sockets, asyncio, threads or netlink stay in adapters."""

from __future__ import annotations

import ast
from pathlib import Path

import vipcast.core

FORBIDDEN = {"socket", "asyncio", "select", "selectors", "threading", "pyroute2", "subprocess"}
CORE = Path(vipcast.core.__file__).parent


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_core_modules_import_no_io() -> None:
    modules = sorted(CORE.rglob("*.py"))
    assert modules
    for path in modules:
        bad = _imports(path) & FORBIDDEN
        assert not bad, f"{path.relative_to(CORE.parent)} imports {sorted(bad)}"
