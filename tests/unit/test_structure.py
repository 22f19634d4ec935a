"""The layers' import direction, and every module's ``__all__``."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import tidings

SRC = Path(tidings.__file__).parent

# protocol ← core ← brokers ← front ends: a layer imports only from layers before it.
LAYERS = ["protocol", "core", "brokers"]
SHARED = {"tidings.exceptions"}  # the exception tree may be imported from anywhere


def layer_of(module: str) -> int:
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in LAYERS:
        return LAYERS.index(parts[1])
    return len(LAYERS)  # a front end: app, server, api, cli, client, config, testing, bench


def module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> list[str]:
    """Every module ``path`` imports, at any depth (lazy imports in functions too)."""
    tree = ast.parse(path.read_text())
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                found.append(".".join([*base, node.module] if node.module else base))
            elif node.module:
                found.append(node.module)
    return [m for m in found if m.startswith("tidings")]


MODULES = sorted(SRC.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_imports_point_down_the_layers(path: Path) -> None:
    name = module_name(path)
    if name in SHARED or name == "tidings":
        return
    own = layer_of(name)
    wrong = [
        target
        for target in imports_of(path)
        if target not in SHARED and target != "tidings" and layer_of(target) > own
    ]
    assert not wrong, f"{name} (layer {own}) imports {wrong}"


def test_the_exception_tree_imports_nothing_of_tidings_at_run_time() -> None:
    tree = ast.parse((SRC / "exceptions.py").read_text())
    top = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
    assert all(getattr(n, "module", "") in ("__future__", "typing") for n in top)


def test_the_protocol_layer_does_not_import_the_http_client() -> None:
    code = (
        "import sys, tidings.protocol.http, tidings.protocol.centrifuge.codec, tidings.core.node;"
        "print('httpx' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    assert tidings.Publisher.__name__ == "Publisher"  # still there, imported on first use


def all_modules() -> list[str]:
    names = ["tidings"]
    for info in pkgutil.walk_packages(tidings.__path__, "tidings."):
        names.append(info.name)
    return sorted(names)


@pytest.mark.parametrize("name", all_modules())
def test_all_is_complete(name: str) -> None:
    """``__all__`` lists exactly the public names a module defines (classes, functions and
    upper-case constants defined in it, not imported)."""
    module = importlib.import_module(name)
    declared = getattr(module, "__all__", None)
    if name.endswith("__main__"):
        return
    assert declared is not None, f"{name} has no __all__"
    missing = [n for n in declared if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ names what it lacks: {missing}"
    path = Path(module.__file__ or "")
    if path.name == "__init__.py":
        return  # packages re-export; their names are checked above
    tree = ast.parse(path.read_text())
    defined = set()
    for node in tree.body:
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            defined.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            defined.update(t.id for t in targets if isinstance(t, ast.Name) and t.id.isupper())
    public = {n for n in defined if not n.startswith("_")}
    unlisted = sorted(public - set(declared))
    assert not unlisted, f"{name} defines public names missing from __all__: {unlisted}"
