"""Fixtures for the fbnl (model side) tests. Everything runs offline on CPU.

Tests marked `slow` (registered in pyproject.toml) run with plain `pytest`; CI deselects them (-m "not slow")."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never touch the network
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch

from kalm_eval.fbnl.model import LoadedModel
from kalm_eval.fbnl.synthetic import build_tiny_model
from kalm_eval.fbnl.tiny_tokenizer import build_tiny_tokenizer
from kalm_eval.testing.nano import build_random_nano


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """One intra-op thread: on a shared 2-core machine, OpenMP's second thread mostly waits for a busy core
    (a tiny matmul took 50x longer with 2 threads under load). Restored after each test."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny() -> LoadedModel:
    return build_tiny_model(seed=0)


@pytest.fixture(scope="session")
def nano_fp32() -> LoadedModel:
    """Random weights in the exact Nano shape, fp32, with the tiny tokenizer (ids are just ids here)."""
    return build_random_nano(dtype="float32", seed=0, tokenizer=build_tiny_tokenizer())
