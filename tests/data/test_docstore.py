"""The out-of-core DocStore: sorted-hash index build, lookups, positions, and detection + rebuild of damaged indexes."""

from __future__ import annotations

import gzip
import json
import logging
from pathlib import Path

import numpy as np
import pytest

from kalm_eval.data import docstore
from kalm_eval.data.docstore import DocStore
from kalm_eval.errors import DataError
from kalm_eval.records import Document


def write_corpus(path: Path, n: int = 50, *, gz: bool = False, blank_every: int = 7) -> list[dict]:
    docs = [{"_id": f"d{i}" if i % 5 else f"ünï-{i}", "title": f"T{i}" if i % 3 else "", "text": f"text {i} " * (i % 4 + 1)}
            for i in range(n)]
    lines = []
    for i, d in enumerate(docs):
        lines.append(json.dumps(d, ensure_ascii=bool(i % 2)) + "\n")
        if i % blank_every == 3:
            lines.append("\n")  # blank lines are allowed and skipped
    data = "".join(lines).encode("utf-8")
    if gz:
        with gzip.open(path, "wb") as fh:
            fh.write(data)
    else:
        path.write_bytes(data)
    return docs


def as_doc(d: dict) -> Document:
    return Document(d["_id"], d["title"], d["text"])


@pytest.mark.parametrize("gz", [False, True])
def test_lookup_positions_and_batches(tmp_path, cache_dir, gz):
    docs = write_corpus(tmp_path / ("corpus.jsonl.gz" if gz else "corpus.jsonl"), gz=gz)
    store = DocStore(tmp_path / ("corpus.jsonl.gz" if gz else "corpus.jsonl"), cache_dir)
    assert len(store) == len(docs)
    assert [d.id for d in store] == [d["_id"] for d in docs]
    for i, d in enumerate(docs):
        assert d["_id"] in store and store[d["_id"]] == as_doc(d)
        assert store.position(d["_id"]) == i and store.id_at(i) == d["_id"]
    assert "nope" not in store and store.position("nope") is None
    assert store.get_many(["d7", "ünï-5", "d1"]) == [as_doc(docs[7]), as_doc(docs[5]), as_doc(docs[1])]
    assert store.positions(["d3", "missing", "ünï-10"]).tolist() == [3, -1, 10]
    assert store.ids_at(range(8, 12)) == [d["_id"] for d in docs[8:12]]
    assert store.ids_at([12, 0]) == [docs[12]["_id"], docs[0]["_id"]]
    assert list(store.ids) == [d["_id"] for d in docs] and store.ids[-1] == docs[-1]["_id"]
    batches = list(store.iter_batches(8, start=5, stop=30))
    assert [len(ids) for ids, _ in batches] == [8, 8, 8, 1]
    assert [doc for _, chunk in batches for doc in chunk] == [as_doc(d) for d in docs[5:30]]
    assert [i for ids, _ in batches for i in ids] == [d["_id"] for d in docs[5:30]]
    # no Python list/dict of every id is kept: the index is memory-mapped
    assert all(isinstance(a, np.ndarray) and not a.flags.owndata for a in (store._hashes, store._offsets, store._id_blob))


def test_index_reused_without_writes(tmp_path, cache_dir):
    write_corpus(tmp_path / "corpus.jsonl")
    DocStore(tmp_path / "corpus.jsonl", cache_dir)
    before = {p: p.stat().st_mtime_ns for p in (cache_dir / "docstore").rglob("*")}
    store = DocStore(tmp_path / "corpus.jsonl", cache_dir)
    assert {p: p.stat().st_mtime_ns for p in (cache_dir / "docstore").rglob("*")} == before
    meta = json.loads((store.index_dir / "meta.json").read_text())
    assert meta["docs"] == 50 and set(meta["files"]) == set(docstore.ARRAYS)
    assert all(len(f["sha256"]) == 64 for f in meta["files"].values())


def test_hash_collisions_are_resolved_by_the_id_bytes(tmp_path, cache_dir, monkeypatch):
    # every id hashes to one of two values: lookups must still find the right document
    monkeypatch.setattr(docstore, "hash_id_bytes", lambda b: len(b) % 2)
    docs = write_corpus(tmp_path / "corpus.jsonl", n=40)
    store = DocStore(tmp_path / "corpus.jsonl", cache_dir)
    assert [store.position(d["_id"]) for d in docs] == list(range(40))
    assert store.get_many([d["_id"] for d in docs[::-1]]) == [as_doc(d) for d in docs[::-1]]
    assert "d999" not in store


