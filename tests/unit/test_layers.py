"""The package's shape, checked from its source: no import cycles (guarded by
``TYPE_CHECKING`` or not), the pure layers free of the network side, small modules, and
only entry points and wiring at the top of ``proxy/``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "proxy"

# The pure core, and the state machines and rules it sits on: decisions without sockets.
PURE = (
    "proxy.chain",
    "proxy.upstreams.breaker",
    "proxy.upstreams.budget",
    "proxy.upstreams.quota",
    "proxy.upstreams.guard",
    "proxy.upstreams.events",
    "proxy.upstreams.drills",
    "proxy.cache.rules",
    "proxy.cache.freshness",
    "proxy.cache.store",
    "proxy.buffer.rules",
)
TOP_LEVEL_MAX = 8
MODULE_MAX_LINES = 400


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Every ``proxy`` module this one imports, wherever the import statement stands."""
    found: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        found.update(target for target in targets if target in known and target != name)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    graph = {name: _imports(name, path, known) for name, path in modules.items()}
    # A package's __init__ is imported with any of its modules: no edge to itself.
    return {
        name: {dep for dep in deps if not name.startswith(dep + ".")}
        for name, deps in graph.items()
    }


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                return [*stack[stack.index(dep) :], dep]
            if dep not in state and (found := visit(dep)) is not None:
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)) is not None:
            return found
    return None


def test_no_import_cycle_guarded_or_not() -> None:
    cycle = _cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_finder_finds_a_guarded_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
    assert _cycle(graph) == ["a", "b", "c", "a"]


def test_the_import_scan_sees_imports_under_type_checking(tmp_path: Path) -> None:
    source = tmp_path / "mod.py"
    source.write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from proxy.x import Y\n"
    )
    assert _imports("proxy.mod", source, {"proxy.x", "proxy.mod"}) == {"proxy.x"}


@pytest.mark.parametrize("pure", PURE)
def test_pure_layers_import_nothing_of_the_network_side(pure: str) -> None:
    modules = _modules()
    for name, path in modules.items():
        if name != pure and not name.startswith(pure + "."):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                imported = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            for target in imported:
                assert not target.startswith(("aiohttp.web", "aiohttp.client")), (name, target)
                assert target not in ("aiohttp", "socket", "asyncio.streams"), (name, target)


def test_only_entry_points_and_wiring_at_the_top() -> None:
    top = sorted(path.name for path in PACKAGE.glob("*.py"))
    assert len(top) <= TOP_LEVEL_MAX, top


def test_no_module_over_the_size_limit() -> None:
    long = {
        name: lines
        for name, path in _modules().items()
        if (lines := len(path.read_text().splitlines())) > MODULE_MAX_LINES
    }
    assert not long, long


def test_every_subpackage_states_its_job_and_its_imports() -> None:
    for init in PACKAGE.glob("*/__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert len(doc.splitlines()) >= 3, init
        assert "import" in doc.lower(), f"{init}: say what the package may import"
