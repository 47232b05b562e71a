"""The package's layout rules, read from the source with ``ast`` (nothing is imported):

- the import graph of conr/ has no circle;
- no file in conr/ is longer than 450 lines;
- no module uses another module's ``_private`` names;
- imports go down the layers (:data:`LAYERS`): a part of conr/ imports only parts of its own
  layer or of the layers below it, never one above;
- docs/architecture.md's "Map of the package" names every module and folder at the top of
  conr/, and nothing that is not there.

What counts as an import: every ``import`` / ``from ... import`` statement of a module, at
any depth, function-level (lazy) imports included: a lazy import still makes one module
depend on the other, and a circle through one works only as long as nobody moves the import
to the top. Only imports under ``if TYPE_CHECKING:`` are left out (they never run). Importing
``a.b.c`` also runs the ``__init__`` of ``a`` and ``a.b``; those implicit parent-package
imports are not edges (every submodule would otherwise form a circle with its package),
but ``from . import name`` of a package's own attribute is (it needs the package's body).
"""
from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "conr"
MAX_LINES = 450
MAX_ROOT_MODULES = 10
# conr/'s parts (a top-level module or folder), lowest layer first (docs/architecture.md)
LAYERS = (
    ("errors", "options", "io", "threads"),             # shared: what a user can fix, messages, atomic writes,
                                                        # torch's CPU threads for a block
    ("ops", "losses", "models", "data"),                # the method's math, the networks, the images
    ("methods", "cluster", "encoders"),                 # one method a module; clustering a fixed representation
    ("config", "config_checks", "configs"),             # every setting, checked against the registries below
    ("engine",),                                        # the training loop and its helpers
    ("auto", "outputs"),                                # the automatic pipeline; what a run produces
    ("estimator",),                                     # conr.CoNR
    ("sweep", "commands", "cli", "__main__", "__init__"),  # entry points
)


def _files(root: Path = PACKAGE) -> list[Path]:
    return sorted(root.rglob("*.py"))


def _module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _rel(path: Path) -> str:
    return path.relative_to(PACKAGE).as_posix()


@lru_cache(maxsize=None)
def _modules(root: Path = PACKAGE) -> dict[str, Path]:
    return {_module_name(p, root): p for p in _files(root)}


