"""One small registry for the pluggable parts chosen by name in the config: retriever families
(kalm_eval.retrieval), reranker families (kalm_eval.rerank) and dataset loaders (kalm_eval.data.loaders).

A registry maps a name to an entry; looking up a name it does not hold is one ConfigError naming the knob, the value
and what is known, so a mistyped `reranker=`, `retriever=` or `benchmark.loader=` fails before any work."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

from kalm_eval.errors import ConfigError

Entry = TypeVar("Entry")


class Registry(Generic[Entry]):
    def __init__(self, knob: str, what: str, *, also_known: tuple[str, ...] = ()):
        self.knob = knob  # how the user names the choice, e.g. "reranker"
        self.what = what  # what an entry is, e.g. "reranker"
        self.also_known = also_known  # valid choices handled outside the registry (reranker=none)
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, entry: Entry) -> Entry:
        if name in self._entries:
            raise ValueError(f"{self.knob}={name!r} is registered twice")
        self._entries[name] = entry
        return entry

    def __getitem__(self, name: str) -> Entry:
        if name not in self._entries:
            known = ", ".join((*self.also_known, *sorted(self._entries)))
            raise ConfigError(f"{self.knob}={name!r}: unknown {self.what}; known: {known}")
        return self._entries[name]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def __len__(self) -> int:
        return len(self._entries)
