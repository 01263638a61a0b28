"""Character maps for the ``tokenizers`` ``Precompiled`` normalizer, which has no upper-casing of its own.

``tokenizers`` normalizers can lower-case but not upper-case. Its ``Precompiled``
normalizer (SentencePiece's) replaces text by a table held in the file: a
double-array trie over UTF-8 keys (the darts-clone layout) followed by the
replacements, each ended by a NUL byte. :func:`precompiled_charsmap` writes that
table for any mapping of single characters, and :func:`uppercase_map` is
``str.upper`` for every character it changes, so that a normalizer can upper-case
exactly as Python does (it maps each character on its own, which is what
``str.upper`` does too).

``Precompiled`` looks a whole grapheme (a letter and its combining marks) up at once
and replaces it by the entry of its first character, dropping the marks.
:func:`uppercase_steps` therefore first puts a control character before every
character that joins the one before it (:func:`joining_characters`), so that each
letter is looked up alone, and removes it after.
"""

from __future__ import annotations

import functools
import struct
import sys
from collections import deque

from tokenizers import Regex, normalizers

_LEAF = 1 << 31
_HAS_LEAF = 1 << 8
_OFFSET_SHIFT = 10
_MAX_OFFSET = 1 << 21  # larger offsets need darts-clone's extended encoding, never needed here


def precompiled_charsmap(mapping: dict[str, str]) -> bytes:
    """The ``precompiled_charsmap`` bytes of ``tokenizers.normalizers.Precompiled`` for ``mapping``.

    >>> from tokenizers.normalizers import Precompiled
    >>> Precompiled(precompiled_charsmap({"a": "A", "ß": "SS"})).normalize_str("aßb")
    'ASSb'
    """
    replacements = bytearray()
    value_of: dict[str, int] = {}
    for key in sorted(mapping):
        if not key or "\0" in key or "\0" in mapping[key]:  # NUL ends a key and a replacement
            raise ValueError(
                f"charsmap keys must be non-empty and free of NUL, as their replacements: {key!r}"
            )
        value_of[key] = len(replacements)
        replacements += mapping[key].encode("utf-8") + b"\0"

    # a byte trie of the keys; label 0 holds the value of the key that ends there
    root: dict[int, dict | int] = {}
    for key in sorted(mapping):
        node = root
        for byte in key.encode("utf-8"):
            node = node.setdefault(byte, {})  # type: ignore[assignment]
        node[0] = value_of[key]

    # darts-clone: a node at `pos` has base = pos ^ offset; its child for byte c sits
    # at base ^ c and its value at base ^ 0. Each base is used once, so that a lookup
    # never lands on another node's child with the same label.
    units = [0] * 256
    used = bytearray(256)
    used[0] = 1
    bases: set[int] = set()
    first_free = 1
    queue: deque[tuple[dict, int]] = deque([(root, 0)])
    while queue:
        node, pos = queue.popleft()
        labels = sorted(node)
        base = _free_base(labels, used, bases, first_free)
        bases.add(base)
        offset = pos ^ base
        if offset >= _MAX_OFFSET:
            raise ValueError("charsmap too large")
        needed = (max(base ^ c for c in labels) | 0xFF) + 1  # whole blocks: a lookup XORs within one
        if needed > len(units):
            units.extend([0] * (needed - len(units)))
            used.extend(bytes(needed - len(used)))
        units[pos] |= offset << _OFFSET_SHIFT | (_HAS_LEAF if 0 in node else 0)
        for c in labels:
            child = base ^ c
            used[child] = 1
            if c == 0:
                units[child] = _LEAF | node[0]
            else:
                units[child] |= c
                queue.append((node[c], child))
        while first_free < len(used) and used[first_free]:
            first_free += 1
    trie = struct.pack(f"<{len(units)}I", *units)
    return struct.pack("<I", len(trie)) + trie + bytes(replacements)


def _free_base(labels: list[int], used: bytearray, bases: set[int], start: int) -> int:
    """The smallest unused base >= 256 whose positions for ``labels`` are all free."""
    pos = start
    while True:
        base = pos ^ labels[0]
        if (
            base >= 256
            and base not in bases
            and all(base ^ c >= len(used) or not used[base ^ c] for c in labels)
        ):
            return base
        pos += 1
        while pos < len(used) and used[pos]:
            pos += 1


@functools.cache
def uppercase_map() -> dict[str, str]:
    """``{c: c.upper()}`` for every character that ``str.upper`` changes (this Python's Unicode tables)."""
    out = {}
    for code in range(sys.maxunicode + 1):
        if 0xD800 <= code <= 0xDFFF:
            continue
        c = chr(code)
        upper = c.upper()
        if upper != c:
            out[c] = upper
    return out


@functools.cache
def uppercase_charsmap() -> bytes:
    """:func:`precompiled_charsmap` of :func:`uppercase_map`, built once per process."""
    return precompiled_charsmap(uppercase_map())


# Put before every joining character while upper-casing; a C0 control, which breaks
# graphemes on both sides. The callers remove C0 controls from the text before.
SEPARATOR = "\x01"
_START = "#"  # before the text while separating, so that the text cannot start a grapheme with a mark


@functools.cache
def joining_characters() -> tuple[str, ...]:
    """The characters that join the character before them into one grapheme (combining marks, ZWJ, ...).

    Found by asking this ``tokenizers`` itself: ``Precompiled`` maps ``"a" + c`` to ``"A"``
    when the two are one grapheme, since it keeps the entry of the first character only.
    """
    probe = normalizers.Precompiled(precompiled_charsmap({"a": "A"}))
    return tuple(
        chr(code)
        for code in range(sys.maxunicode + 1)
        if not 0xD800 <= code <= 0xDFFF and probe.normalize_str("a" + chr(code)) == "A"
    )


@functools.cache
def _separating_charsmap() -> bytes:
    return precompiled_charsmap({c: SEPARATOR + c for c in joining_characters()})


def uppercase_steps() -> list[normalizers.Normalizer]:
    """Normalizers that upper-case as ``str.upper`` does, and remove every :data:`SEPARATOR`.

    A grapheme that starts with two or more joining characters after a control
    character (a mark at the start of a line, say) keeps only the first of them.
    """
    return [
        normalizers.Prepend(_START),
        normalizers.Precompiled(_separating_charsmap()),
        normalizers.Replace(Regex(r"\A" + _START), ""),
        normalizers.Precompiled(uppercase_charsmap()),
        normalizers.Replace(SEPARATOR, ""),
    ]