@lru_cache(maxsize=None)
def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(node: ast.AST):
    """Every Import / ImportFrom node, at any depth, except those under ``if TYPE_CHECKING:``."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for part in child.orelse:
                yield from _import_nodes(ast.Module(body=[part], type_ignores=[]))
            continue
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child
        yield from _import_nodes(child)


def _from_target(module: str, is_package: bool, node: ast.ImportFrom, top: str) -> str | None:
    """The absolute module a ``from X import ...`` reads X as (None: outside the package)."""
    if node.level == 0:
        target = node.module or ""
    else:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - node.level + 1]
        target = ".".join(base + ([node.module] if node.module else []))
    return target if target == top or target.startswith(top + ".") else None


def _imports(module: str, root: Path = PACKAGE) -> list[tuple[str, list[ast.alias], int]]:
    """(target module, the aliases imported from it, line) for every in-package import of ``module``."""
    path = _modules(root)[module]
    is_package = path.name == "__init__.py"
    out = []
    for node in _import_nodes(_tree(path)):
        if isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names if a.name.split(".")[0] == root.name]
        else:
            target = _from_target(module, is_package, node, root.name)
            if target is not None:
                out.append((target, list(node.names), node.lineno))
    return out


@lru_cache(maxsize=None)
def import_graph(root: Path = PACKAGE) -> dict[str, dict[str, int]]:
    """module -> {imported module: line of the first such import}."""
    mods = _modules(root)
    graph: dict[str, dict[str, int]] = {m: {} for m in mods}
    for m in mods:
        for target, aliases, line in _imports(m, root):
            for alias in aliases:
                sub = f"{target}.{alias.name}"
                if sub in mods:  # from package import submodule
                    graph[m].setdefault(sub, line)
                elif m != target:  # from module import attribute (an ancestor package's too)
                    graph[m].setdefault(target, line)
            ancestor = m == target or m.startswith(target + ".")
            if not aliases and not ancestor and target in mods:  # import pkg.x.y
                graph[m].setdefault(target, line)
    return graph


def find_cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """One circle (a, b, ..., a) for every strongly connected component that has one (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:  # the package is small: recursion depth stays far below the limit
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph.get(v, {}):
                components.append(comp)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    cycles = []
    for comp in components:  # a shortest circle through the component's first module (breadth-first)
        members, start = set(comp), min(comp)
        prev: dict[str, str] = {}
        frontier = [start]
        while frontier and start not in prev:
            nxt = []
            for v in frontier:
                for w in sorted(graph[v]):
                    if w in members and w not in prev:
                        prev[w] = v
                        nxt.append(w)
            frontier = nxt
        path = [start]
        while prev[path[-1]] != start:
            path.append(prev[path[-1]])
        path.append(start)
        cycles.append(path[::-1])
    return cycles


def _describe(cycle: list[str], graph) -> str:
    steps = [f"{a} (line {graph[a][b]})" for a, b in zip(cycle, cycle[1:])]
    return " -> ".join(steps + [cycle[-1]])


@lru_cache(maxsize=None)
def _private_definitions(path: Path) -> frozenset[str]:
    """``_names`` a module defines: functions, classes, assigned names, and ``self._x`` / ``cls._x``."""
    names = set()
    for node in ast.walk(_tree(path)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) and \
                isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
            names.add(node.attr)
    return frozenset(n for n in names if _is_private(n))


def private_uses(path: Path, root: Path = PACKAGE) -> list[str]:
    """Where ``path`` uses another module's private names:

    - ``from .x import _y``, and imports of a ``_private`` module from outside its package;
    - ``x._y`` on a module it imported (``from . import x``, ``import conr.x as x``, ``conr.x._y``);
    - ``obj._y`` (read or write) on any object but ``self`` / ``cls`` when ``_y`` is a private
      name another module of the package defines and this one does not (``trainer._last_features``).
    """
    module = _module_name(path, root)
    mods = _modules(root)
    mine = _private_definitions(path)
    others = frozenset().union(*(_private_definitions(p) for p in _files(root) if p != path))
    found = []
    module_names = set()  # local names bound to in-package modules
    for target, aliases, line in _imports(module, root):
        for alias in aliases:
            full = f"{target}.{alias.name}"
            if full in mods:
                module_names.add(alias.asname or alias.name)
            elif _is_private(alias.name) and target != module:
                found.append(f"line {line}: from {target} import {alias.name}")
        imported = [f"{target}.{a.name}" for a in aliases if f"{target}.{a.name}" in mods] or [target]
        for full in imported:
            parts = full.split(".")
            for i, part in enumerate(parts):  # a private module may be imported inside its own package
                owner = ".".join(parts[:i])
                if _is_private(part) and not (module == owner or module.startswith(owner + ".")):
                    found.append(f"line {line}: imports {full}, private to {owner}")
                    break
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.Import):
            module_names |= {a.asname for a in node.names if a.asname and a.name.split(".")[0] == root.name}
            module_names |= {root.name for a in node.names if not a.asname and a.name.split(".")[0] == root.name}
        if not (isinstance(node, ast.Attribute) and _is_private(node.attr)):
            continue
        base = node.value
        while isinstance(base, ast.Attribute):
            base = base.value
        owner = base.id if isinstance(base, ast.Name) else None
        if owner in ("self", "cls") and base is node.value:
            continue
        if owner in module_names or (node.attr in others and node.attr not in mine):
            found.append(f"line {node.lineno}: {ast.unparse(node)}")
    return sorted(set(found), key=lambda s: int(s.split()[1].rstrip(":")))


# ----------------------------------------------------------------------------- the walker on hand-made cases

def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "pkg"
    for name, text in files.items():
        f = root / name
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text)
    return root


def test_cycle_finder_on_hand_made_graphs():
    assert find_cycles({"a": {"b": 1}, "b": {"c": 1}, "c": {}}) == []
    assert find_cycles({"a": {"b": 1}, "b": {"c": 2}, "c": {"a": 3}, "d": {"a": 4}}) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"a": 1}}) == [["a", "a"]]
    two = find_cycles({"a": {"b": 1}, "b": {"a": 1}, "c": {"d": 1}, "d": {"c": 1}, "e": {"a": 1, "c": 1}})
    assert sorted(two) == [["a", "b", "a"], ["c", "d", "c"]]


