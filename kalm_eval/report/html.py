"""One page to open and share: report.html (every section of report.md) and compare.html (the gate and its
drill-down). Self-contained: inline CSS, plots embedded as base64 PNG, no script, no server, no network, no CDN.

Built from the same Section / Table objects the Markdown comes from, so the page and report.md never disagree.
Verdict cells (OK / OKish / FAIL, the gate's ok / REGRESSION) are coloured; every section is an element with
`id` = the section's file name (e.g. paper_table.beir) and every table row a <tr>, so a browser test can find them."""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Iterable
from pathlib import Path

from kalm_eval.report.render import Section, Table

CSS = """
body{font:14px/1.45 -apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif;margin:0;color:#1d2330;background:#fafbfc}
main{max-width:1500px;margin:0 auto;padding:24px 32px}
h1{font-size:24px;margin:0 0 8px}h2{font-size:19px;margin:32px 0 8px;border-bottom:2px solid #d5dbe5;padding-bottom:4px}
h3{font-size:15px;margin:20px 0 6px}h4{font-size:14px;margin:14px 0 4px;color:#445}
section{margin-bottom:28px}
ul.meta,ul.notes{margin:4px 0 10px 18px;padding:0;color:#4a5263;font-size:12.5px}
nav{background:#fff;border:1px solid #d5dbe5;border-radius:6px;padding:8px 14px;margin:12px 0}
nav a{margin-right:14px;white-space:nowrap;color:#2456a4;text-decoration:none}
.scroll{overflow-x:auto}
table{border-collapse:collapse;background:#fff;font-size:12.5px;margin:6px 0}
th,td{border:1px solid #d9dee7;padding:3px 7px;text-align:right;vertical-align:top}
th{background:#eef1f6;position:sticky;top:0}
td.label,th.label{text-align:left}
td.text{text-align:left;max-width:520px}
td.v-ok{background:#d8f3dc;color:#1b4d2b}td.v-okish{background:#fff1c2;color:#5c4800}
td.v-fail{background:#fbd3d3;color:#7a1010;font-weight:600}
td.v-reg{background:#fbd3d3;color:#7a1010;font-weight:600}td.v-pass{background:#d8f3dc;color:#1b4d2b}
figure{margin:10px 0}figure img{max-width:100%;border:1px solid #d5dbe5;background:#fff}
figcaption{font-size:12px;color:#4a5263}
.verdict{display:inline-block;padding:2px 10px;border-radius:4px;font-weight:600}
.verdict.pass{background:#d8f3dc;color:#1b4d2b}.verdict.fail{background:#fbd3d3;color:#7a1010}
.verdict.refused{background:#e2e3e8;color:#333}
.warn{background:#fff7df;border-left:4px solid #e0b000;padding:6px 12px}
blockquote{margin:4px 0;color:#2c3440}
"""

_VERDICT = re.compile(r"(?:^|[\s·])(OKish|OK|FAIL)\s*$")
_CLASSES = {"OK": "v-ok", "OKish": "v-okish", "FAIL": "v-fail", "REGRESSION": "v-reg", "ok": "v-pass"}


def esc(text) -> str:
    return html.escape(str(text), quote=True)


def cell_class(text: str) -> str:
    """The verdict class of a cell: OK / OKish / FAIL at its end (a paper cell or a Verdict column), or the gate's
    status (ok / REGRESSION)."""
    stripped = str(text).strip()
    if stripped in ("REGRESSION", "ok"):
        return _CLASSES[stripped]
    found = _VERDICT.search(stripped)
    return _CLASSES[found.group(1)] if found else ""


def table_html(table: Table, level: int = 3) -> str:
    frame = table.frame
    n_label = max(1, table.label_cols)
    heads = "".join(f'<th class="{"label" if i < n_label else ""}">{esc(h)}</th>' for i, h in enumerate(frame.columns))
    rows = []
    for values in frame.itertuples(index=False):
        cells = []
        for i, value in enumerate(values):
            classes = " ".join(c for c in ("label" if i < n_label else "", cell_class(value)) if c)
            cells.append(f'<td class="{classes}">{esc(value)}</td>' if classes else f"<td>{esc(value)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    if not rows:
        rows.append(f'<tr><td class="label" colspan="{len(frame.columns)}">(no rows)</td></tr>')
    title = f"<h{level}>{esc(table.title)}</h{level}>" if table.title else ""
    notes = "".join(f"<li>{esc(n)}</li>" for n in table.notes)
    return (f'{title}<div class="scroll"><table class="data"><thead><tr>{heads}</tr></thead><tbody>'
            + "".join(rows) + "</tbody></table></div>" + (f'<ul class="notes">{notes}</ul>' if notes else ""))


def image_html(path: Path) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return (f'<figure><img alt="{esc(Path(path).stem)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{esc(Path(path).name)}</figcaption></figure>")


def section_html(section: Section) -> str:
    parts = [f'<section id="{esc(section.name)}" data-section="{esc(section.name)}"><h2>{esc(section.title)}</h2>']
    parts += [f"<p>{esc(line)}</p>" for line in section.intro]
    parts += [table_html(t) for t in section.tables]
    parts += [image_html(p) for p in section.images if Path(p).exists()]
    return "".join(parts) + "</section>"


def page(title: str, body: str) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{esc(title)}</title><style>{CSS}</style></head><body><main>{body}</main></body></html>\n")


def meta_list(items: Iterable[str]) -> str:
    return '<ul class="meta">' + "".join(f"<li>{esc(i)}</li>" for i in items) + "</ul>"


def report_page(sections: list[Section], meta: list[str], warnings: list[str]) -> str:
    """report.html: the header lines of report.md, its warnings, a contents bar and every section."""
    nav = "<nav>" + "".join(f'<a href="#{esc(s.name)}">{esc(s.title)}</a>' for s in sections) + "</nav>"
    warn = ""
    if warnings:
        warn = '<div class="warn"><h3>Warnings</h3>' + meta_list(warnings) + "</div>"
    return page("kalm-eval report", "<h1>kalm-eval report</h1>" + meta_list(meta) + warn + nav
                + "".join(section_html(s) for s in sections))
