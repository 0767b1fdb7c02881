"""Imports at module level show the dependency graph; an import inside a function must say why it is lazy."""
import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "src" / "neuroinspect"
SCANNED = [*(PKG / "core").rglob("*.py"), *(PKG / "synthetic").rglob("*.py"), *(PKG / "find").rglob("*.py"), *(PKG / "show").rglob("*.py"),
           *(PKG / "fix").rglob("*.py"), *(PKG / "report").rglob("*.py"), PKG / "session.py", PKG / "train.py",
           PKG / "pipeline.py", PKG / "demo.py"]


def unexplained_function_imports(path: Path, root: Path = PKG) -> list[str]:
    lines = path.read_text().splitlines()
    bad = []
    for fn in ast.walk(ast.parse(path.read_text())):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(fn):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                here, above = lines[node.lineno - 1], lines[node.lineno - 2] if node.lineno > 1 else ""
                if "lazy" not in here and "lazy" not in above:
                    bad.append(f"{path.relative_to(root)}:{node.lineno}: {here.strip()}")
    return bad


def test_function_level_imports_in_the_library_are_explained():
    bad = [line for path in SCANNED for line in unexplained_function_imports(path)]
    assert not bad, "import at module level, or say why it is lazy (# lazy: ...):\n" + "\n".join(bad)


def test_the_checker_flags_a_silent_function_import(tmp_path):
    f = PKG / "core" / "base" / "io.py"  # any real module: it has no function-level imports
    assert unexplained_function_imports(f) == []
    probe = tmp_path / "m.py"
    probe.write_text("def f():\n    import json\n    return json\n\ndef g():\n    import csv  # lazy: a reason\n")
    assert unexplained_function_imports(probe, tmp_path) == ["m.py:2: import json"]
