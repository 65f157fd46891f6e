"""A small, fully deterministic word-level tokenizer for tests and the tiny random model.

Why not a trained BPE: training depends on the `tokenizers` version and thread scheduling; a fixed
vocabulary built from a word list is identical everywhere, needs no download, and still has the
pieces the KaLM prompt needs:

* special tokens `<pad>`=0, `<eos>`=1, `<bos>`=2, `<unk>`=3, `<start_of_turn>`=4, `<end_of_turn>`=5
  (same ids for pad/eos/bos as Gemma 3, so config defaults line up),
* "yes" and "no" as single tokens (6 and 7),
* newline runs ("\\n" up to "\\n\\n\\n\\n") as tokens, so the prompt's structure survives,
* every other word of a small built-in English/science corpus; unknown words map to `<unk>`.

Text is split on spaces (dropped), newline runs (kept) and punctuation (each mark its own token).
Decoding joins tokens with single spaces; re-tokenising decoded text gives the same ids, which is
all the query-truncation round trip (tokenise → truncate → decode → re-insert) needs.
"""

from __future__ import annotations

import re

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]
ANSWER_TOKENS = ["yes", "no"]
NEWLINE_TOKENS = ["\n", "\n\n", "\n\n\n", "\n\n\n\n"]

# Small built-in corpus: the prompt's own words plus everyday and scientific English, enough that
# test passages and queries are mostly known words (unknown ones become <unk>, which is fine).
_CORPUS = """
Judge whether the Document meets the requirements based on the Query and the Instruct provided.
Note that answer can only be yes or no. Given a query, retrieve documents that answer query.
user model Instruct Query Document capital of China is Beijing. Gravity attracts bodies toward one another.
What is where when who why how which does did do can could would should will may might must
a an and or but if then else than so because while although however therefore thus also not
I you he she it we they me him her us them my your his its our their this that these those
be is are was were been being have has had having get got make made take took see saw know
find found give gave use used show shown study studies result results method methods data
cell cells gene genes protein proteins patient patients disease diseases treatment treatments
risk increase increased decrease decreased effect effects level levels high low higher lower
human humans mouse mice model models brain blood heart cancer tumor tumour virus viral immune
response expression activity function role pathway signal signaling receptor drug drugs dose
clinical trial trials group groups control controls sample samples analysis evidence claim
support supports refute refutes associated association reduced reduces reduce induced induces
significant significantly compared with without between among during after before within
time year years day days age children adults women men population rate rates number numbers
first second new old large small long short early late more most less least many much few
water air earth sun moon light energy heat mass force speed space star stars planet planets
city country world people state government history war school university science research
computer software system systems network networks language languages word words text texts
search engine retrieval ranking rank ranked relevant relevance passage passages question
questions answers information knowledge learning machine neural deep training trained test
in on at to from by for with about into over under up down out off through across along
one two three four five six seven eight nine ten hundred thousand million percent
red blue green black white good bad best worst true false right left same different other
A An The In On At To For From By With As Of It This That These Those We They He She
0 1 2 3 4 5 6 7 8 9 a b c d e f g h i j k l m n o p q r s t u v w x y z
"""

_PUNCTUATION = list(".,;:!?\"'()[]{}<>-_/\\%&*+=#@$^|~`")

# Splitting rules, applied in order by the pre-tokenizer (special tokens are matched before these).
_SPACES = r"[^\S\n]+"  # spaces and tabs, but not newlines
_NEWLINE_RUNS = r"\n{1,4}"
_PUNCT = r"[^\w\s]"


def _corpus_words() -> list[str]:
    words = re.findall(r"\w+", _CORPUS)
    seen: dict[str, None] = {}
    for word in words:
        seen.setdefault(word, None)
    return sorted(seen)  # sorted: the vocabulary does not depend on corpus order


def tiny_vocabulary() -> dict[str, int]:
    """Token → id, fixed: specials, yes/no, newline runs, punctuation, then sorted corpus words."""
    ordered = SPECIAL_TOKENS + ANSWER_TOKENS + NEWLINE_TOKENS + _PUNCTUATION
    taken = set(ordered)
    ordered += [w for w in _corpus_words() if w not in taken]
    return {token: index for index, token in enumerate(ordered)}


def build_tiny_tokenizer() -> PreTrainedTokenizerFast:
    """Build the tokenizer; same result on every call and every machine."""
    vocab = tiny_vocabulary()
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_SPACES), behavior="removed"),
            pre_tokenizers.Split(Regex(_NEWLINE_RUNS), behavior="isolated"),
            pre_tokenizers.Split(Regex(_PUNCT), behavior="isolated"),
        ]
    )
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    # WordPiece decoder without a real prefix = "join with spaces, no clean-up".
    backend.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        eos_token="<eos>",
        bos_token="<bos>",
        unk_token="<unk>",
        additional_special_tokens=["<start_of_turn>", "<end_of_turn>"],
        padding_side="right",  # KaLM uses right padding on both sides (last-token indexing assumes it)
    )
