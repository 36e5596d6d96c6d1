"""The package's dependencies point down: no import cycle, no library module that imports a command.

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
# The commands: they sit at the top, and nothing below imports them.
COMMANDS = {"fastpggan.__main__", "fastpggan.training.cli", "fastpggan.generate", "fastpggan.metrics.cli"}


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


def imported(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The fastpggan modules that importing ``name`` imports directly (see the module docstring)."""
    package = name if is_package(name, modules) else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
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
    # loop imports fastpggan.metrics.reals, which first runs fastpggan.metrics' __init__
    assert {"fastpggan.metrics.reals", "fastpggan.metrics"} <= graph["fastpggan.training.loop"]


def test_function_level_and_relative_imports_count(tmp_path) -> None:
    path = tmp_path / "m.py"
    path.write_text("def f():\n    from fastpggan.sampling import sample\n    from . import loop\n")
    deps = imported("fastpggan.training.m", path, {**module_names(), "fastpggan.training.m": path})
    assert deps == {"fastpggan.sampling", "fastpggan.training.loop"}


def test_no_import_cycle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_library_module_imports_a_command() -> None:
    graph = import_graph()
    assert COMMANDS <= graph.keys()
    wrong = {name: sorted(deps & COMMANDS) for name, deps in graph.items()
             if name not in COMMANDS and deps & COMMANDS}
    assert wrong == {}
    # The commands share their pieces through modules below them, not through each other.
    assert {name: sorted(graph[name] & COMMANDS) for name in COMMANDS - {"fastpggan.__main__"}} == {
        name: [] for name in COMMANDS - {"fastpggan.__main__"}
    }


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
