"""The package's layers: each subpackage imports only the layers below it, and no module
imports itself back through a cycle (docs/architecture.md draws the same picture).

Read from the source with `ast`, so a lazy import inside a function counts as much
as one at the top of a module; imports only for type checking count too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "chatproxy"

# The top-level modules every part uses; `chatproxy/__init__.py` (the app
# factory) wires everything together and may import anything.
FOUNDATION = "foundation"
# What each layer may import besides itself.
ALLOWED = {
    FOUNDATION: {FOUNDATION},
    "upstream": {FOUNDATION},
    "store": {FOUNDATION},
    "simulator": {FOUNDATION},
    "access": {"store", FOUNDATION},
    "web": {"access", "store", "upstream", FOUNDATION},
    "cli": {"access", "store", "upstream", FOUNDATION},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> str | None:
    """The layer of a chatproxy module; None for the app factory (`chatproxy`) itself."""
    parts = module.split(".")
    if parts == ["chatproxy"]:
        return None
    if (PACKAGE / parts[1]).is_dir():
        return parts[1]
    return FOUNDATION


def imports_of(path: Path) -> set[str]:
    """The chatproxy modules `path` imports, anywhere in it (`from chatproxy.x import y`
    counts `chatproxy.x.y` when that is a module, else `chatproxy.x`)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("chatproxy"))
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("chatproxy"):
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                found.add(candidate if candidate in MODULES else str(node.module))
    return found


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}
GRAPH = {module: imports_of(path) - {module} for module, path in MODULES.items()}


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_module_imports_only_from_lower_layers(module):
    layer = layer_of(module)
    if layer is None:
        return  # the app factory
    wrong = {
        imported for imported in GRAPH[module] if layer_of(imported) not in ALLOWED[layer] | {layer}
    }
    assert not wrong, f"{module} ({layer}) imports {sorted(wrong)}"


def test_no_import_cycles():
    def cycle_from(start: str) -> list[str] | None:
        stack = [(start, [start])]
        seen = set()
        while stack:
            module, path = stack.pop()
            for imported in GRAPH.get(module, ()):
                if imported == start:
                    return [*path, start]
                if imported not in seen and imported in GRAPH:
                    seen.add(imported)
                    stack.append((imported, [*path, imported]))
        return None

    cycles = {" -> ".join(found) for module in GRAPH if (found := cycle_from(module))}
    assert not cycles, "import cycles:\n" + "\n".join(sorted(cycles))


def test_the_layers_are_folders():
    """Every layer but the foundation is a subpackage, so `ls chatproxy` shows the architecture."""
    folders = {path.name for path in PACKAGE.iterdir() if (path / "__init__.py").exists()}
    assert folders == set(ALLOWED) - {FOUNDATION}
