"""The import structure the code promises: stages import downwards only, product code never imports the test
support package (import-linter contracts in pyproject.toml), and no import cycle anywhere in kalm_eval."""

from __future__ import annotations

import logging

import grimp
from importlinter.cli import lint_imports

from tests.conftest import REPO_ROOT


def test_import_linter_contracts_hold():
    # lint_imports configures logging (dictConfig disables the loggers that exist already): restore them, or later
    # tests that read kalm_eval's log records through caplog see nothing.
    loggers = [logging.getLogger(name) for name in list(logging.root.manager.loggerDict)]
    disabled = {logger: logger.disabled for logger in loggers if isinstance(logger, logging.Logger)}
    try:
        assert lint_imports(config_filename=str(REPO_ROOT / "pyproject.toml")) == 0
    finally:
        for logger, state in disabled.items():
            logger.disabled = state


def test_no_import_cycle_in_kalm_eval():
    graph = grimp.build_graph("kalm_eval")
    modules = sorted(graph.modules)
    index = {m: i for i, m in enumerate(modules)}
    edges = {m: [n for n in graph.find_modules_directly_imported_by(m) if n in index] for m in modules}
    # Tarjan's strongly connected components: a component of more than one module is a cycle
    order, low, stack, on_stack, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(module: str) -> None:
        order[module] = low[module] = counter[0]
        counter[0] += 1
        stack.append(module)
        on_stack.add(module)
        for target in edges[module]:
            if target not in order:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], order[target])
        if low[module] == order[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in modules:
        if module not in order:
            visit(module)
    assert cycles == []


def test_declared_dependencies_are_the_used_ones():
    """deptry: every import is declared, every declared package is imported (exceptions, with reasons, in
    pyproject.toml [tool.deptry])."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "deptry", "."], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
