"""No import cycle among elmd_sdk's modules (chains/, retrievers/ and trainers/ included), counting the imports made
inside functions too: a cycle hidden in a function-level import still ties its modules into one unit.

Imports under ``if TYPE_CHECKING:`` never run and are not counted; nor is the implicit import of a module's parent
package (Python finishes a package's ``__init__`` before its submodules need it).
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def package_modules(root: Path) -> dict[str, Path]:
    """Dotted name -> source file of every module installed under elmd_sdk (pyproject's package-dir mapping)."""
    package_dir = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    modules = {}
    for package, folder in package_dir.items():
        for path in (root / folder).rglob("*.py"):
            parts = list(path.relative_to(root / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join([package, *parts])] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The known modules ``name`` imports anywhere in its file (module level, functions, methods)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def target(module: str) -> str | None:
        while module and module not in known:  # ``import a.b.c`` of a package attribute: its nearest module
            module = module.rpartition(".")[0]
        return module or None

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(t for alias in node.names if (t := target(alias.name)))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.update(t for t in [submodule if submodule in known else target(base)] if t)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return found - {name}


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of two or more modules (each sorted), i.e. the modules that import each other."""

    def reach(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for nxt in graph.get(todo.pop(), set()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    reachable = {name: reach(name) for name in graph}
    groups = {frozenset({name} | {o for o in reachable[name] if name in reachable[o]}) for name in graph}
    return sorted(sorted(group) for group in groups if len(group) > 1)


def import_graph(root: Path) -> dict[str, set[str]]:
    modules = package_modules(root)
    return {name: imports_of(name, path, set(modules)) for name, path in modules.items()}


def test_no_module_of_elmd_sdk_takes_part_in_an_import_cycle() -> None:
    graph = import_graph(ROOT)
    assert {"elmd_sdk.models.llm", "elmd_sdk.video.encoders", "elmd_sdk.trainers.eerg"} <= graph.keys()
    assert "elmd_sdk.models.prefix" in graph["elmd_sdk.models.llm"]  # a function-level import is an edge
    assert import_cycles(graph) == []


def test_the_checker_finds_a_cycle_through_a_function_level_import(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.setuptools.package-dir]\n"pkg" = "src"\n"pkg.extra" = "extra"\n')
    files = {
        "src/__init__.py": "",
        "src/a.py": "from pkg.b import f\n",
        "src/b.py": "def f():\n    from pkg import a\n",
        "src/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.extra.d\nfrom . import a\n",
        "extra/__init__.py": "",
        "extra/d.py": "import pkg.c\n",
    }
    for relative, text in files.items():
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text(text)
    graph = import_graph(tmp_path)
    assert graph["pkg.c"] == {"pkg.a"} and graph["pkg.extra.d"] == {"pkg.c"}  # TYPE_CHECKING import not counted
    assert import_cycles(graph) == [["pkg.a", "pkg.b"]]


CORE = (
    "errors",
    "io",
    "paths",
    "progress",
    "text_checks",
    "hub",
    "sharding",
    "data",
    "answer",
    "metrics",
    "video",
    "models",
)
LAYERS: tuple[tuple[str, ...], ...] = (
    (*CORE, "bundle"),  # the core: shared modules, data, answer format, metrics, video, models, the bundle format
    ("retrievers",),
    ("chains", "bundle.load", "bundle.create"),  # the bundle loader and maker compose a bundle's runtime parts
    ("trainers", "evaluate"),
    ("serve",),
    ("cli",),
)
"""The folders (and top-level modules) of elmd_sdk from the bottom up: an import points to the same layer or one
below, never up, and no two folders import each other."""


def folder_of(module: str) -> str:
    """``elmd_sdk.models.llm`` -> ``models``; ``elmd_sdk.bundle.load`` and ``elmd_sdk.bundle.create`` (composers, see
    LAYERS) keep their names."""
    parts = module.split(".")[1:]
    composer = ".".join(parts[:2])
    return composer if composer in ("bundle.load", "bundle.create") else (parts[0] if parts else "")


def folder_edges(graph: dict[str, set[str]]) -> dict[tuple[str, str], list[tuple[str, str]]]:
    """(importing folder, imported folder) -> the module imports behind it; the package's own __init__ left out."""
    edges: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for module, imported in graph.items():
        for target in imported:
            pair = (folder_of(module), folder_of(target))
            if "" not in pair and pair[0] != pair[1]:
                edges.setdefault(pair, []).append((module, target))
    return edges


def test_folders_point_one_way_core_below_retrievers_below_chains_below_the_composers() -> None:
    graph = import_graph(ROOT)
    rank = {folder: i for i, layer in enumerate(LAYERS) for folder in layer}
    edges = folder_edges(graph)
    assert {folder_of(m) for m in graph} - {""} == set(rank)  # every folder has a layer
    upward = {pair: found for pair, found in edges.items() if rank[pair[0]] < rank[pair[1]]}
    assert upward == {}
    mutual = {pair: found for pair, found in edges.items() if (pair[1], pair[0]) in edges}
    assert mutual == {}
    assert ("bundle.load", "retrievers") in edges and ("chains", "models") in edges  # the checker sees edges


def test_the_folder_check_sees_an_upward_import() -> None:
    graph = {"elmd_sdk.models.chat_model": {"elmd_sdk.chains.parser"}, "elmd_sdk.chains.parser": set()}
    assert folder_edges(graph) == {("models", "chains"): [("elmd_sdk.models.chat_model", "elmd_sdk.chains.parser")]}
