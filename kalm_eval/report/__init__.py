"""Reports and regression gate over stored result records (offline).

- `results`: discover and load result records (metrics.json + per_query.tsv) from whole trees, sweeps included;
- `paper`: the paper's published numbers (results/paper/<version>/*.yaml), with tolerances and verdicts;
- `tables`, `render`: paper table, compression sweep, latency vs quality -> Markdown, CSV, LaTeX;
- `plots`: nDCG@10 vs r per size, quality vs latency (Pareto);
- `compare`: paired per-query tests, Holm correction, protocol check (the `kalm-eval-compare` gate);
- `build`, `cli`: the `kalm-eval-report` and `kalm-eval-compare` console scripts."""
