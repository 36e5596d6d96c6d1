"""The package's dependencies point down: every module sits in one layer, and imports only its
own layer and the layers below; there is no import cycle.

The import graph is read from the source (every ``import``, module-level or inside a function),
so a cycle hidden behind a function-level import counts too. Importing ``a.b.c`` first runs the
``__init__`` of ``a`` and ``a.b``, so an import also depends on those packages, except the ones
the importing module itself lives in (Python has started them already).
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "fastpggan"
# The top-level kernels/ folder is installed as fastpggan.kernels (pyproject.toml's package-dir).
KERNELS = ROOT / "kernels"
# The layers, bottom first. An entry names a module, or a package and every module in it. The
# root package ``fastpggan`` re-exports the model (and ``fastpggan.kernels``, which the kernels'
# importers reach through it, is installed from the top-level kernels/ folder).
LAYERS: list[tuple[str, set[str]]] = [
    ("base", {"fastpggan.atomic", "fastpggan.console", "fastpggan.errors", "fastpggan.ranges",
              "fastpggan._kernels_path"}),
    ("model", {"fastpggan", "fastpggan.layers", "fastpggan.networks", "fastpggan.loss", "fastpggan.ops",
               "fastpggan.augment",
               "fastpggan.kernels"}),
    ("data and measures", {"fastpggan.data", "fastpggan.metrics", "fastpggan.sampling"}),
    ("training", {"fastpggan.training"}),
    ("commands", {"fastpggan.commands", "fastpggan.__main__"}),
]
COMMANDS = "fastpggan.commands"


def layer_of(name: str) -> list[int]:
    """The layers (their indices in :data:`LAYERS`) whose entries hold module ``name``: the most
    specific entry decides (the root package holds only itself)."""
    best, found = -1, []
    for i, (_, entries) in enumerate(LAYERS):
        for entry in entries:
            if name == entry or (entry != "fastpggan" and name.startswith(entry + ".")):
                if len(entry) > best:
                    best, found = len(entry), [i]
                elif len(entry) == best:
                    found.append(i)
    return found


def module_names() -> dict[str, Path]:
    """``fastpggan.x.y`` -> its file, for every module of the package (kernels/ included)."""
    names = {}
    for folder, prefix in ((PACKAGE, ["fastpggan"]), (KERNELS, ["fastpggan", "kernels"])):
        for path in sorted(folder.rglob("*.py")):
            parts = prefix + list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            names[".".join(parts)] = path
    return names


def is_package(name: str, modules: dict[str, Path]) -> bool:
    return modules[name].name == "__init__.py"


def _typing_only(node: ast.AST) -> bool:
    """``if TYPE_CHECKING:`` (or ``typing.TYPE_CHECKING``): never runs, so imports no module."""
    if not isinstance(node, ast.If):
        return False
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node of ``tree`` except the bodies of ``if TYPE_CHECKING:`` blocks (their
    ``else`` branches run and count)."""
    nodes, todo = [], [tree]
    while todo:
        node = todo.pop()
        nodes.append(node)
        children = node.orelse if _typing_only(node) else list(ast.iter_child_nodes(node))
        todo.extend(children)
    return nodes


def imported(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The fastpggan modules that importing ``name`` imports directly (see the module docstring)."""
    package = name if is_package(name, modules) else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:  # `from a import b` imports the module a.b when there is one
                targets.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    deps: set[str] = set()
    for target in targets:
        while target and target not in modules:  # fastpggan.kernels.x etc.: the nearest known module
            target = target.rpartition(".")[0]
        parts = target.split(".")
        for i in range(1, len(parts) + 1):
            prefix = ".".join(parts[:i])
            inside = name == prefix or name.startswith(prefix + ".")
            if prefix in modules and not (inside and prefix != target):
                deps.add(prefix)
    deps.discard(name)
    return deps


def import_graph() -> dict[str, set[str]]:
    modules = module_names()
    return {name: imported(name, path, modules) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a list of nodes (first == last), or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return path[path.index(dep):] + [dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_finds_one() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_the_graph_sees_package_imports() -> None:
    graph = import_graph()
    assert "fastpggan.training.loop" in graph["fastpggan.training"]  # __init__ re-exports
    # metric_points imports fastpggan.metrics.reals, which first runs fastpggan.metrics' __init__
    assert {"fastpggan.metrics.reals", "fastpggan.metrics"} <= graph["fastpggan.training.metric_points"]


def test_function_level_and_relative_imports_count(tmp_path) -> None:
    path = tmp_path / "m.py"
    path.write_text("def f():\n    from fastpggan.sampling import sample\n    from . import loop\n")
    deps = imported("fastpggan.training.m", path, {**module_names(), "fastpggan.training.m": path})
    assert deps == {"fastpggan.sampling", "fastpggan.training.loop"}


def test_typing_only_imports_do_not_count(tmp_path) -> None:
    # `if TYPE_CHECKING:` never runs: an annotation may name a module above or beside it;
    # its else branch runs, and counts.
    path = tmp_path / "m.py"
    path.write_text("import typing\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                    "    from fastpggan.training.loop import Trainer\nelse:\n"
                    "    from fastpggan import sampling\nif typing.TYPE_CHECKING:\n"
                    "    import fastpggan.commands\n")
    deps = imported("fastpggan.training.m", path, {**module_names(), "fastpggan.training.m": path})
    assert deps == {"fastpggan.sampling"}


def test_no_import_cycle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_every_module_has_one_layer() -> None:
    assert {name: layer_of(name) for name in module_names() if len(layer_of(name)) != 1} == {}
    assert layer_of("fastpggan.training.new_module") == [3] and layer_of("fastpggan.new_module") == []


def test_imports_point_down() -> None:
    graph = import_graph()
    names = [name for name, _ in LAYERS]
    up = {f"{name} ({names[layer_of(name)[0]]})": [f"{d} ({names[layer_of(d)[0]]})" for d in sorted(deps)
                                                  if layer_of(d)[0] > layer_of(name)[0]]
          for name, deps in graph.items()}
    assert {k: v for k, v in up.items() if v} == {}


def test_commands_share_pieces_not_each_other() -> None:
    graph = import_graph()
    commands = {f"{COMMANDS}.{c}" for c in ("train", "generate", "evaluate", "export")}
    assert commands <= graph.keys()
    assert {name: sorted(graph[name] & commands) for name in commands} == {name: [] for name in commands}


def test_each_module_imports_alone() -> None:
    """Each module imported first, in a fresh copy of the package (torch stays loaded: it is
    slow to import and not under test)."""
    script = (
        "import importlib, sys, traceback\n"
        "failed = []\n"
        "for name in sys.argv[1:]:\n"
        "    for m in [m for m in sys.modules if m == 'fastpggan' or m.startswith('fastpggan.')]:\n"
        "        del sys.modules[m]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception:\n"
        "        failed.append(name + ': ' + traceback.format_exc().strip().splitlines()[-1])\n"
        "print('\\n'.join(failed))\n"
        "sys.exit(1 if failed else 0)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    names = [n for n in module_names() if n != "fastpggan.__main__"] + ["fastpggan.__main__"]
    r = subprocess.run([sys.executable, "-c", "import torch\n" + script, *names], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr[-2000:]