def test_graph_of_a_hand_made_package(tmp_path):
    root = _package(tmp_path, {
        "__init__.py": "",
        "a.py": "from .b import f\n",                                   # relative, top level
        "b.py": "def f():\n    from pkg.sub import deep\n",            # absolute, inside a function
        "sub/__init__.py": "from . import deep\nfrom .deep import g\n",  # package -> its submodule
        "sub/deep.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..a import x\n"
                       "from .. import b\n",                             # TYPE_CHECKING left out
        "c.py": "import pkg.a\nimport os\n",
    })
    graph = import_graph(root)
    assert graph == {"pkg": {}, "pkg.a": {"pkg.b": 1}, "pkg.b": {"pkg.sub.deep": 2},
                     "pkg.sub": {"pkg.sub.deep": 1}, "pkg.sub.deep": {"pkg.b": 4}, "pkg.c": {"pkg.a": 1}}
    assert find_cycles(graph) == [["pkg.b", "pkg.sub.deep", "pkg.b"]]
    (root / "sub" / "deep.py").write_text("X = 1\n")
    import_graph.cache_clear()
    _tree.cache_clear()
    assert find_cycles(import_graph(root)) == []


def test_private_use_finder_on_a_hand_made_package(tmp_path):
    root = _package(tmp_path, {
        "__init__.py": "",
        "_impl.py": "def _helper(): ...\ndef run(): ...\n",
        "a.py": "class T:\n    def __init__(self):\n        self._state = 1\n        self._own = 2\n"
                "    def peek(self, other):\n        return other._own\n",  # its own name: allowed
        "b.py": "from .a import T\nfrom ._impl import run\nfrom . import a as mod\n"
                "def use(t):\n    t._state = 0\n    return mod._anything, t.public\n",
        "c.py": "from ._impl import _helper\nimport pkg.a\nx = pkg.a._secret\n",
        "sub/__init__.py": "from .._impl import run\nfrom ._inner import y\n",
        "sub/_inner.py": "y = 1\n",
        "d.py": "from .sub._inner import y\n",
    })
    uses = {p.name if p.parent == root else f"sub/{p.name}": private_uses(p, root) for p in _files(root)}
    assert uses["a.py"] == [] and uses["_impl.py"] == [] and uses["__init__.py"] == []
    assert uses["sub/__init__.py"] == []  # a package's own private module, and its parent's
    assert uses["b.py"] == ["line 5: t._state", "line 6: mod._anything"]
    assert uses["c.py"] == ["line 1: from pkg._impl import _helper", "line 3: pkg.a._secret"]
    assert uses["d.py"] == ["line 1: imports pkg.sub._inner, private to pkg.sub"]


def test_graph_of_conr_reads_lazy_imports():
    graph = import_graph()
    assert "conr.methods" in graph["conr.engine.setup"]
    assert "conr.methods" in graph["conr.config_checks"]  # validate_config imports the methods on first use
    assert "conr.estimator" in graph["conr"]       # conr.CoNR, imported on first use
    assert graph["conr.errors"] == {}               # the errors import nothing


# ----------------------------------------------------------------------------- the rules

def test_import_graph_has_no_circle():
    graph = import_graph()
    cycles = find_cycles(graph)
    assert not cycles, "import circle(s) in conr/:\n" + "\n".join(_describe(c, graph) for c in cycles)


