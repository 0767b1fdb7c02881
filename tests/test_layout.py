"""The package's layers, its import graph, and the size of its functions' signatures.

Layers, lowest first (``core`` is four layers of its own)::

    core.base < core.runtime < core.data < core.model < find, show, synthetic < fix < report
      < the top-level modules (session, pipeline, demo, train, results) < cli < __main__

Every import inside the library (at module level or inside a function; imports under
``if TYPE_CHECKING:`` are annotations only and do not count) must point down this list or stay
inside its own package; packages that share a rank (find, show, synthetic) do not import each
other. No library module imports the command line, and no two modules import each other, directly
or through others (a circle), at module level or inside a function.
"""
import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "src" / "neuroinspect"
LAYERS = {
    "core.base": 0,  # torch-free: errors, configs, files, metrics, records
    "core.runtime": 1,  # device policy, torchrun, progress
    "core.data": 2,  # data sources and ImageData
    "core.model": 3,  # model sources, the probe, cached features (features need data)
    "find": 4, "show": 4, "synthetic": 4,  # the stages that stand on core, and the demo's generated data
    "fix": 5,
    "report": 6,
    "cli": 8,
    "__main__": 9,  # `python -m neuroinspect`: the command line
}
TOP = 7  # modules directly under neuroinspect/: session, pipeline, demo, train, results
MAX_PARAMS = 8
PARAM_EXCEPTIONS: dict[str, int] = {}  # none


def module_name(path: Path, root: Path = PKG) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> tuple[int, str]:
    """``(rank, package)`` of a module; the root package and ``neuroinspect.core`` itself have rank -1."""
    parts = module.split(".")
    if len(parts) == 1 or parts[1:] == ["core"]:
        return -1, ""  # the root package (lazy re-exports only) and core's docstring-only __init__
    package = ".".join(parts[1:3]) if parts[1] == "core" else parts[1]
    if package in LAYERS:
        return LAYERS[package], package
    if parts[1] == "core":
        return -2, package  # a module of core/ outside its four layers: see test_core_is_four_layers
    return TOP, package


def _type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def _walk(node: ast.AST):
    """Every node under ``node``, leaving out the bodies of ``if TYPE_CHECKING:``."""
    for child in ast.iter_child_nodes(node):
        if _type_checking(child):
            yield from (n for s in child.orelse for n in [s, *_walk(s)])
            continue
        yield child
        yield from _walk(child)


def imports(path: Path, root: Path = PKG) -> set[str]:
    """The package's modules and packages that ``path`` imports, anywhere in it (functions included).

    ``from A import b`` counts as an import of ``A.b`` when that is a module, else of ``A``.
    """
    me = module_name(path, root).split(".")
    package = me if path.name == "__init__.py" else me[:-1]
    top = root.name
    found = set()
    for node in _walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == top)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
            elif node.module and node.module.split(".")[0] == top:
                base = node.module
            else:
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if _module_path(sub, root) is not None else base)
    return found


def _module_path(module: str, root: Path = PKG) -> Path | None:
    rel = Path(*module.split(".")[1:])
    for candidate in (root / rel.with_suffix(".py"), root / rel / "__init__.py"):
        if str(rel) != "." and candidate.is_file():
            return candidate
    return root / "__init__.py" if module == root.name else None


def against_layering(me: str, targets) -> list[str]:
    my_layer, my_pkg = layer(me)
    bad = []
    for target in targets:
        t_layer, t_pkg = layer(target)
        if my_layer == -1 or t_layer == -1:
            continue
        shared = sum(1 for rank in LAYERS.values() if rank == my_layer) > 1
        if t_layer > my_layer or t_layer == -2 or (t_layer == my_layer and shared and t_pkg != my_pkg):
            bad.append(f"{me} -> {target}")
    return bad


def import_graph(root: Path = PKG) -> dict[str, set[str]]:
    return {module_name(p, root): imports(p, root) for p in sorted(root.rglob("*.py"))}


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The circles of ``graph`` (its strongly connected components of two or more modules, or a module
    importing itself), each sorted, found by Tarjan's algorithm."""
    index, low, on_stack, stack, cycles = {}, {}, set(), [], []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph.get(v, ()):
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(cycles)


def too_many_parameters(path: Path, root: Path = PKG, limit: int = MAX_PARAMS) -> list[str]:
    """Functions of ``path`` (methods and nested functions included) with more than ``limit`` parameters,
    not counting ``self``/``cls``, ``*args``/``**kwargs``, and a config or policy (by name or annotation)."""
    over = []
    for fn in ast.walk(ast.parse(path.read_text())):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        args = [*fn.args.posonlyargs, *fn.args.args, *fn.args.kwonlyargs]
        n = sum(1 for a in args if not _exempt(a))
        if n > PARAM_EXCEPTIONS.get(f"{path.relative_to(root.parent)}: {fn.name}", limit):
            over.append(f"{path.relative_to(root.parent)}:{fn.lineno}: {fn.name} takes {n}")
    return over


def _exempt(arg: ast.arg) -> bool:
    if arg.arg in ("self", "cls") or arg.arg.endswith(("config", "policy", "cfg")):
        return True
    note = ast.unparse(arg.annotation) if arg.annotation is not None else ""
    return any(word in note for word in ("Config", "Policy"))


