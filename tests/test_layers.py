"""Imports inside ``udaseg`` run one way, down the layers of docs/architecture.md §1:

    core (udaseg, errors, registry, dist) → data → models → methods → config → report → engine
    → app (bench, demo, cli, __main__)

A module may import its own layer and the layers below it, never one above — at the top of the
file or inside a function (a function-local import keeps ``udaseg --help`` fast; it does not
excuse an upward import). Among the top-level imports there is no cycle. Every import statement
is read with ``ast``; nothing is imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "udaseg"

LAYERS = [
    ("core", ("udaseg", "udaseg.errors", "udaseg.registry", "udaseg.dist")),
    ("data", ("udaseg.data",)),
    ("models", ("udaseg.models",)),
    ("methods", ("udaseg.methods",)),
    ("config", ("udaseg.config",)),
    ("report", ("udaseg.report",)),
    ("engine", ("udaseg.engine",)),
    ("app", ("udaseg.bench", "udaseg.demo", "udaseg.cli", "udaseg.__main__")),
]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer_of(module: str) -> int:
    """The index in LAYERS of the longest prefix naming ``module`` (``udaseg`` alone: the package)."""
    best, best_len = None, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            exact = prefix == "udaseg"
            if (module == prefix or (not exact and module.startswith(prefix + "."))) and len(prefix) > best_len:
                best, best_len = index, len(prefix)
    if best is None:
        raise KeyError(f"{module} is in no layer: add it to LAYERS in tests/test_layers.py "
                       "and to docs/architecture.md")
    return best


def _imports(module: str, path: Path) -> list[tuple[str, int, bool]]:
    """``(target module, line, top_level)`` of every udaseg import in ``path``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    top_level = {id(node) for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[:len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            # ``from udaseg.engine import dist``: the submodule when there is one, else the module.
            targets = [f"{source}.{alias.name}" if f"{source}.{alias.name}" in MODULES else source
                       for alias in node.names]
        else:
            continue
        for target in targets:
            if target == "udaseg" or target.startswith("udaseg."):
                found.append((target, node.lineno, id(node) in top_level))
    return found


IMPORTS = {module: _imports(module, path) for module, path in MODULES.items()}


def test_every_module_has_a_layer():
    for module in MODULES:
        layer_of(module)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_go_down(module):
    own = layer_of(module)
    upward = [f"{MODULES[module].relative_to(PACKAGE.parent)}:{line} imports {target} "
              f"({LAYERS[layer_of(target)][0]} is above {LAYERS[own][0]})"
              for target, line, _ in IMPORTS[module] if layer_of(target) > own]
    assert not upward, "\n".join(upward)


def test_no_import_cycle():
    """No cycle among module-level imports (Tarjan's strongly connected components)."""
    graph = {m: sorted({t for t, _, top in IMPORTS[m] if top and t in MODULES and t != m}) for m in MODULES}
    index, low, stack, on_stack, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    assert not cycles, "import cycles: " + "; ".join(" ↔ ".join(c) for c in cycles)


def test_the_check_sees_upward_and_local_imports(tmp_path):
    """The reader catches a function-local upward import (so the checks above can fail)."""
    path = tmp_path / "fake.py"
    path.write_text("from udaseg.errors import ConfigError\n\ndef f():\n    from udaseg.engine import trainer\n")
    found = _imports("udaseg.models.fake", path)
    assert ("udaseg.errors", 1, True) in found and ("udaseg.engine.trainer", 4, False) in found
    assert layer_of("udaseg.engine.trainer") > layer_of("udaseg.models.fake")
