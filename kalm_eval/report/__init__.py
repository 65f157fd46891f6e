"""Reports and the regression gate over stored result records (offline). Records are read only through
kalm_eval.result (ResultRecord, discover); everything else starts from one tidy DataFrame.

- `frame`: records -> tidy DataFrame (`load_results`); `labels`: model / first-stage / plan names from a record;
- `aggregate`: the row model (conditions) and the aggregation rules (LMEB mean over subsets, means over datasets);
- `paper`, `matching`: published numbers (package kalm_eval.paper) and which paper row a result is compared with;
- tables, one per module: `paper_table`, `sweep_table`, `latency_table`, `baselines_table`, `roc_table`,
  `cascade_table`, `overview`; `render`: pandas Markdown / CSV / LaTeX; `plots`: matplotlib PNGs;
- `summary`: the suite summary (summary.json + summary.md) the suite runner writes;
- `stats`: paired tests (scipy), Holm, stratified macro-average test; `protocol`: the protocol check;
  `compare`: pairing + gate; `compare_render`: its outputs;
- `cost_benchmark`: the cost-benchmark file schema; `mteb_export`: mteb's results layout;
- `build`, `options`, `cli`: the `kalm-eval-report` and `kalm-eval-compare` console scripts."""
