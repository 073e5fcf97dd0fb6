"""The packages stay layered: no import cycle between training/, baselines/, tasks/, evaluation/ and
data/, counting every import of a taskfit module (at module level and inside functions: an import
moved into a function still ties the two packages together); no cycle between the modules of
training/ either; and training/ keeps no mutable state at module level.

The source is read with ``ast``, not imported, so what is checked is what the files say.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "taskfit"
PACKAGES = ("training", "baselines", "tasks", "evaluation", "data")


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def _imports(path: Path, name: str, known: set[str]) -> list[tuple[int, str]]:
    """(line, module) for every taskfit module ``path`` imports, anywhere in the file; ``from X
    import Y`` counts as an import of ``X.Y`` when that is a module, of ``X`` otherwise."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, up level - 1
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.append((node.lineno, full if full in known else base))
    return [(line, m) for line, m in found if m == "taskfit" or m.startswith("taskfit.")]


def _graph(node_of) -> dict[tuple[str, str], list[str]]:
    """Edges between the nodes ``node_of(module)`` names (None: not a node), each with the
    import lines that make it."""
    modules = _modules()
    edges: dict[tuple[str, str], list[str]] = defaultdict(list)
    for name, path in modules.items():
        a = node_of(name)
        if a is None:
            continue
        for line, target in _imports(path, name, set(modules)):
            b = node_of(target)
            if b is not None and b != a:
                edges[(a, b)].append(f"{path.relative_to(SRC.parent)}:{line} imports {target}")
    return edges


def _a_cycle(edges: dict[tuple[str, str], list[str]]) -> list[str] | None:
    """One cycle of the graph, as its nodes in order, or None."""
    succ: dict[str, list[str]] = defaultdict(list)
    for a, b in sorted(edges):
        succ[a].append(b)
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        path.append(n)
        for m in succ[n]:
            if state.get(m) == 1:
                return path[path.index(m):] + [m]
            if m not in state and (cycle := visit(m)):
                return cycle
        state[n] = 2
        path.pop()
        return None

    for n in sorted(succ):
        if n not in state and (cycle := visit(n)):
            return cycle
    return None


def _evidence(cycle: list[str], edges: dict[tuple[str, str], list[str]]) -> str:
    lines = [" -> ".join(cycle)]
    for a, b in zip(cycle, cycle[1:]):
        lines.append(f"  {a} -> {b}:")
        lines += [f"    {e}" for e in edges[(a, b)]]
    return "\n".join(lines)


def _package(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in PACKAGES else None


def test_the_reader_sees_imports_inside_functions():
    edges = _graph(_package)
    # recipe.py imports evaluation's plot inside train_model, and the data split at the top
    assert any("training/recipe.py" in e and "taskfit.evaluation.report" in e for e in edges[("training", "evaluation")])
    assert any("training/recipe.py" in e and "taskfit.data.split" in e for e in edges[("training", "data")])
    assert _a_cycle({("a", "b"): ["x"], ("b", "c"): ["y"], ("c", "a"): ["z"]}) == ["a", "b", "c", "a"]
    assert _a_cycle({("a", "b"): ["x"], ("b", "c"): ["y"]}) is None


def test_no_import_cycle_between_the_packages():
    edges = _graph(_package)
    assert edges, "no import between the packages found: the reader is broken"
    cycle = _a_cycle(edges)
    assert cycle is None, ("import cycle between packages; move what both sides need into the lower one:\n"
                           + _evidence(cycle, edges))


def test_no_import_cycle_between_the_modules_of_training():
    edges = _graph(lambda m: m if m.startswith("taskfit.training.") else None)
    assert ("taskfit.training.sft", "taskfit.training.loop") in edges
    cycle = _a_cycle(edges)
    assert cycle is None, "import cycle inside training/:\n" + _evidence(cycle, edges)


# Constructors of containers (and caches) that a module-level name could be mutated through.
_MUTABLE_CALLS = {"dict", "list", "set", "bytearray", "defaultdict", "OrderedDict", "Counter", "deque",
                  "WeakKeyDictionary", "WeakValueDictionary", "WeakSet", "ChainMap"}
_CACHES = {"lru_cache", "cache", "cached_property"}


def _called(node: ast.AST) -> str | None:
    if isinstance(node, ast.Call):
        f = node.func
        return f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None
    return None


def _module_state(path: Path, root: Path = SRC.parent) -> list[str]:
    """What in ``path`` holds state at module level: ``global`` statements, module-level names
    bound to mutable containers, and functools caches (which keep their arguments, models
    included, alive for the life of the process)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    where = path.relative_to(root)
    found = [f"{where}:{n.lineno} global {', '.join(n.names)}" for n in ast.walk(tree) if isinstance(n, ast.Global)]
    for stmt in tree.body:
        targets, value = ([], None)
        if isinstance(stmt, ast.Assign):
            targets, value = stmt.targets, stmt.value
        elif isinstance(stmt, (ast.AnnAssign, ast.AugAssign)) and stmt.value is not None:
            targets, value = [stmt.target], stmt.value
        names = [t.id for t in targets if isinstance(t, ast.Name)]
        if value is None or names == ["__all__"]:
            continue
        if isinstance(stmt, ast.AugAssign) or isinstance(value, (ast.List, ast.Dict, ast.Set, ast.ListComp,
                                                                 ast.DictComp, ast.SetComp)) \
                or _called(value) in _MUTABLE_CALLS:
            found.append(f"{where}:{stmt.lineno} {', '.join(names) or ast.unparse(targets[0])} = "
                         f"{ast.unparse(value)[:60]}")
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for d in node.decorator_list:
                name = d.id if isinstance(d, ast.Name) else d.attr if isinstance(d, ast.Attribute) else _called(d)
                if name in _CACHES:
                    found.append(f"{where}:{node.lineno} @{name} on {node.name}")
    return found


def test_the_state_check_finds_what_it_forbids(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("import functools, weakref\nROOTS = weakref.WeakKeyDictionary()\nSEEN = []\n"
                      "LIMITS = (1, 2)\n__all__ = ['f']\n@functools.lru_cache(maxsize=2)\n"
                      "def f(x):\n    global SEEN\n    return x\n", encoding="utf-8")
    found = _module_state(sample, root=tmp_path)
    assert [f.split(" ", 1)[1] for f in found] == ["global SEEN", "ROOTS = weakref.WeakKeyDictionary()",
                                                    "SEEN = []", "@lru_cache on f"]


def test_training_keeps_no_state_at_module_level():
    found = [f for p in sorted((SRC / "training").glob("*.py")) for f in _module_state(p)]
    assert not found, ("module-level state in training/ (pass it in a handle, e.g. training.parallel.Parallel, "
                       "or make it an immutable constant):\n" + "\n".join(found))