# --------------------------------------------------------------------------- the package as it is
def test_no_upward_or_sideways_imports():
    bad = [line for me, targets in import_graph().items() for line in against_layering(me, targets)]
    assert not bad, "imports against the layering:\n" + "\n".join(bad)


def test_no_import_circles():
    cycles = import_cycles(import_graph())
    assert not cycles, "modules that import each other (at module level or in a function):\n" + "\n".join(
        " -> ".join(c) for c in cycles)


def test_the_library_never_imports_the_command_line():
    bad = [f"{module_name(p)} -> {t}" for p in PKG.rglob("*.py") if "cli" not in p.parts and p.name != "__main__.py"
           for t in imports(p) if t.startswith("neuroinspect.cli")]
    assert not bad, bad


def test_core_is_four_layers_and_every_package_has_a_rank():
    core = PKG / "core"
    assert sorted(p.name for p in core.glob("*.py")) == ["__init__.py"], "a module of core/ belongs in a layer"
    layers = sorted(f"core.{p.name}" for p in core.iterdir() if (p / "__init__.py").is_file())
    assert layers == sorted(k for k in LAYERS if k.startswith("core."))
    packages = {p.name for p in PKG.iterdir() if (p / "__init__.py").is_file()} - {"core"}
    assert packages <= set(LAYERS), f"give these packages a rank in LAYERS: {sorted(packages - set(LAYERS))}"


def test_the_three_stages_are_packages():
    for stage in ("find", "show", "fix"):
        assert (PKG / stage / "__init__.py").is_file()
    assert not any(p.name in {"explain.py", "edit.py", "visualize"} for p in PKG.iterdir())  # the old flat layout


def test_no_function_takes_more_than_eight_parameters_besides_a_config_or_policy():
    over = [line for path in sorted(PKG.rglob("*.py")) for line in too_many_parameters(path)]
    assert not over, "group these parameters in a config or a small dataclass:\n" + "\n".join(over)


# --------------------------------------------------------------------------- the checkers themselves
def test_the_checker_flags_upward_and_sideways_arrows():
    assert against_layering("neuroinspect.core.base.io", {"neuroinspect.fix.compare"})  # up
    assert against_layering("neuroinspect.core.base.io", {"neuroinspect.core.runtime.device"})  # base -> runtime
    assert against_layering("neuroinspect.core.runtime.device", {"neuroinspect.core.data.images"})
    assert against_layering("neuroinspect.core.data.images", {"neuroinspect.core.model.models"})  # data < model
    assert against_layering("neuroinspect.core.model.probe", {"neuroinspect.synthetic.fakedata"})
    assert against_layering("neuroinspect.find.ranking", {"neuroinspect.show.render"})  # sideways between stages
    assert against_layering("neuroinspect.synthetic.scenes", {"neuroinspect.find.ranking"})
    assert against_layering("neuroinspect.report", {"neuroinspect.demo"})
    assert against_layering("neuroinspect.find.ranking", {"neuroinspect.core.stray"})  # core/ outside its layers
    assert not against_layering("neuroinspect.fix.edit", {"neuroinspect.find.importance", "neuroinspect.core.base.io"})
    assert not against_layering("neuroinspect.core.model.features",
                                {"neuroinspect.core.data.images", "neuroinspect.core.runtime.device"})
    assert not against_layering("neuroinspect.core.data.files", {"neuroinspect.core.data.registry"})  # same package
    assert not against_layering("neuroinspect.demo", {"neuroinspect.synthetic.scenes", "neuroinspect.pipeline"})
    assert not against_layering("neuroinspect.cli.demo", {"neuroinspect.demo"})
    assert "neuroinspect.core.base.errors" in imports(PKG / "core" / "base" / "io.py")
    assert "neuroinspect.core.runtime.distributed" in imports(PKG / "core" / "runtime" / "device.py")  # from pkg import mod


def test_the_checker_finds_circles_through_function_imports_and_skips_type_checking(tmp_path):
    pkg = tmp_path / "neuroinspect"
    (pkg / "a").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a" / "__init__.py").write_text("")
    (pkg / "a" / "x.py").write_text("from neuroinspect.a import y\n")
    (pkg / "a" / "y.py").write_text("def f():\n    from neuroinspect.a.z import g  # lazy: a reason\n")
    (pkg / "a" / "z.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import w\n"
                                    "def g():\n    from .x import h  # lazy: a reason\n")
    (pkg / "a" / "w.py").write_text("from . import x\n")
    graph = import_graph(pkg)
    assert graph["neuroinspect.a.z"] == {"neuroinspect.a.x"}  # the TYPE_CHECKING import is left out
    assert import_cycles(graph) == [["neuroinspect.a.x", "neuroinspect.a.y", "neuroinspect.a.z"]]
    assert import_cycles({"a": {"a"}, "b": set()}) == [["a"]]
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_the_checker_counts_parameters(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def ok(a, b, c, d, e, f, g, h, *args, config=None, policy: 'DevicePolicy' = None, **kw): pass\n"
                 "class C:\n    def m(self, a, b, c, d, e, f, g, h, i): pass\n"
                 "def cfg(a, b, c, d, e, f, g, h, render: 'RenderConfig'): pass\n")
    assert too_many_parameters(f, tmp_path) == [f"{tmp_path.name}/m.py:3: m takes 9"]
