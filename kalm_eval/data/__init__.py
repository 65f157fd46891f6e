"""Data stage: benchmark datasets (queries, qrels, corpus by id) and their quirks."""

from kalm_eval.data.dataset import Dataset
from kalm_eval.data.quirks import Quirks

__all__ = ["Dataset", "Quirks"]
