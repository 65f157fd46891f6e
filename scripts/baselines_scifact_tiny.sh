#!/usr/bin/env bash
# Issue 13, end to end offline: every baseline reranker family (qwen3, cross_encoder, bge_gemma) with a random tiny
# checkpoint and KaLM tiny (model=tiny compression=4) on real BEIR SciFact over ONE shared BM25 first stage, then one
# report whose baselines.md lists the four rerankers. Wall time of every step is printed (and kept in times.tsv).
#
#   scripts/baselines_scifact_tiny.sh [WORK_DIR] [extra kalm-eval overrides...]
#
# WORK_DIR (default /tmp/kalm-eval-baselines-e2e) receives checkpoints/, cache/, results/, report/, logs/, times.tsv.
# Needs /usr/bin/time (GNU time) for the wall / CPU / memory columns.
# DATA_DIR (env, default ../shared/data beside the project) must hold beir/scifact in BEIR layout.
# RUN_ARGS (env) defaults to "retriever.depth=100 reranker.depth=20 reranker.batch_size=16": the full top-100 rerank
# is 30,000 pairs per family, which took > 15 minutes for the fastest family (cross_encoder: 16 min wall) on a shared
# 2-core CPU (docs/baselines.md); RUN_ARGS="retriever.depth=100 reranker.depth=100" reranks the full top-100.
# reranker.batch_size=16 for every reranker: one latency batch size for all, and bounded attention memory on CPU.
# QWEN3_ARGS (env) defaults to "model.max_length=2048": the tiny byte-level tokenizer makes ~1.2 characters per
# token (Qwen3's real one ~4), so the preset's 8192 would be ~4x the real model's attention length and cost; at 8192
# and batch 32 the CPU attention masks of a long batch passed 11 GB RSS (stopped). Set QWEN3_ARGS= for the preset.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="${1:-/tmp/kalm-eval-baselines-e2e}"
shift || true
DATA_DIR="${DATA_DIR:-$ROOT/../shared/data}"
RUN_ARGS="${RUN_ARGS-retriever.depth=100 reranker.depth=20 reranker.batch_size=16}"
QWEN3_ARGS="${QWEN3_ARGS-model.max_length=2048}"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
mkdir -p "$WORK/logs"
printf 'step\twall_s\tuser_s\tsys_s\tmax_rss_kb\n' | tee "$WORK/times.tsv"

timed() {  # timed <name> <command...>: run, log; record wall, user and system CPU seconds and peak RSS (/usr/bin/time)
  local name="$1"; shift
  if ! /usr/bin/time -f '%e\t%U\t%S\t%M' -o "$WORK/logs/$name.time" "$@" > "$WORK/logs/$name.log" 2>&1; then
    echo "FAILED: $name (log: $WORK/logs/$name.log)"; tail -20 "$WORK/logs/$name.log"; exit 1
  fi
  printf '%s\t%s\n' "$name" "$(tail -1 "$WORK/logs/$name.time")" | tee -a "$WORK/times.tsv"
}

for family in qwen3 cross_encoder bge_gemma; do
  dir="$WORK/checkpoints/tiny-${family//_/-}"
  [ -d "$dir" ] || timed "build-$family" python -m kalm_eval.testing.baselines "$family" "$dir" --seed 0
done

COMMON=(benchmark=beir/scifact "data_dir=$DATA_DIR" retriever=bm25 "cache_dir=$WORK/cache"
        "results_dir=$WORK/results" progress=false $RUN_ARGS "$@")

# model.hf_id=null: the record then names the weights "local" (+ their content hash) instead of keeping the default
# preset's hub id as a label of the local folder (which would read Qwen/Qwen3-Reranker-0.6B for a random model);
# model.name: the record directory's label (it would otherwise be the default preset's name).
for family in cross_encoder bge_gemma qwen3; do
  name="tiny-${family//_/-}"
  extra=()
  [ "$family" = qwen3 ] && extra=($QWEN3_ARGS)
  timed "run-$family" kalm-eval "${COMMON[@]}" "reranker=$family" "model.path=$WORK/checkpoints/$name" \
    "model.name=$name" model.hf_id=null model.dtype=float32 model.device=cpu "${extra[@]}"
done
timed run-kalm-tiny kalm-eval "${COMMON[@]}" reranker=kalm model=tiny compression=4

timed report kalm-eval-report "results=$WORK/results" "output_dir=$WORK/report"

python - "$WORK" <<'EOF'
import json, sys
from pathlib import Path

work = Path(sys.argv[1])
print(f"\n{'record':60s} {'pairs':>6s} {'p50 ms/pair':>11s} {'total_s':>8s} {'score_s':>8s} {'nDCG@10 fs -> rr':>18s}")
for path in sorted((work / "results").rglob("metrics.json")):
    r = json.loads(path.read_text())
    if "reranked" not in r["stages"]:
        continue
    lat = r["timings"].get("latency") or {}
    print(f"{path.parent.name:60s} {r['counts']['pairs']:6d} {lat.get('ms_per_pair_p50', float('nan')):11.3f} "
          f"{r['timings']['total_s']:8.1f} {r['timings'].get('score_s') or float('nan'):8.1f} "
          f"{r['stages']['first_stage']['nDCG@10']:.4f} -> {r['stages']['reranked']['nDCG@10']:.4f}")
EOF
echo
echo "report: $WORK/report/baselines.md"
cat "$WORK/report/baselines.md"
