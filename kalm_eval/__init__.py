"""kalm-eval: evaluation harness for compressed-passage (FBNL) rerankers such as KaLM-Reranker-V1.

Data flow, one subpackage per stage (imports only point down this list):
    data -> retrieval (first-stage candidates) -> fbnl (passages: encode + pool + cache; scoring) -> metrics -> report
"""

__version__ = "0.1.0"
