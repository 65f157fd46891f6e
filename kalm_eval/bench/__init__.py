"""Benchmarks of the harness (the scripts in scripts/ are their command lines)."""
