"""The README's "Python API" section runs as it is: its cells, executed in order in one namespace.

Cells whose first line is ``# not run by tests/test_readme.py`` are skipped (they need a finished demo run).
"""
import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"
SKIP = "# not run by tests/test_readme.py"


def python_api_cells() -> list[str]:
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Python API\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_the_section_has_cells_and_skips_only_the_demo_one():
    cells = python_api_cells()
    assert len(cells) >= 6
    assert [c for c in cells if c.startswith(SKIP)] == [c for c in cells if "demo.load" in c]


def test_the_python_api_cells_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the cells write into out/
    cells = [c for c in python_api_cells() if not c.startswith(SKIP)]
    ns: dict = {"__name__": "readme"}
    exec(compile(cells[0], "README.md: cell 1", "exec"), ns)  # the stand-in model and data
    model = ns["model"]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    probe_cell = next(i for i, c in enumerate(cells) if "Probe(model" in c)
    for i, cell in enumerate(cells[1:], 1):
        if i == probe_cell:  # what the text promises, before the bare Probe (which sets eval mode) runs
            assert model.training and all(torch.equal(before[k], v) for k, v in model.state_dict().items())
        exec(compile(cell, f"README.md: cell {i + 1}", "exec"), ns)
    assert ns["fixed_model"] is not model and isinstance(ns["fixed_model"], torch.nn.Module)
    assert (tmp_path / "out" / "edit" / "edit.json").is_file() and ns["run"].report.is_file()
    assert (tmp_path / "out" / "pictures" / "visualizations.json").is_file()
    assert ns["edit"].method == "regroup" and ns["ratio"].method == "ratio"
    assert [r.method for r in ns["table"].rows] == ["original", "regroup", "erm", "dfr"]
