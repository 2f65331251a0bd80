"""Rules of the code base that a reviewer would otherwise check by hand.

- Every ``CCOMP_*`` variable the code names is a setting of :class:`offchain.config.Settings`,
  and nothing but ``offchain/config.py`` reads one from the environment (one settings object).
- No function in ``offchain/`` is longer than 100 lines.
- No import cycle among the modules of ``offchain`` (function-level and type-checking imports
  included), so none is hidden by an import inside a function.

The import layers are checked by ``lint-imports`` (``pyproject.toml`` ``[tool.importlinter]``),
which the README's test command runs before the tests.
"""

from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

import grimp

from offchain.config import ENV_PREFIX, Settings

PACKAGE = Path(__file__).resolve().parent.parent / "offchain"
MAX_FUNCTION_LINES = 100
_CCOMP_NAME = re.compile(r"\bCCOMP_[A-Z0-9_]+\b")


@functools.cache
def _sources() -> list[tuple[Path, ast.Module]]:
    return [(path, ast.parse(path.read_text(), str(path))) for path in sorted(PACKAGE.rglob("*.py"))]


def _is_environ(node: ast.AST) -> bool:
    """``os.environ`` (or a bare ``environ``)."""
    return (isinstance(node, ast.Attribute) and node.attr == "environ") or (
        isinstance(node, ast.Name) and node.id == "environ"
    )


def _environment_reads(tree: ast.Module) -> list[tuple[int, str]]:
    """(line, variable) of each ``os.environ.get("X")``, ``os.environ["X"]``, ``os.getenv("X")``
    with a literal name."""
    reads = []
    for node in ast.walk(tree):
        name = None
        if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            if isinstance(func, ast.Attribute) and (
                (func.attr == "get" and _is_environ(func.value)) or func.attr == "getenv"
            ):
                name = node.args[0].value
        elif isinstance(node, ast.Subscript) and _is_environ(node.value):
            if isinstance(node.slice, ast.Constant):
                name = node.slice.value
        if isinstance(name, str):
            reads.append((node.lineno, name))
    return reads


def test_only_the_settings_read_ccomp_variables_from_the_environment() -> None:
    offenders = [
        f"{path.relative_to(PACKAGE.parent)}:{line} reads {name}"
        for path, tree in _sources()
        if path.name != "config.py"
        for line, name in _environment_reads(tree)
        if name.upper().startswith(ENV_PREFIX)
    ]
    assert offenders == []


def test_every_ccomp_variable_the_code_names_is_a_setting() -> None:
    settings = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    named = {
        (name, str(path.relative_to(PACKAGE.parent)))
        for path in sorted(PACKAGE.rglob("*.py"))
        for name in _CCOMP_NAME.findall(path.read_text())
    }
    unknown = sorted((name, where) for name, where in named if name not in settings)
    assert unknown == []


def test_no_function_is_longer_than_100_lines() -> None:
    long = [
        f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name} "
        f"({node.end_lineno - node.lineno + 1} lines)"
        for path, tree in _sources()
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert long == []


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_module_of_the_package_is_in_an_import_cycle() -> None:
    graph = grimp.build_graph("offchain", include_external_packages=False)
    assert _cycles(graph) == []
    # the check sees a cycle when there is one (a and b import each other)
    graph.add_import(importer="offchain.errors", imported="offchain.faults")
    graph.add_import(importer="offchain.faults", imported="offchain.errors")
    assert ["offchain.errors", "offchain.faults"] in _cycles(graph)
