"""kalm-eval's Hydra configuration, shipped inside the package as `kalm_eval.conf` (Hydra: `pkg://kalm_eval.conf`).

The YAML files live in the repository's top-level `conf/` (the project layout); pyproject.toml maps this folder to
the package `kalm_eval.conf`, so an installed wheel finds them from any working directory."""
