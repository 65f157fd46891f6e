"""One page: report.html (every section of report.md) and compare.html (the gate and its drill-down), self-contained,
rendered in a real headless browser (Debian's chromium): every section and every table row present, verdicts
coloured, plots embedded, no console message. Browser checks skip with a visible reason when no chromium is found."""

from __future__ import annotations

import html
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from kalm_eval.report.build import build_report
from kalm_eval.report.compare import CompareOptions, compare_records
from kalm_eval.report.compare_render import to_html
from kalm_eval.report.html import cell_class
from kalm_eval.report.options import ReportOptions
from kalm_eval.result import discover

from .conftest import stable_seed, write_record

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
CHROMIUM = next((shutil.which(name) for name in BROWSERS if shutil.which(name)), None)
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary found (Debian: apt-get install -y "
                                                             "chromium); headless-browser checks of report.html skipped")
CORE_SECTIONS = {"paper_table.beir", "compression_sweep.beir", "latency", "baselines", "cascade", "roc_auc"}
CONSOLE = re.compile(r":CONSOLE[:(]|Uncaught|Failed to load resource")


class Dom(HTMLParser):
    """Sections (by data-section) with their text, <tr> count, verdict-coloured cells and images."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.sections: dict[str, dict] = {}
        self.current: str | None = None
        self.depth = 0
        self.images: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section" and "data-section" in attrs:
            self.current, self.depth = attrs["data-section"], 0
            self.sections[self.current] = {"text": [], "tr": 0, "verdicts": 0, "h2": ""}
        if tag == "section" and self.current:
            self.depth += 1
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        if self.current:
            here = self.sections[self.current]
            here["tr"] += tag == "tr"
            here["verdicts"] += tag == "td" and bool(re.search(r"\bv-", attrs.get("class") or ""))
            here["in_h2"] = tag == "h2"

    def handle_endtag(self, tag):
        if tag == "section" and self.current:
            self.depth -= 1
            if self.depth == 0:
                self.current = None

    def handle_data(self, data):
        if self.current:
            here = self.sections[self.current]
            here["text"].append(data)
            if here.get("in_h2"):
                here["h2"] += data
                here["in_h2"] = False


def parse(text: str) -> Dom:
    dom = Dom()
    dom.feed(text)
    return dom


def browse(page: Path, tmp: Path, *extra: str) -> tuple[str, str]:
    """(stdout: the DOM after rendering with --dump-dom, browser log) of `page` in headless chromium."""
    proc = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp / 'profile'}",
                           "--enable-logging=stderr", "--v=0", "--virtual-time-budget=3000", *extra,
                           page.resolve().as_uri()], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout, proc.stderr


def console_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if CONSOLE.search(line)]


@pytest.fixture(scope="module")
def full_report(tmp_path_factory):
    """Records that fill every report section: KaLM sizes x r on two BEIR datasets (with ROC-AUC), a Qwen3 baseline,
    a cascade, first stage only."""
    tmp = tmp_path_factory.mktemp("html")
    root = tmp / "results"
    for ds in ("beir/scifact", "beir/nfcorpus"):
        name = ds.replace("/", "__")
        for model in ("nano", "small"):
            for ratio in (1, 4, 32):
                write_record(root / name / f"{model}-r{ratio}", dataset=ds, model=model, ratio=ratio,
                             seed=stable_seed(ds, model, ratio), roc=(0.8 - 0.002 * ratio, 0.75, 300))
        write_record(root / name / "qwen", dataset=ds, model="qwen3_reranker_0.6b", seed=stable_seed(ds, "qwen"))
        write_record(root / name / "cascade", dataset=ds, model="small", seed=stable_seed(ds, "cascade"),
                     cascade=[{"depth": 100, "compression": 32}, {"depth": 20, "compression": 2}])
        write_record(root / name / "bm25", dataset=ds, model=None)
    out = build_report([root], tmp / "report", options=ReportOptions(compare_to="average"))
    return tmp, out


def test_report_html_is_self_contained_and_has_every_section(full_report):
    _, out = full_report
    text = out.report_html.read_text(encoding="utf-8")
    names = {s.name for s in out.sections}
    assert CORE_SECTIONS <= names  # the fixture fills every section the Markdown report can have
    assert "<script" not in text and "<link" not in text and not re.search(r"""(src|href)=["']?(https?:)?//""", text)
    assert "url(" not in text
    dom = parse(text)
    assert set(dom.sections) == names
    assert len(dom.images) == len(out.plots) >= 3 and all(s.startswith("data:image/png;base64,") for s in dom.images)
    md = out.report_md.read_text(encoding="utf-8")
    for section in out.sections:
        assert f"## {section.title}" in md and dom.sections[section.name]["h2"] == section.title


