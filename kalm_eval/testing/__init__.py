"""Test and benchmark support shipped with kalm-eval: independent reference scorers (oracles), random models in
real shapes, the real Gemma 3 tokenizer from a GGUF package. Product code never imports this package (an
import-linter contract checks it); tests and scripts/ do."""
