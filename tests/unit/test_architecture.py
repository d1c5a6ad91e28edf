"""The layout's import rules, read from the source (lazy imports inside functions included).

* library code never imports a recipe: only `saferlhf.cli` and `saferlhf.pipelines.*` import `saferlhf.recipes.*`;
* only `saferlhf.cli` imports `saferlhf.pipelines.*`;
* no import cycles between saferlhf modules (an edge per ``import`` / ``from ... import`` statement anywhere in a
  module, resolved to the module it names);
* heavy optional dependencies stay out of ``import saferlhf``.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "saferlhf"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in ROOT.rglob("*.py")}


def resolve(name: str) -> str | None:
    """The saferlhf module an import names (``saferlhf.data.validate``, or the package for a symbol)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str) -> set[str]:
    tree = ast.parse(MODULES[module].read_text())
    is_pkg = MODULES[module].name == "__init__.py"
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                pkg = module.split(".") if is_pkg else module.split(".")[:-1]
                base = ".".join(pkg[: len(pkg) - node.level + 1] + ([base] if base else []))
            # ``from pkg import mod`` names the module; ``from pkg import symbol`` names the package
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        for n in names:
            if n.startswith("saferlhf"):
                target = resolve(n)
                if target and target != module:
                    out.add(target)
    return out


GRAPH = {m: imports_of(m) for m in MODULES}


def importers_of(prefix: str) -> set[str]:
    return {m for m, deps in GRAPH.items() if any(d == prefix or d.startswith(prefix + ".") for d in deps)}


def test_the_graph_sees_lazy_imports():
    assert "saferlhf.tracking" in GRAPH["saferlhf.rollout"]  # imported inside HFGenerator.generate
    assert "saferlhf.recipes.ppo" in GRAPH["saferlhf.pipelines.demo"]


def test_only_cli_and_pipelines_import_recipes():
    allowed = {"saferlhf.cli"} | {m for m in MODULES if m.startswith("saferlhf.pipelines")}
    offenders = importers_of("saferlhf.recipes") - allowed
    assert not offenders, f"library modules importing a recipe: {sorted(offenders)}"


def test_only_cli_imports_pipelines():
    offenders = importers_of("saferlhf.pipelines") - {"saferlhf.cli"}
    assert not offenders, sorted(offenders)


def test_cli_commands_point_at_recipes_pipelines_or_command_modules():
    from saferlhf.cli import COMMANDS

    for c in COMMANDS:
        assert c.module in MODULES, c.module


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return stack[stack.index(dep):] + [dep]
            if dep not in state and (found := visit(dep)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycles():
    cycle = find_cycle(GRAPH)
    assert cycle is None, " -> ".join(cycle)


@pytest.mark.parametrize("heavy", ["transformers", "accelerate", "peft", "matplotlib", "datasets"])
def test_import_saferlhf_stays_light(heavy):
    code = f"import saferlhf, saferlhf.cli, saferlhf.config, saferlhf.rl, saferlhf.losses, sys; print({heavy!r} in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"


BENCH = ROOT.parent / "bench"


BENCH_SCRIPTS = sorted([*BENCH.glob("*.py"), *BENCH.glob("peers/*.py")]) if BENCH.exists() else []  # not the peer venvs


@pytest.mark.parametrize("path", BENCH_SCRIPTS, ids=lambda p: p.name)
def test_bench_scripts_import_names_that_exist(path):
    """Benchmarks are not run by the suite: check that every saferlhf name they import (lazily too) exists."""
    import importlib

    script = path.name
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("saferlhf"):
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name) or f"{node.module}.{alias.name}" in MODULES, (
                    f"{script}: from {node.module} import {alias.name}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("saferlhf"):
                    importlib.import_module(alias.name)