@pytest.mark.parametrize("collide", [False, True])
def test_duplicate_id_names_file_and_lines(tmp_path, cache_dir, monkeypatch, collide):
    if collide:
        monkeypatch.setattr(docstore, "hash_id_bytes", lambda b: 7)
    path = tmp_path / "corpus.jsonl"
    path.write_text('{"_id": "a", "text": "x"}\n{"_id": "b", "text": "y"}\n\n{"_id": "c", "text": "z"}\n'
                    '{"_id": "b", "text": "again"}\n{"_id": "a", "text": "again"}\n')
    with pytest.raises(DataError, match=r"corpus\.jsonl:5: duplicate doc id 'b' \(first at line 2\)"):
        DocStore(path, cache_dir)


def test_bad_lines_name_file_and_line(tmp_path, cache_dir):
    path = tmp_path / "corpus.jsonl.gz"
    with gzip.open(path, "wt") as fh:
        fh.write('{"_id": "a", "text": "x"}\n{"_id": "b"}\n')
    with pytest.raises(DataError, match=r"corpus\.jsonl\.gz:2: corpus line needs '_id' and 'text'"):
        DocStore(path, cache_dir)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(DataError, match="empty corpus"):
        DocStore(empty, cache_dir)


def _rewrite(path: Path, array: np.ndarray) -> None:
    """Overwrite an index array in place with a same-sized, well-formed .npy (valid format, wrong content)."""
    with open(path, "r+b") as fh:
        np.save(fh, array)


@pytest.fixture
def no_open_checks(monkeypatch):
    """Make opening skip the checksum and sample round-trip, so the per-lookup checks are what must catch damage."""
    monkeypatch.setattr(docstore, "FULL_CHECK_BYTES", -1)
    monkeypatch.setattr(docstore, "SAMPLE_IDS", 0)


def test_tampered_offsets_detected_at_lookup_and_rebuilt(tmp_path, cache_dir, no_open_checks, caplog):
    docs = write_corpus(tmp_path / "corpus.jsonl")
    clean = DocStore(tmp_path / "corpus.jsonl", cache_dir)
    expected = clean.get_many([d["_id"] for d in docs])
    offsets = np.load(clean.index_dir / "offsets.npy")
    # every document now points at its predecessor's line: same size and dtype, wrong offsets
    _rewrite(clean.index_dir / "offsets.npy", np.concatenate([np.roll(offsets[:-1], 1), offsets[-1:]]))
    store = DocStore(tmp_path / "corpus.jsonl", cache_dir)  # opens fine: sizes and counts still match
    with caplog.at_level(logging.WARNING, logger="kalm_eval.data.docstore"):
        assert store[docs[10]["_id"]] == as_doc(docs[10])
    assert str(store.index_dir) in caplog.text and "rebuilding" in caplog.text
    assert store.get_many([d["_id"] for d in docs]) == expected  # output equals a clean run
    assert np.array_equal(np.load(store.index_dir / "offsets.npy"), offsets)


def test_tampered_offsets_detected_while_batching(tmp_path, cache_dir, no_open_checks, caplog):
    docs = write_corpus(tmp_path / "corpus.jsonl")
    clean = DocStore(tmp_path / "corpus.jsonl", cache_dir)
    offsets = np.load(clean.index_dir / "offsets.npy")
    shifted = offsets.copy()
    shifted[20] += 3  # points into the middle of a line
    _rewrite(clean.index_dir / "offsets.npy", shifted)
    store = DocStore(tmp_path / "corpus.jsonl", cache_dir)
    with caplog.at_level(logging.WARNING, logger="kalm_eval.data.docstore"):
        got = [doc for _, chunk in store.iter_batches(6, start=20) for doc in chunk]
    assert got == [as_doc(d) for d in docs[20:]]
    assert "damaged" in caplog.text


