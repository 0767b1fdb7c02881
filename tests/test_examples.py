"""The notebook under examples/ runs from top to bottom (the demo's benchmark through the Python API)."""
from pathlib import Path

import pytest

from conftest import CORES

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.slow
def test_the_demo_benchmark_notebook_runs(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat", reason="the [test] extra installs nbformat")
    nbclient = pytest.importorskip("nbclient", reason="the [test] extra installs nbclient")
    from neuroinspect.synthetic.scenes import load_fashion_mnist

    try:
        load_fashion_mnist("t10k", cache_dir=tmp_path / "none")
    except Exception as err:  # no Debian package and no network
        pytest.skip(f"Fashion-MNIST is not available here: {err}")
    monkeypatch.setenv("OMP_NUM_THREADS", str(CORES))  # the kernel runs the real Lite0: every core (conftest)
    monkeypatch.setenv("MKL_NUM_THREADS", str(CORES))
    monkeypatch.setenv("NEUROINSPECT_EXAMPLE_FAST", "1")
    monkeypatch.setenv("NEUROINSPECT_EXAMPLE_OUT", str(tmp_path / "out"))
    nb = nbformat.read(EXAMPLES / "demo_benchmark.ipynb", as_version=4)
    nbclient.NotebookClient(nb, timeout=1200, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    html = [o["data"]["text/html"] for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
            if "text/html" in o.get("data", {})]
    assert len(html) >= 5  # the Inspector, the explanation, the pictures, the fix, the table and the run show as HTML
    assert any("data:image/png;base64," in h for h in html)
    assert (tmp_path / "out" / "debug" / "report.html").is_file()
    assert (tmp_path / "out" / "fix" / "edit.json").is_file()
