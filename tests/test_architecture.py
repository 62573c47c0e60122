"""The package's shape, checked from its source with `ast` (nothing is imported):

- no import cycle between kagglecifar's modules, counting imports inside functions;
- inference/ never imports training/ (prediction needs the checkpoint contract and the models only);
- no module uses a `_private` name of a module in another package;
- at most MAX_LOOSE_MODULES modules loose in kagglecifar/, and no module over MAX_LINES lines.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "kagglecifar"
MAX_LOOSE_MODULES = 15  # __init__ and __main__ included: the rest lives in one package per stage
MAX_LINES = 450


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def package_of(name: str) -> str:
    """The package a module belongs to (a package's __init__ belongs to that package)."""
    return name if is_package(name) else name.rpartition(".")[0]


def resolve(importer: str, node: ast.ImportFrom) -> str:
    """The absolute module named by a `from X import ...` in `importer` (relative imports resolved)."""
    if not node.level:
        return node.module or ""
    base = package_of(importer).split(".")
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports(name: str) -> list[tuple[str, str | None, int]]:
    """(imported kagglecifar module, name taken from it or None, line) for every import in the module,
    at any depth (inside functions too). `from pkg import mod` names the module pkg.mod when it is one."""
    found = []
    for node in ast.walk(ast.parse(MODULES[name].read_text(), str(MODULES[name]))):
        if isinstance(node, ast.Import):
            found += [(a.name, None, node.lineno) for a in node.names if a.name in MODULES]
        elif isinstance(node, ast.ImportFrom):
            source = resolve(name, node)
            if source not in MODULES:
                continue
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                found.append(
                    (submodule, None, node.lineno) if submodule in MODULES else (source, alias.name, node.lineno)
                )
    return found


GRAPH = {name: sorted({target for target, _, _ in imports(name) if target != name}) for name in MODULES}


def find_cycle(graph: dict[str, list[str]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in graph.get(node, []):
            if state.get(target) == 1:
                return path[path.index(target) :] + [target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for node in graph:
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_cycle_finder_finds_and_names_a_cycle():
    assert find_cycle({"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a"]}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": ["b"], "b": [], "c": ["a", "b"]}) is None


def test_imports_inside_functions_and_submodules_named_by_from_imports_are_edges():
    assert "kagglecifar.config" in GRAPH["kagglecifar.cli.train"]  # imported inside a function only
    # `from kagglecifar.inference import predict as prediction`: the module, not the package
    assert "kagglecifar.inference.predict" in GRAPH["kagglecifar.api"]
    assert "kagglecifar.inference" not in GRAPH["kagglecifar.api"]


def test_no_import_cycle():
    cycle = find_cycle(GRAPH)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_inference_never_imports_training():
    wrong = [
        f"{name} imports {target}"
        for name in MODULES
        if name.startswith("kagglecifar.inference")
        for target in GRAPH[name]
        if target == "kagglecifar.training" or target.startswith("kagglecifar.training.")
    ]
    assert not wrong, "; ".join(wrong)


def private_uses(name: str) -> list[str]:
    """`from m import _x` and `alias._x` (alias bound to a kagglecifar module) where m is in another package."""
    mine = package_of(name)

    def foreign(target: str) -> bool:
        theirs = package_of(target)
        return not (mine == theirs or mine.startswith(theirs + "."))

    uses = []
    aliases = {}
    for target, taken, line in imports(name):
        if taken is not None and taken.startswith("_") and not taken.startswith("__") and foreign(target):
            uses.append(f"{name}:{line} takes {target}.{taken}")
    tree = ast.parse(MODULES[name].read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name in MODULES and a.asname:
                    aliases[a.asname] = a.name
        elif isinstance(node, ast.ImportFrom):
            source = resolve(name, node)
            for a in node.names:
                if f"{source}.{a.name}" in MODULES:
                    aliases[a.asname or a.name] = f"{source}.{a.name}"
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in aliases
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
            and foreign(aliases[node.value.id])
        ):
            uses.append(f"{name}:{node.lineno} uses {aliases[node.value.id]}.{node.attr}")
    return uses


def test_no_module_uses_another_packages_private_names():
    uses = [use for name in MODULES for use in private_uses(name)]
    assert not uses, "; ".join(uses)


def test_few_loose_modules():
    loose = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(loose) <= MAX_LOOSE_MODULES, f"{len(loose)} modules loose in kagglecifar/: {', '.join(loose)}"


def test_no_module_is_too_long():
    long = {
        str(p.relative_to(PACKAGE.parent)): n
        for p in MODULES.values()
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"over {MAX_LINES} lines: {long}"
