"""The HTML report: every section from hand-written run files, escaping, numbers, and a real browser."""
from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import markupsafe
import numpy as np
import pytest
from PIL import Image

from neuroinspect.core.base.errors import NeuroInspectError
from neuroinspect.report import build_report, fmt_num, fmt_pct
from runfiles import AFTER, BEFORE, EVIL, _metrics, make_run

def _data_values(page: str, table_id: str) -> list[float]:
    m = re.search(rf'<table id="{re.escape(table_id)}"[^>]*>(.*?)</table>', page, re.S)
    assert m, f"table {table_id} missing"
    return [float(v) for v in re.findall(r'data-value="([^"]+)"', m.group(1))]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    files = make_run(root)
    out = build_report(root)
    return root, files, out


def test_every_section_and_files(run_dir):
    root, files, out = run_dir
    assert out == root / "report.html" and out.is_file()
    page = out.read_text(encoding="utf-8")
    for sec in ("summary", "run", "accuracy", "mistakes", "ranking", "neurons", "edit", "compare"):
        assert f'<section id="{sec}">' in page, sec
    for chart in ("metrics_per_class.png", "metrics_per_group.png", "edit_per_group.png", "edit_curves.png", "compare.png"):
        assert (root / "report_assets" / chart).stat().st_size > 1000
        assert f'src="report_assets/{chart}"' in page
    # nothing left over from the atomic writes
    assert not list(root.glob(".report.html*"))


def test_user_text_is_escaped(run_dir):
    root, files, out = run_dir
    page = out.read_text(encoding="utf-8")
    assert "<script" not in page.lower()
    assert str(markupsafe.escape(EVIL)) in page  # shown, as text
    assert "no CLIP weights &lt;offline&gt;" in page
    # a path with & < > in it is escaped in text and percent-encoded in src
    assert "img 0&amp;&lt;x&gt;.png" in page
    assert "&<x>" not in page


def test_numbers_match_json(run_dir):
    root, files, out = run_dir
    page = out.read_text(encoding="utf-8")
    assert _data_values(page, "per-class") == list(BEFORE["per_class"].values())
    assert _data_values(page, "per-group") == list(BEFORE["per_group"].values())
    rk = files["ranking"]
    got = _data_values(page, "ranking-insufficient")
    assert got == [v for r in rk["insufficient"] for v in (r["ratio"], r["weight"])]  # importance: left out
    assert _data_values(page, "ranking-excessive") == [29.7297, -0.2468]
    for r in rk["insufficient"]:
        assert f"{fmt_num(r['ratio'], 1)} %" in page and fmt_num(r["importance"], 3) not in page
    # edit: per-group before/after pairs
    per_group = _data_values(page, "edit-per-group")
    assert per_group == [v for g in BEFORE["per_group"] for v in (BEFORE["per_group"][g], AFTER["per_group"][g])]
    summary = _data_values(page, "edit-summary")
    assert summary[:2] == [BEFORE["accuracy"], AFTER["accuracy"]]
    assert summary[-2:] == [0.265, 0.555]  # worst group before -> after
    # compare: every row, every metric (None shows as a dash)
    m = re.search(r'<table id="compare-table">(.*?)</table>', page, re.S)
    cells = re.findall(r'data-value="([^"]*)"', m.group(1))
    expect = []
    for r in files["compare"]["rows"]:
        expect += ["" if r[k] is None else repr(float(r[k])) for k in ("avg_acc", "class_acc", "worst_class_acc", "worst_group_acc")]
    assert cells == expect
    # headline: worst group and average accuracy before -> after
    summary_html = page.split('<section id="summary">')[1].split("</section>")[0]
    assert f"{fmt_pct(0.265)}<span class=\"arrow\">→</span>{fmt_pct(0.555)}" in summary_html
    assert f"{fmt_pct(0.8125)}<span class=\"arrow\">→</span>{fmt_pct(0.8275)}" in summary_html
    assert "+29.0 pts" in summary_html
    # neuron cards: numbers of the visualisations
    for im in files["vis"]["images"]:
        assert f'data-value="{im["activation"]!r}"' in page
        assert fmt_num(im["crs"], 2) in page
    assert _data_values(page, "edit-picked") == [0.8765, 0.4321]
    assert page.count('class="card"') == 2
    assert "chosen for the edit" in page.split('id="neuron-311"')[1].split('class="card"')[0]
    assert "chosen for the edit" not in page.split('id="neuron-17"')[1].split('class="card"')[0]


