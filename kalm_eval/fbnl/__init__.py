"""fbnl: the KaLM-Reranker-V1 model side ("fast but not late" interaction: cached pooled passages + online decoder).

Modules, one idea each:
    spec.py           ModelSpec: which checkpoint, dtype, lengths (validated without torch)
    model.py          LoadedModel; load real checkpoints; weight / encoder / tokenizer fingerprints
    synthetic.py      the random tiny model behind model=tiny (+ the Nano text config)
    tiny_tokenizer.py deterministic word-level tokenizer for the tiny model
    prompts.py        exact encoder/decoder texts, query truncation, padding
    pooling.py        Matryoshka Embedding Pooling (MEP)
    passages.py       PassageEncoder: encode a chunk of passages once, pool it at every compression
    pooled_cache.py   persisted pooled states (by policy), indexed, read per passage, checksummed
    batching.py       length-sorted batches with CUDA-OOM back-off
    scorer.py         decoder-only yes/no scoring from pooled states
The reranker the pipeline calls (kalm_eval.rerank.kalm.KalmReranker) is built from these.
"""