def test_tampered_hashes_turn_a_miss_into_a_rebuild(tmp_path, cache_dir, no_open_checks, caplog):
    docs = write_corpus(tmp_path / "corpus.jsonl")
    clean = DocStore(tmp_path / "corpus.jsonl", cache_dir)
    hashes = np.load(clean.index_dir / "hashes.npy")
    _rewrite(clean.index_dir / "hashes.npy", hashes[::-1].copy())  # well-formed, but no longer sorted
    store = DocStore(tmp_path / "corpus.jsonl", cache_dir)
    with caplog.at_level(logging.WARNING, logger="kalm_eval.data.docstore"):
        assert all(d["_id"] in store for d in docs)  # the first miss checksums the index and rebuilds it
    assert "hashes.npy does not match its sha256" in caplog.text


@pytest.mark.parametrize("damage", ["truncate", "garble", "delete", "meta"])
def test_damaged_index_file_named_discarded_rebuilt(tmp_path, cache_dir, caplog, damage):
    docs = write_corpus(tmp_path / "corpus.jsonl")
    clean = DocStore(tmp_path / "corpus.jsonl", cache_dir)
    target = clean.index_dir / ("meta.json" if damage == "meta" else "order.npy")
    data = target.read_bytes()
    if damage == "truncate":
        target.write_bytes(data[: len(data) // 2])
    elif damage == "garble":
        target.write_bytes(bytes(reversed(data)))
    elif damage == "delete":
        target.unlink()
    else:
        target.write_text("{not json")
    with caplog.at_level(logging.WARNING, logger="kalm_eval.data.docstore"):
        store = DocStore(tmp_path / "corpus.jsonl", cache_dir)
    if damage != "meta":  # a missing meta.json is simply "not built yet"
        assert str(store.index_dir) in caplog.text and "rebuilding" in caplog.text
    assert store.get_many([d["_id"] for d in docs]) == [as_doc(d) for d in docs]
    assert not list(store.index_dir.parent.glob(".*"))  # no staged or discarded leftovers


def test_damaged_gzip_copy_is_decompressed_again(tmp_path, cache_dir, caplog):
    docs = write_corpus(tmp_path / "corpus.jsonl.gz", gz=True)
    store = DocStore(tmp_path / "corpus.jsonl.gz", cache_dir)
    copy = store.index_dir.parent / "corpus.jsonl"
    copy.write_bytes(copy.read_bytes()[:-40])  # a truncated copy
    with caplog.at_level(logging.WARNING, logger="kalm_eval.data.docstore"):
        again = DocStore(tmp_path / "corpus.jsonl.gz", cache_dir)
    assert "rebuilding" in caplog.text
    assert [d.id for d in again] == [d["_id"] for d in docs]
    assert again[docs[-1]["_id"]] == as_doc(docs[-1])


def test_pickles_by_reopening(tmp_path, cache_dir):
    import pickle

    docs = write_corpus(tmp_path / "corpus.jsonl")
    store = pickle.loads(pickle.dumps(DocStore(tmp_path / "corpus.jsonl", cache_dir)))
    assert store[docs[2]["_id"]] == as_doc(docs[2])


def test_input_policies_are_replayed_on_every_open(tmp_path, cache_dir):
    """BOM, CRLF and bytes that are not UTF-8 are recorded when the index is built and counted into the current
    input_notes() by every open; under `error` an existing index still refuses the corpus, naming file and line."""
    from kalm_eval.data.readers import input_notes

    path = tmp_path / "corpus.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"_id": "a", "text": "one"}\r\n{"_id": "b", "text": "t\xffo"}\r\n'
                     b'{"_id": "c", "text": "three"}\n')
    for _ in range(2):  # the second open reuses the index and counts the same
        with input_notes(invalid_utf8="replace") as notes:
            store = DocStore(path, cache_dir)
        assert notes.files_with_bom == [str(path)] and notes.crlf_lines == 2
        assert notes.invalid_utf8_lines == [f"{path}:2"]
        assert store["a"].text == "one" and store["b"].text == "t\ufffdo" and [d.id for d in store] == ["a", "b", "c"]
        store.close()
    with input_notes(invalid_utf8="error"), pytest.raises(DataError, match=r"corpus.jsonl:2: not valid UTF-8 \(byte 24"):
        DocStore(path, cache_dir)