def test_images_referenced_exist_and_are_relative(run_dir):
    root, files, out = run_dir
    page = out.read_text(encoding="utf-8")
    srcs = re.findall(r'<img[^>]* src="([^"]+)"', page)
    assert len(srcs) >= 5 + 4 * 2 + 2 + 5  # thumbnails, visualisations, strips, charts
    from urllib.parse import unquote

    for s in srcs:
        assert not s.startswith(("/", "http:", "https:", "file:")), s
        assert (root / unquote(html.unescape(s))).is_file(), s
    # the mistake whose image is missing is listed without an <img>
    assert page.count("image not found") == 1
    assert len(list((root / "report_assets" / "mistakes").glob("*.png"))) == 5


def test_flat_layout_and_missing_pieces(tmp_path):
    make_run(tmp_path, nested=False)
    (tmp_path / "compare.json").unlink()
    (tmp_path / "edit.json").unlink()
    page = build_report(tmp_path).read_text(encoding="utf-8")
    assert '<section id="ranking">' in page and '<section id="neurons">' in page
    assert '<section id="compare">' not in page and '<section id="edit">' not in page
    # the headline falls back to the plain metrics
    assert "worst group" in page.split('<section id="summary">')[1].split("</section>")[0]
    assert _data_values(page, "per-class") == list(BEFORE["per_class"].values())


def test_only_metrics_and_a_broken_file(tmp_path):
    (tmp_path / "metrics.json").write_text(json.dumps(_metrics(0.5, {"a": 0.5, "b": 0.5}, {})))
    (tmp_path / "ranking.json").write_text("{not json")
    page = build_report(tmp_path).read_text(encoding="utf-8")
    assert '<section id="accuracy">' in page and '<table id="per-group">' not in page
    assert "ranking.json could not be read" in page and '<section id="ranking">' not in page


def test_bad_run_dirs(tmp_path):
    with pytest.raises(NeuroInspectError, match="does not exist"):
        build_report(tmp_path / "nope")
    with pytest.raises(NeuroInspectError, match="holds none of"):
        build_report(tmp_path)


def test_cli_rebuilds(run_dir, capsys):
    from neuroinspect.cli import main

    root, files, out = run_dir
    out.unlink()
    assert main(["report", str(root)]) == 0
    assert capsys.readouterr().out.strip().endswith(str(out))
    assert out.is_file()
    assert main(["report", str(root / "nope")]) == 2


# --------------------------------------------------------------------------- headless browser
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Where the browser test leaves its screenshot (to look at, or to copy into the docs).
SCREENSHOT = Path(os.environ.get("NEUROINSPECT_REPORT_SCREENSHOT", Path(tempfile.gettempdir()) / "neuroinspect-report-screenshot.png"))
PROBE_SCRIPT = """<script>
window.__errors = [];
window.addEventListener('error', function (e) {
  var t = e.target;
  window.__errors.push(t && t.tagName ? 'resource failed: ' + (t.src || t.href) : 'error: ' + e.message);
}, true);
var __ce = console.error;
console.error = function () { window.__errors.push('console.error: ' + Array.prototype.join.call(arguments, ' ')); __ce.apply(console, arguments); };
window.addEventListener('load', function () {
  var bad = [], imgs = document.images;
  for (var i = 0; i < imgs.length; i++) {
    imgs[i].loading = 'eager';
    if (!imgs[i].complete || imgs[i].naturalWidth === 0) bad.push(imgs[i].getAttribute('src'));
  }
  var out = document.createElement('pre');
  out.id = '__probe';
  out.textContent = JSON.stringify({images: imgs.length, bad: bad, errors: window.__errors});
  document.body.appendChild(out);
});
</script>"""


def _chromium(args, user_dir, timeout=90):
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={user_dir}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_report_in_headless_chromium(run_dir, tmp_path):
    root, files, out = run_dir
    page = out.read_text(encoding="utf-8")
    # 1) a copy of the page with a probe script (the CSP is relaxed only in the copy) dumps what failed
    probe = page.replace("default-src 'none';", "default-src 'none'; script-src 'unsafe-inline';", 1)
    probe = probe.replace("<head>", "<head>" + PROBE_SCRIPT, 1).replace('loading="lazy"', "")
    test_copy = root / "_probe_report.html"
    test_copy.write_text(probe, encoding="utf-8")
    try:
        res = _chromium(["--virtual-time-budget=10000", "--dump-dom", test_copy.as_uri()], tmp_path / "profile1")
    finally:
        test_copy.unlink()
    m = re.search(r'<pre id="__probe">(.*?)</pre>', res.stdout, re.S)
    assert m, f"no probe output from chromium; stderr: {res.stderr[-2000:]}"
    result = json.loads(html.unescape(m.group(1)))
    assert result["images"] >= 20
    assert result["bad"] == [], result
    assert result["errors"] == [], result

    # 2) the real page: no console messages at all (CSP violations, failed loads) in the browser log
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    res = _chromium(["--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000",
                     f"--screenshot={SCREENSHOT}", "--window-size=1280,2400", out.as_uri()], tmp_path / "profile2")
    console = [ln for ln in res.stderr.splitlines() if "CONSOLE" in ln or "Content Security Policy" in ln
               or "ERR_FILE_NOT_FOUND" in ln]
    assert console == [], console
    assert SCREENSHOT.is_file() and SCREENSHOT.stat().st_size > 10_000
    shot = np.asarray(Image.open(SCREENSHOT).convert("RGB"))
    assert shot.shape[1] == 1280 and shot.std() > 10  # not a blank page


