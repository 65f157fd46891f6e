"""Rerank stage: the Reranker interface (base.py), its families and the engine that feeds them passage chunks."""
