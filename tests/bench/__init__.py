"""Tests of the cost benchmark (scripts/bench_cost.py) pieces that need no timing."""