def test_many_classes_fold_and_chart_the_lowest(tmp_path):
    per_class = {f"class {i:03d}": (i % 50) / 50 for i in range(120)}
    (tmp_path / "metrics.json").write_text(json.dumps(_metrics(0.5, per_class, {})))
    page = build_report(tmp_path).read_text(encoding="utf-8")
    assert "<details><summary>all 120 classes</summary>" in page
    assert _data_values(page, "per-class") == list(per_class.values())
    chart = Image.open(tmp_path / "report_assets" / "metrics_per_class.png")
    assert chart.height < 2000  # 30 bars, not 120


def test_what_the_newcomer_tripped_on(tmp_path):
    """One seed shown under a mean of several says so; settings in words; the mistakes' split; headers wrap."""
    root = tmp_path / "run"
    files = make_run(root)
    comp = {**files["compare"], "seeds": [0, 1, 2],
            "rows": [{**r, "per_group": {"Trouser/B-indoor": 0.5}} for r in files["compare"]["rows"]]}
    (root / "compare" / "compare.json").write_text(json.dumps(comp))
    edit = {**files["edit"], "method": "rebalance", "chosen": {"l2": 0.001, "q": None}}
    (root / "edit" / "edit.json").write_text(json.dumps(edit))
    page = build_report(root).read_text(encoding="utf-8")
    section = page.split('<section id="edit">')[1].split("</section>")[0]
    assert "seed 0" in section and "mean of 3 seeds" in section
    assert "L2 penalty 0.001; pseudo-groups split at the midpoint of each class" in section
    assert "q = None" not in section and re.search(r"read\.\s+Settings", section)
    mistakes = page.split('<section id="mistakes">')[1].split("</section>")[0]
    assert "of the <b>val</b> split" in mistakes and page.index('id="ranking"') < page.index('id="mistakes"')
    assert "Trouser/<wbr>B-indoor" in page and 'class="chart wide"' in page


def test_an_unchanged_chart_is_not_drawn_again(tmp_path, monkeypatch):
    """A run rebuilds its report after each stage: a chart from the same inputs is kept, a changed input redraws."""
    from neuroinspect.report import charts

    drawn = []
    figure = charts._figure

    def counting(path, *args, **kwargs):
        drawn.append(path.name)
        return figure(path, *args, **kwargs)

    monkeypatch.setattr(charts, "_figure", counting)
    path = tmp_path / "assets" / "bars.png"
    charts.bar_chart({"accuracy": {"a": 0.5, "b": 0.9}}, "accuracy per class", path)
    first = path.read_bytes()
    charts.bar_chart({"accuracy": {"a": 0.5, "b": 0.9}}, "accuracy per class", path)
    assert drawn == ["bars.png"] and path.read_bytes() == first
    charts.bar_chart({"accuracy": {"a": 0.6, "b": 0.9}}, "accuracy per class", path)  # a changed value
    charts.bar_chart({"accuracy": {"a": 0.6, "b": 0.9}}, "accuracy per class", path, highlight="a")  # a changed option
    assert drawn == ["bars.png"] * 3 and path.read_bytes() != first
    path.unlink()  # a chart removed by hand is drawn again, whatever its key says
    charts.bar_chart({"accuracy": {"a": 0.6, "b": 0.9}}, "accuracy per class", path, highlight="a")
    assert len(drawn) == 4 and path.is_file()


def test_the_palette_gives_every_method_its_own_colour():
    """The comparison chart draws the original head and every registered fix method: no two may share a colour."""
    from neuroinspect.fix.config import FIX_METHODS
    from neuroinspect.report.charts import PALETTE

    assert len(set(PALETTE)) == len(PALETTE) >= 1 + len(list(FIX_METHODS))
