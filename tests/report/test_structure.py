"""House rules of kalm_eval/report, checked on the source: small functions, no nonlocal flags, and no import of the
layers above it (pipeline, suite, cli), so the report reads records only through kalm_eval.result."""

from __future__ import annotations

import ast
from pathlib import Path

import kalm_eval.report

REPORT = Path(kalm_eval.report.__file__).parent
FORBIDDEN = ("kalm_eval.pipeline", "kalm_eval.suite", "kalm_eval.cli")
MAX_LINES = 60


def modules():
    for path in sorted(REPORT.glob("*.py")):
        yield path, ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def test_no_function_over_sixty_lines():
    long = [f"{path.name}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for path, tree in modules() for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > MAX_LINES]
    assert not long, long


def test_no_nonlocal():
    found = [f"{path.name}:{node.lineno}" for path, tree in modules() for node in ast.walk(tree) if isinstance(node, ast.Nonlocal)]
    assert not found, found


def test_report_does_not_import_the_layers_above_it():
    bad = []
    for path, tree in modules():
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            bad += [f"{path.name}:{node.lineno} {n}" for n in names if n.startswith(FORBIDDEN)]
            if isinstance(node, ast.ImportFrom) and node.module == "kalm_eval":
                bad += [f"{path.name}:{node.lineno} kalm_eval.{a.name}" for a in node.names
                        if f"kalm_eval.{a.name}".startswith(FORBIDDEN)]
    assert not bad, bad
