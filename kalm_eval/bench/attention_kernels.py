"""Which attention kernel per device: grouped vs sdpa vs eager, side by side in one run, on KaLM's own shapes.

Three comparisons, each as warm-up then --repeats interleaved repetitions (order alternating), median [min-max]:
  kernel      the attention call alone on one Nano decoder batch (--batch prompts of --prompt tokens attending to
              their causal prefix + --pooled pooled states; 4 query heads on 1 KV head, head_dim 256)
  online      KaLM's whole online path (DecoderScorer, Nano shape, random weights) on the same prompts and pooled
              states, one model per kernel; and the scores of every kernel against sdpa's (max |delta margin|)
  last layer  the decoder's hidden state at the scored positions as DecoderScorer computes it (last layer at the
              scored position only: fbnl/scorer.py last_position_hidden) vs the stock decoder forward + gather,
              same model (the auto kernel) and batch, and the largest difference between the two.
`model.attn_implementation=auto` takes the kernel measured fastest per device type (kalm_eval/fbnl/spec.py AUTO_ATTENTION); rerun this on a new device type.

Command line: scripts/bench_attention.py.

    python scripts/bench_attention.py                      # CPU, bf16, 1 thread
    python scripts/bench_attention.py --device cuda --batch 64
"""

from __future__ import annotations

import os
import statistics
from types import SimpleNamespace

import torch
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.t5gemma2.modeling_t5gemma2 import eager_attention_forward

from kalm_eval.bench.timing import Timer, interleaved
from kalm_eval.fbnl.prompts import pad_right
from kalm_eval.fbnl.scorer import DecoderScorer, last_position_hidden
from kalm_eval.fbnl.spec import resolve_attn_implementation
from kalm_eval.fbnl.tiny_tokenizer import build_tiny_tokenizer
from kalm_eval.testing.shapes import build_random_kalm

KERNELS = ("grouped", "sdpa", "eager")


def show(title: str, seconds: dict[str, list[float]], unit: float, label: str, base: str = "sdpa") -> None:
    reference = statistics.median(seconds[base])
    print(title)
    for name, values in seconds.items():
        ms = [1000 * s / unit for s in values]
        print(f"  {name:<10} {statistics.median(ms):9.3f} ms/{label} [{min(ms):.3f}-{max(ms):.3f}]   "
              f"{base} / {name} = {reference / statistics.median(values):.2f}x")


def compare(*, device: str = "cpu", dtype: str = "bfloat16", threads: int = 1, batch: int = 16, prompt: int = 80,
            pooled: int = 92, repeats: int = 5) -> None:
    """Print the three comparisons (module docstring) for one device and dtype."""
    a = SimpleNamespace(device=device, dtype=dtype, threads=threads, batch=batch, prompt=prompt, pooled=pooled,
                        repeats=repeats)
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
        show("kernel (one attention call):", interleaved(kernels, a.repeats * 4, Timer(device)), 1, "call")

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
    show(f"online (DecoderScorer, Nano shape, {b} pairs):", interleaved(online, a.repeats, Timer(device)), b, "pair")
    for name in KERNELS:
        delta = max(abs(x - y) for x, y in zip(scores[name], scores["sdpa"]))
        print(f"  {name:<10} max |delta margin| vs sdpa {delta:.2e}")

    auto = scorers[resolve_attn_implementation("auto", a.device)]
    decoder, loaded = auto.decoder, auto.loaded
    ids, mask = (t.to(device) for t in pad_right(prompts, loaded.tokenizer.pad_token_id, 8))
    padded = torch.nn.utils.rnn.pad_sequence(states, batch_first=True).to(device, dtype)
    padded_mask = (torch.arange(padded.shape[1])[None] < lengths[:, None]).long().to(device)
    rows, last = torch.arange(b, device=device), mask.sum(1) - 1

    def stock() -> torch.Tensor:
        return decoder(input_ids=ids, attention_mask=mask, encoder_hidden_states=padded,
                       encoder_attention_mask=padded_mask, use_cache=False).last_hidden_state[rows, last]

    def scored_row() -> torch.Tensor:
        return last_position_hidden(decoder, ids, mask, padded, padded_mask)

    with torch.inference_mode():
        seconds = interleaved({"full": stock, "scored-row": scored_row}, a.repeats, Timer(device))
        delta = (stock().float() - scored_row().float()).abs().max().item()
    show(f"last layer ({loaded.identity['attn_implementation']} kernel, {b} pairs):", seconds, b, "pair", base="full")
    print(f"  max |delta hidden| scored-row vs full {delta:.2e}")
    print(f"load average at end {os.getloadavg()[0]:.2f}")
