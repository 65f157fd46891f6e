#!/usr/bin/env bash
# One GPU check in one call (<= 8 minutes on an H200): install what is missing, then
#   0. the attention kernels side by side (scripts/bench_attention.py: grouped vs sdpa vs eager), $OUT/attention.log;
#   1. the cost benchmark on CUDA (scripts/bench_cost.py: online vs reference-style, Nano/Small/Large, baselines,
#      machine ceiling, MFU vs the device's bf16 peak, torch.cuda.max_memory_allocated), JSON in $OUT/cost.json;
#   2. a Nano-shape SciFact rerank on CUDA through KalmReranker (engine units, then the warm latency probe):
#      pairs/s, ms/pair p50/p95, MFU, peak memory, JSON in $OUT/rerank.json.
#
# Run from the repository root:   bash scripts/gpu_check.sh            (DEVICE=cuda by default)
# Test it on a CPU machine:        DEVICE=cpu QUICK=1 bash scripts/gpu_check.sh
#
# What it reads, prepared on a machine that has kalm-eval installed (a GPU machine may have no network, no data):
#   .gpu/workload.json.gz   SciFact BM25 top-100 run + texts:
#                           python scripts/bench_cost.py --export-workload .gpu/workload.json.gz --export-only
#   .gpu/gemma3-tokenizer/  the converted Gemma 3 tokenizer (~32 MB): cp -r ~/.cache/kalm_eval/gemma3-tokenizer-* .gpu/gemma3-tokenizer
#   .whl/*.whl              wheels for packages the GPU image lacks (torch / transformers are usually there)
# Without .gpu/workload.json.gz it uses ../shared/data (when kalm-eval's first-stage packages are installed), else a
# synthetic SciFact-like workload. Env: DEVICE (cuda|cpu), QUICK (1 = CI-sized), OUT (results folder, default
# /tmp/gpu_check), PEAK_TFLOPS (MFU denominator; default: by device name), RERANK_QUERIES (default 300; quick 2, at depth 10),
# BENCH_ARGS (extra bench_cost.py arguments), PYTHON (default python3).
set -uo pipefail
cd "$(dirname "$0")/.."
DEVICE=${DEVICE:-cuda}
QUICK=${QUICK:-0}
OUT=${OUT:-/tmp/gpu_check}
PYTHON=${PYTHON:-python3}
mkdir -p "$OUT"
started=$(date +%s)
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false

# ---- install what is missing (no network needed when wheels are carried) --------------------------------------
if ls .whl/*.whl >/dev/null 2>&1; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}   # kalm_eval from this checkout, no install step
if ! "$PYTHON" -c "import torch, transformers" 2>/dev/null; then
  echo "installing torch + transformers from the package index"
  "$PYTHON" -m pip install -q torch "transformers>=5.3,<6" safetensors tokenizers pyyaml numpy || exit 1
fi
if [ -d .gpu/gemma3-tokenizer ]; then export KALM_EVAL_GEMMA3_TOKENIZER=$PWD/.gpu/gemma3-tokenizer; fi
"$PYTHON" - "$DEVICE" <<'PY' || exit 1
import sys, os, torch, transformers
device = sys.argv[1]
print(f"python {sys.version.split()[0]}, torch {torch.__version__}, transformers {transformers.__version__}, "
      f"cuda available {torch.cuda.is_available()}, load average {os.getloadavg()[0]:.2f}")
if device == "cuda":
    if not torch.cuda.is_available():
        sys.exit("DEVICE=cuda but torch sees no GPU")
    print(torch.cuda.get_device_name(0), f"{torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB")
PY

# ---- arguments -------------------------------------------------------------------------------------------------
common=(--device "$DEVICE")
if [ -f .gpu/workload.json.gz ]; then common+=(--workload .gpu/workload.json.gz)
elif ! "$PYTHON" -c "import hydra, bm25s, Stemmer" 2>/dev/null; then common+=(--synthetic); fi
if [ -n "${PEAK_TFLOPS:-}" ]; then common+=(--peak-tflops "$PEAK_TFLOPS"); fi
if [ "$QUICK" = 1 ]; then
  bench=(--quick --repeats 1); rerank_queries=${RERANK_QUERIES:-2}; rerank=(--rerank-depth 10); limit1=900; limit2=300
  attention=(--repeats 1 --batch 4); limit0=300
else
  # GPU default: every model on every pair (64+), all r, reference rows at every r, baselines incl. Qwen3-4B.
  bench=(--ref-ratios 1,4,32 --e2e-ratios 1,4,32 --size-reference-ratios 4 --repeats 5); rerank_queries=${RERANK_QUERIES:-300}
  rerank=()
  attention=(--batch 64); limit0=40; limit1=290; limit2=150
fi

# ---- 0. attention kernels (what model.attn_implementation=auto should pick on this device) ------------------------
echo "== attention kernels (${DEVICE}) =="
timeout "$limit0" "$PYTHON" scripts/bench_attention.py --device "$DEVICE" "${attention[@]}" 2>&1 | grep -v -i "warning" \
  | tee "$OUT/attention.log"

# ---- 1. cost benchmark ----------------------------------------------------------------------------------------
echo "== cost benchmark (${DEVICE}) =="
timeout "$limit1" "$PYTHON" scripts/bench_cost.py "${common[@]}" "${bench[@]}" ${BENCH_ARGS:-} --output "$OUT/cost.json" \
  2>&1 | grep -v -i "warning" | tee "$OUT/cost.log"
rc1=${PIPESTATUS[0]}

# ---- 2. Nano-shape SciFact rerank -----------------------------------------------------------------------------
echo "== Nano-shape rerank (${DEVICE}, ${rerank_queries} queries) =="
timeout "$limit2" "$PYTHON" scripts/bench_cost.py "${common[@]}" --rerank-only --rerank-queries "$rerank_queries" "${rerank[@]}" \
  --output "$OUT/rerank.json" 2>&1 | grep -v -i "warning" | tee "$OUT/rerank.log"
rc2=${PIPESTATUS[0]}

echo "== done in $(( $(date +%s) - started ))s: cost benchmark rc=$rc1, rerank rc=$rc2; results in $OUT =="
[ "$rc1" = 0 ] && [ "$rc2" = 0 ]
