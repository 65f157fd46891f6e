"""Tests of the benchmarks (kalm_eval/bench/; command lines in scripts/) pieces that need no timing."""
