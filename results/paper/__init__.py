"""Published numbers of KaLM-Reranker-V1, shipped inside the package as `kalm_eval.paper` (see README.md here).

The YAML files live in the repository's `results/paper/`; pyproject.toml maps this folder to the package
`kalm_eval.paper`, read through importlib.resources."""
