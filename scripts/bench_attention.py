#!/usr/bin/env python
"""Which attention kernel per device: grouped vs sdpa vs eager, side by side in one run, on KaLM's own shapes.

Two levels, each as warm-up then --repeats interleaved repetitions (order alternating), median [min-max]:
  kernel   the attention call alone on one Nano decoder batch (--batch prompts of --prompt tokens attending to their
           causal prefix + --pooled pooled states; 4 query heads on 1 KV head, head_dim 256)
  online   KaLM's whole online path (DecoderScorer, Nano shape, random weights) on the same prompts and pooled states,
           one model per kernel
and the scores of every kernel against sdpa's (max |delta margin|). model.attn_implementation=auto takes the kernel
measured fastest per device type (kalm_eval/fbnl/spec.py AUTO_ATTENTION); rerun this on a new device type.

    python scripts/bench_attention.py                      # CPU, bf16, 1 thread
    python scripts/bench_attention.py --device cuda --batch 64
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS  # noqa: E402
from transformers.models.t5gemma2.modeling_t5gemma2 import eager_attention_forward  # noqa: E402

from kalm_eval.fbnl.scorer import DecoderScorer  # noqa: E402
from kalm_eval.fbnl.tiny_tokenizer import build_tiny_tokenizer  # noqa: E402
from kalm_eval.testing.shapes import build_random_kalm  # noqa: E402

KERNELS = ("grouped", "sdpa", "eager")


def timed(fn, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - started


def interleaved(calls: dict, repeats: int, device: torch.device) -> dict[str, list[float]]:
    for fn in calls.values():
        fn()
    seconds: dict[str, list[float]] = {name: [] for name in calls}
    for rep in range(repeats):
        for name in (list(calls) if rep % 2 == 0 else list(reversed(calls))):
            seconds[name].append(timed(calls[name], device))
    return seconds


def show(title: str, seconds: dict[str, list[float]], unit: float, label: str) -> None:
    base = statistics.median(seconds["sdpa"])
    print(title)
    for name, values in seconds.items():
        ms = [1000 * s / unit for s in values]
        print(f"  {name:<8} {statistics.median(ms):9.3f} ms/{label} [{min(ms):.3f}-{max(ms):.3f}]   "
              f"sdpa / {name} = {base / statistics.median(values):.2f}x")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    p.add_argument("--threads", type=int, default=1, help="CPU threads (1 on a shared machine)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--prompt", type=int, default=80, help="prompt tokens (SciFact prompts: 68-110, mean 78)")
    p.add_argument("--pooled", type=int, default=92, help="pooled states (SciFact at r=4: 44-157, mean 92)")
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args()
    device, dtype = torch.device(a.device), {"bfloat16": torch.bfloat16, "float32": torch.float32}[a.dtype]
    if device.type == "cpu":
        torch.set_num_threads(a.threads)
    print(f"attention kernels: {a.device}, {a.dtype}, {torch.get_num_threads()} threads, batch {a.batch}, prompt "
          f"{a.prompt} tokens, {a.pooled} pooled states; load average {os.getloadavg()[0]:.2f}")
    g = torch.Generator().manual_seed(0)
    b, s, m, heads, kv, dim = a.batch, a.prompt, a.pooled, 4, 1, 256
    q = torch.randn(b, heads, s, dim, generator=g).to(device, dtype)
    k, v = (torch.randn(b, kv, s + m, dim, generator=g).to(device, dtype) for _ in range(2))
    lengths = torch.randint(m // 2, m + 1, (b,), generator=g)
    mask = torch.cat([torch.ones(s, s, dtype=torch.bool).tril().expand(b, 1, s, s),
                      (torch.arange(m)[None] < lengths[:, None])[:, None, None, :].expand(b, 1, s, m)], -1).to(device)
    module = torch.nn.Module().eval()
    module.num_key_value_groups, module.is_causal = heads // kv, False
    masks = {"grouped": mask, "sdpa": mask, "eager": torch.where(mask, 0.0, torch.finfo(dtype).min).to(dtype)}
    functions = {name: ALL_ATTENTION_FUNCTIONS.get_interface(name, eager_attention_forward) for name in KERNELS}
    kernels = {name: (lambda name=name: functions[name](module, q, k, v, masks[name], scaling=dim**-0.5))
               for name in KERNELS}
    with torch.inference_mode():
        show("kernel (one attention call):", interleaved(kernels, a.repeats * 4, device), 1, "call")

    tokenizer = build_tiny_tokenizer()
    prompts = [torch.randint(3, 200, (s - i % 9,), generator=g).tolist() for i in range(b)]
    states = [torch.randn(int(n), 640, generator=g) for n in lengths]
    scorers, scores = {}, {}
    for name in KERNELS:
        loaded = build_random_kalm("nano", dtype=a.dtype, parts="decoder", tokenizer=tokenizer, device=a.device,
                                   attn_implementation=name)
        scorers[name] = DecoderScorer(loaded, batch_size=b)
        scores[name] = [x.margin for x in scorers[name].score(prompts, states)]
    online = {name: (lambda scorer=scorer: scorer.score(prompts, states)) for name, scorer in scorers.items()}
    show(f"online (DecoderScorer, Nano shape, {b} pairs):", interleaved(online, a.repeats, device), b, "pair")
    for name in KERNELS:
        delta = max(abs(x - y) for x, y in zip(scores[name], scores["sdpa"]))
        print(f"  {name:<8} max |delta margin| vs sdpa {delta:.2e}")
    print(f"load average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