def _part(module: str) -> str:
    """The part of conr/ a module belongs to: ``conr.engine.trainer`` -> ``engine``; ``conr`` -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def layer_violations(graph: dict[str, dict[str, int]], layers=LAYERS) -> list[str]:
    """Every import from a lower layer into a higher one (and every part no layer names)."""
    rank = {part: i for i, layer in enumerate(layers) for part in layer}
    found = []
    for module, targets in sorted(graph.items()):
        a = _part(module)
        if a not in rank:
            found.append(f"{module}: its part {a!r} is in no layer")
            continue
        for target, line in sorted(targets.items()):
            b = _part(target)
            if b in rank and rank[b] > rank[a]:
                found.append(f"{module} (line {line}) imports {target}: {a} (layer {rank[a]}) sits below "
                             f"{b} (layer {rank[b]})")
    return found


def _cases():
    return [pytest.param(p, id=_rel(p)) for p in _files()]


@pytest.mark.parametrize("path", _cases())
def test_file_is_at_most_450_lines(path):
    n = len(path.read_text().splitlines())
    assert n <= MAX_LINES, f"conr/{_rel(path)} has {n} lines (at most {MAX_LINES}): split it along a seam"


@pytest.mark.parametrize("path", _cases())
def test_no_module_uses_another_modules_private_names(path):
    uses = private_uses(path)
    assert not uses, (f"conr/{_rel(path)} uses other modules' private names (make them public, or move the "
                      f"code beside them):\n" + "\n".join(uses))


def test_layer_checker_on_a_hand_made_graph():
    layers = (("base",), ("mid",), ("top",))
    graph = {"pkg.base.a": {"pkg.base.b": 1}, "pkg.mid": {"pkg.base.a": 2}, "pkg.top.x": {"pkg.mid": 3},
             "pkg.base.b": {"pkg.top.x": 7}, "pkg.odd": {}}
    assert layer_violations(graph, layers) == [
        "pkg.base.b (line 7) imports pkg.top.x: base (layer 0) sits below top (layer 2)",
        "pkg.odd: its part 'odd' is in no layer"]


def test_imports_go_down_the_layers():
    found = layer_violations(import_graph())
    assert not found, "imports against the layers (docs/architecture.md):\n" + "\n".join(found)


def test_root_holds_few_modules():
    root = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(root) <= MAX_ROOT_MODULES, f"conr/ holds {len(root)} modules (at most {MAX_ROOT_MODULES}): {root}"


def test_architecture_map_matches_the_folders():
    """Every module and package at the top of conr/ is named in docs/architecture.md's map, and
    every file or folder the map names exists."""
    import re

    readme = (PACKAGE.parent / "docs" / "architecture.md").read_text()
    start = readme.index("## Map of the package")
    end = readme.find("\n## ", start + 1)
    end = len(readme) if end < 0 else end
    section = readme[start:end]
    named = set(re.findall(r"`([\w/]+(?:\.py|/))`", section))
    tops = {p.name for p in PACKAGE.glob("*.py")} - {"__init__.py", "__main__.py"}
    tops |= {p.name + "/" for p in PACKAGE.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))}
    assert tops - named == set(), f"not in docs/architecture.md's map of the package: {sorted(tops - named)}"
    missing = {n for n in named if not (PACKAGE / n).exists() and not (PACKAGE.parent / n).exists()}
    assert not missing, f"docs/architecture.md's map names what conr/ does not have: {sorted(missing)}"


def test_every_in_package_import_names_a_module_that_exists():
    """Every ``conr.x`` (or relative) import, lazy ones in functions included, names a module
    of the package: a module moved without its importers updated fails here, not at run time."""
    mods = _modules()
    missing = []
    for m in mods:
        for target, aliases, line in _imports(m):
            if target not in mods:
                missing.append(f"{_rel(mods[m])}:{line} imports {target}")
    assert not missing, "imports of modules that do not exist:\n  " + "\n  ".join(missing)


def test_readme_is_for_users():
    """The README stays a user's page: at most 300 lines, and no commit ids (measurements
    and history live in docs/ and CHANGELOG.md, dated)."""
    import re

    root = PACKAGE.parent
    for name in ("README.md", "CHANGELOG.md"):
        text = (root / name).read_text()
        ids = [w for w in re.findall(r"\b[0-9a-f]{7,40}\b", text) if re.search(r"[a-f]", w) and re.search(r"\d", w)]
        assert not ids, f"{name} cites what look like commit ids: {ids[:5]} (write the date instead)"
    lines = len((root / "README.md").read_text().splitlines())
    assert lines <= 300, f"README.md has {lines} lines (at most 300): move guides and measurements to docs/"
