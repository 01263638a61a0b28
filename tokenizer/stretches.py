"""The encoding path for ASCII text: the added-token split in Python's regex engine, with a stretch cache.

The ``tokenizers`` pipeline spends most of a report's encoding time splitting it at
the value tokens (about 1.5 µs per split, for the alignment bookkeeping of each
piece), not in the BPE model, whose word cache already knows most stretches. On
ASCII text (nearly every report) :class:`StretchEncoder` makes the same split with one
compiled regular expression and looks each stretch up in a dictionary; a stretch it
has not seen is encoded by the same BPE model. The ids are those of
``Tokenizer.encode`` (tests compare the two on reports and under fuzzing), about
twice as fast. Text with any non-ASCII character goes through the Rust pipeline,
whose ``\\w`` (Unicode) this path does not reproduce.

The split reproduces ``tokenizers``' added vocabulary: at the leftmost position where
any added token occurs, the longest one there is taken; a ``single_word`` token with
a word character on either side is rejected and stays text, and the search goes on
after it (a rejected ``1.5`` in ``1.5X`` does not let ``.5`` match); special tokens,
which this pipeline encodes as text, are rejected in the same way.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from tokenizers import Tokenizer

_WORD = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")


def trie_pattern(words: Iterable[str]) -> str:
    """A regex that matches, at a position, the longest of ``words`` that starts there.

    The words are arranged as a trie, so the engine tries each first character once
    and a longer word before its prefixes; a top-level alternation of literal
    characters lets the engine skip ahead to the next possible first character.
    """
    trie: dict[str, dict] = {}
    for word in words:
        node = trie
        for ch in word:
            node = node.setdefault(ch, {})
        node[""] = {}

    def build(node: dict[str, dict]) -> str:
        # every alternative starts with a literal (the regex parser turns an alternation
        # of single characters into a character set by itself)
        alternatives = [re.escape(c) + build(sub) for c, sub in sorted(node.items()) if c]
        if not alternatives:
            return ""
        body = alternatives[0] if len(alternatives) == 1 else "(?:" + "|".join(alternatives) + ")"
        return f"(?:{body})?" if "" in node else body

    return build(trie)


class StretchEncoder:
    """Ids of ASCII text, identical to ``backend.encode(text, add_special_tokens=False).ids``.

    Build it with :meth:`for_backend`, which declines pipelines whose split it does not
    reproduce (a normaliser, a pre-tokenizer, stripping or normalised added tokens).
    """

    def __init__(self, backend: Tokenizer, cache_capacity: int) -> None:
        added = backend.get_added_tokens_decoder()
        self._value_ids = {t.content: i for i, t in added.items() if not t.special}
        # tokens that must stand alone between non-word characters; special tokens are
        # matched (to consume their text, as the pipeline does) and always rejected
        self._single_word = frozenset(t.content for t in added.values() if t.single_word and not t.special)
        self._rejected = frozenset(t.content for t in added.values() if t.special)
        words = [t.content for t in added.values()]
        self._split = re.compile(f"({trie_pattern(words)})") if words else None
        self._model = backend.model
        self._cache: dict[str, list[int]] = {}
        self._capacity = cache_capacity

    @classmethod
    def for_backend(cls, backend: Tokenizer, cache_capacity: int) -> StretchEncoder | None:
        """A StretchEncoder for ``backend``, or ``None`` when its pipeline is not one this path reproduces."""
        if backend.normalizer is not None or backend.pre_tokenizer is not None:
            return None
        if not backend.encode_special_tokens:
            return None
        for token in backend.get_added_tokens_decoder().values():
            if token.normalized or token.lstrip or token.rstrip or not token.content.isascii():
                return None
        return cls(backend, cache_capacity)

    def encode(self, text: str) -> list[int]:
        """Token ids of cleaned ASCII ``text`` (no ``<bos>``/``<eos>``)."""
        if self._split is None:
            return self._stretch(text) if text else []
        parts = self._split.split(text)  # stretch, token, stretch, token, ..., stretch
        # locals: this loop runs once per value token of every report
        single_word, rejected_always, value_ids = self._single_word, self._rejected, self._value_ids
        cache, encode_stretch = self._cache, self._stretch
        ids: list[int] = []
        stretch = parts[0]
        last = len(parts) - 1
        for i in range(1, last, 2):
            token, after = parts[i], parts[i + 1]
            if token in single_word:
                before_char = stretch[-1:] if stretch else (parts[i - 2][-1:] if i > 1 else "")
                after_char = after[:1] if after else (parts[i + 2][:1] if i + 2 < last else "")
                rejected = before_char in _WORD or after_char in _WORD
            else:
                rejected = token in rejected_always
            if rejected:
                stretch += token + after
                continue
            if stretch:
                ids += cache.get(stretch) or encode_stretch(stretch)
            ids.append(value_ids[token])
            stretch = after
        if stretch:
            ids += cache.get(stretch) or encode_stretch(stretch)
        return ids

    def _stretch(self, text: str) -> list[int]:
        ids = self._cache.get(text)
        if ids is None:
            if len(self._cache) >= self._capacity:
                self._cache.clear()
            ids = self._cache[text] = [token.id for token in self._model.tokenize(text)]
        return ids
