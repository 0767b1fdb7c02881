"""The package's layers: core ← find, show ← fix ← report ← pipeline/session/demo/train ← cli.

Every import inside the library (at module level or inside a function) must point down or
sideways within its own package; no library module may import the command line.
"""
import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "src" / "neuroinspect"
LAYERS = {"core": 0, "find": 1, "show": 1, "fix": 2, "report": 3, "cli": 5, "__main__": 5}  # __main__: `python -m neuroinspect`
TOP = 4  # modules directly under neuroinspect/: session, demo, pipeline, train


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> tuple[int, str]:
    parts = module.split(".")
    if len(parts) == 1:
        return -1, ""  # the root package: only lazy re-exports, allowed anywhere
    if parts[1] in LAYERS:
        return LAYERS[parts[1]], parts[1]
    return TOP, parts[1]


def imports(path: Path) -> set[str]:
    me = module_name(path).split(".")
    package = me if path.name == "__init__.py" else me[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("neuroinspect"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                found.add(".".join(base + ([node.module] if node.module else [])))
            elif node.module and node.module.startswith("neuroinspect"):
                found.add(node.module)
    return found


def against_layering(me: str, targets) -> list[str]:
    my_layer, my_pkg = layer(me)
    bad = []
    for target in targets:
        t_layer, t_pkg = layer(target)
        if my_layer == -1 or t_layer == -1:
            continue
        if t_layer > my_layer or (t_layer == my_layer and my_layer in (1, 2) and t_pkg != my_pkg):
            bad.append(f"{me} -> {target}")
    return bad


def test_no_upward_or_sideways_imports():
    bad = [line for path in sorted(PKG.rglob("*.py")) for line in against_layering(module_name(path), imports(path))]
    assert not bad, "imports against the layering:\n" + "\n".join(bad)


def test_the_library_never_imports_the_command_line():
    bad = [f"{module_name(p)} -> {t}" for p in PKG.rglob("*.py") if "cli" not in p.parts and p.name != "__main__.py"
           for t in imports(p) if t.startswith("neuroinspect.cli")]
    assert not bad, bad


def test_the_three_stages_are_packages():
    for stage in ("find", "show", "fix"):
        assert (PKG / stage / "__init__.py").is_file()
    assert not any(p.name in {"explain.py", "edit.py", "visualize"} for p in PKG.iterdir())  # the old flat layout


def test_the_checker_flags_upward_and_sideways_arrows():
    assert against_layering("neuroinspect.core.io", {"neuroinspect.fix.compare"})  # up
    assert against_layering("neuroinspect.find.ranking", {"neuroinspect.show.render"})  # sideways between stages
    assert against_layering("neuroinspect.report", {"neuroinspect.demo"})
    assert not against_layering("neuroinspect.fix.edit", {"neuroinspect.find.importance", "neuroinspect.core.io"})
    assert not against_layering("neuroinspect.cli.demo", {"neuroinspect.demo"})
    assert "neuroinspect.core.errors" in imports(PKG / "core" / "io.py")
