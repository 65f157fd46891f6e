"""kalm-eval: evaluation harness for compressed-passage (FBNL) rerankers such as KaLM-Reranker-V1.

Data flow, one subpackage per stage (imports only point down this list; import-linter checks it):
    data -> retrieval (first-stage candidates) -> rerank (passage chunks; fbnl: encode + pool + score) -> metrics
    -> result records -> report

Python API: `kalm_eval.evaluate(*overrides)` and `kalm_eval.load_results(paths)` (kalm_eval/api.py)."""

__version__ = "0.2.0"


def __getattr__(name: str):
    # Lazy, so `import kalm_eval` stays cheap and the package root imports no stage at import time.
    if name in ("evaluate", "load_results"):
        import importlib

        return getattr(importlib.import_module("kalm_eval.api"), name)
    raise AttributeError(f"module 'kalm_eval' has no attribute {name!r}")