def _check_dom(dom: Dom, sections) -> None:
    for section in sections:
        got = dom.sections[section.name]
        text = html.unescape(" ".join(got["text"]))
        expected_rows = sum(max(len(t.frame), 1) + 1 for t in section.tables)
        assert got["tr"] == expected_rows, section.name
        for table in section.tables:
            for row in table.frame.itertuples(index=False):
                assert str(row[0]) in text, (section.name, row[0])  # every row (dataset, model, r) is on the page
            for header in table.frame.columns:
                assert str(header) in text, (section.name, header)  # every dataset column
        verdicts = sum(bool(cell_class(v)) for t in section.tables for row in t.frame.itertuples(index=False) for v in row)
        assert got["verdicts"] == verdicts, section.name


@needs_chromium
def test_report_html_renders_in_headless_chromium(full_report):
    tmp, out = full_report
    dom_text, log = browse(out.report_html, tmp, "--dump-dom")
    assert not console_lines(log), console_lines(log)
    dom = parse(dom_text)
    assert set(dom.sections) == {s.name for s in out.sections}
    _check_dom(dom, out.sections)
    paper = dom.sections["paper_table.beir"]
    assert paper["verdicts"] > 0 and "SciFact" in " ".join(paper["text"]) and "NFCorpus" in " ".join(paper["text"])
    shot = tmp / "report.png"
    browse(out.report_html, tmp, f"--screenshot={shot}", "--window-size=1400,2200", "--hide-scrollbars")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000


@needs_chromium
def test_console_check_can_fail(tmp_path):
    """The console check sees a page's console output (so a clean log above means something)."""
    page = tmp_path / "bad.html"
    page.write_text('<!DOCTYPE html><html><body><script>console.error("boom")</script></body></html>')
    _, log = browse(page, tmp_path, "--dump-dom")
    assert any("boom" in line for line in console_lines(log))


@pytest.fixture
def compare_page(tmp_path):
    base = write_record(tmp_path / "a", model="nano", values=np.linspace(0.2, 0.8, 300))
    cand = write_record(tmp_path / "b", model="nano", values=np.linspace(0.2, 0.8, 300)[::-1])
    result = compare_records(discover(base).records, discover(cand).records, CompareOptions(drilldown=4))
    page = tmp_path / "compare.html"
    page.write_text(to_html(result, [str(base)], [str(cand)]), encoding="utf-8")
    return page, result


def test_compare_html_has_the_drilldown(compare_page):
    page, result = compare_page
    text = page.read_text(encoding="utf-8")
    assert "<script" not in text and not re.search(r"""(src|href)=["']?(https?:)?//""", text)
    dom = parse(text)
    assert {"per-dataset", "drilldown"} <= set(dom.sections)
    [d] = result.drilldowns
    drill = html.unescape(" ".join(dom.sections["drilldown"]["text"]))
    assert f"{d.wins} wins / {d.ties} ties / {d.losses} losses" in drill
    assert all(c.query_id in drill for c in d.losses_top + d.gains_top)
    assert dom.sections["drilldown"]["tr"] == 2 * (1 + 4)


@needs_chromium
def test_compare_html_renders_in_headless_chromium(compare_page, tmp_path):
    page, result = compare_page
    dom_text, log = browse(page, tmp_path, "--dump-dom")
    assert not console_lines(log), console_lines(log)
    dom = parse(dom_text)
    assert dom.sections["per-dataset"]["tr"] == 1 + len(result.rows) + len(result.averages)
    assert dom.sections["drilldown"]["tr"] == 2 * (1 + 4)
