"""The import rules that keep data flowing one way (config -> client -> poller -> snapshot
-> metrics -> exposition -> http; the user stream beside the poller, talking to it through
callbacks), checked on the source and in fresh interpreters."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "exporter"
PRODUCT = sorted(path.stem for path in PACKAGE.glob("*.py") if path.stem != "__main__")

# module -> modules (of this package, or third-party roots) it must never import
FORBIDDEN = {
    "snapshot": {"client", "poller", "websockets", "simulator"},
    "state": {"client", "poller", "websockets", "simulator"},
    "metrics": {"client", "poller", "websockets", "simulator", "http"},
    "exposition": {"client", "poller", "websockets", "simulator", "http"},
    "http": {"client", "poller", "websockets", "simulator", "yamlfile", "yaml"},
    "messages": {"client", "poller", "websockets", "yaml", "config"},
    "fields": {"client", "poller", "snapshot", "metrics", "websockets"},
    "clock": {"client", "poller", "websockets"},
    "streamevents": {"client", "poller", "userstream", "websockets", "simulator"},
    "userstream": {"poller", "simulator", "metrics", "exposition", "http"},
}


def imports_of(module: str) -> set[str]:
    """Every module ``exporter/<module>.py`` imports, at any depth of its code.

    Names are reduced to this package's module (``exporter.x`` -> ``x``) or
    a third-party root (``websockets.asyncio`` -> ``websockets``).
    """
    tree = ast.parse((PACKAGE / f"{module}.py").read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
            if node.module == "exporter":
                names = [f"exporter.{alias.name}" for alias in node.names]
        for name in names:
            parts = name.split(".")
            found.add(parts[1] if parts[0] == "exporter" and len(parts) > 1 else parts[0])
    return found


@pytest.mark.parametrize("module", sorted(FORBIDDEN))
def test_no_arrow_runs_backwards(module: str) -> None:
    assert not imports_of(module) & FORBIDDEN[module]


@pytest.mark.parametrize("module", PRODUCT)
def test_only_the_demo_entry_imports_the_simulator(module: str) -> None:
    if "simulator" not in imports_of(module):
        return
    assert module == "cli", f"exporter/{module}.py imports the simulator"
    source = (PACKAGE / "cli.py").read_text(encoding="utf-8")
    tree = ast.parse(source)
    top_level = {alias.name for node in tree.body if isinstance(node, ast.ImportFrom)
                 and node.module and node.module.startswith("exporter.simulator")
                 for alias in node.names}
    assert not top_level, "cli.py may import the simulator only inside --demo's code path"


@pytest.mark.parametrize("module", PRODUCT)
def test_every_module_declares_its_api(module: str) -> None:
    tree = ast.parse((PACKAGE / f"{module}.py").read_text(encoding="utf-8"))
    declared = [node for node in tree.body if isinstance(node, ast.Assign)
                and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets)]
    if module != "__init__":
        assert declared, f"exporter/{module}.py has no __all__"


@pytest.mark.parametrize(("module", "absent"), [
    ("exporter.http", "websockets"),
    ("exporter.exposition", "websockets"),
    ("exporter.app", "exporter.simulator"),
    ("exporter.cli", "exporter.simulator"),
])
def test_loading_a_module_does_not_load_what_it_must_not_need(module: str, absent: str) -> None:
    code = f"import sys, {module}; print({absent!r} in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "False"


TESTS = Path(__file__).resolve().parent


@pytest.mark.parametrize("path", sorted(TESTS.glob("test_*.py")), ids=lambda path: path.name)
def test_no_test_module_imports_another(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    imported = {node.module for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom) and node.module}
    others = {name for name in imported if name.startswith("tests.")
              and not name.startswith("tests.support")}
    assert not others, f"{path.name} imports {others}: shared helpers live in tests/support"
