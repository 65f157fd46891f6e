"""Tests of the model side: kalm_eval.fbnl."""
