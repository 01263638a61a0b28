"""EchoCLIP-R-compatible template tokenizer, so that the published EchoCLIP-R weights can be used.

EchoCLIP-R encodes a report as a sequence of known sentences ("phrases", read from
a phrase file with one phrase per line and values written ``<#>``), each followed by
its values. The id layout, reproduced here exactly:

- ids 0-4: ``[UNK] [CLS] [SEP] [PAD] [MASK]``;
- phrases from id 5 in file order (empty and repeated lines take no id), matched
  longest-first (leftmost, then longest) after values are replaced by ``<#>``;
- after each phrase, its values joined by ``‡`` and encoded in the value vocabulary
  ``[UNK] [CLS] [SEP] [PAD] [MASK] 0 ... 100 ‡ MILD MODERATE SEVERE MILD/MODERATE
  MODERATE/SEVERE .0 ... .9 00 ... 09``, offset by the number of phrase-side ids;
- ``<bos>`` and ``<eos>`` are the two ids after the last value id; padding is 0, and
  a longer sequence is cut to the context length with ``<eos>`` last.

**This mode is lossy**: text that no phrase matches becomes ``[UNK]`` and is dropped
with its values, silently in the original. Here every call counts what it dropped
(:attr:`EchoClipRTokenizer.dropped_share`, :meth:`EchoClipRTokenizer.encode_with_stats`).
Use :class:`~echoclip.tokenizer.EchoTokenizer` for anything but the published weights.

The phrase file is not shipped; users supply the one published with the weights.
:func:`learn_phrase_file` writes a phrase file from a corpus, to compare the two
designs on the same data.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from tokenizers import Tokenizer, models

from .errors import TokenizerError

if TYPE_CHECKING:
    import torch

SPECIALS = ("[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]")
VALUE_SEPARATOR = "‡"
SEVERITY_WORDS = ("MILD", "MODERATE", "SEVERE", "MILD/MODERATE", "MODERATE/SEVERE")
VALUE_VOCAB: tuple[str, ...] = (
    *(str(i) for i in range(101)),
    VALUE_SEPARATOR,
    *SEVERITY_WORDS,
    *(f".{d}" for d in range(10)),
    *(f"0{d}" for d in range(10)),
)
PLACEHOLDER = "<#>"

# cleaning, in order (see EchoClipRTokenizer.clean)
_REMOVE = re.compile(r"\^|CRLF|‡|\[|\]")
_DATES = re.compile(r"\d{2}/\d{2}/\d{4}|\d{2}\.\d{2}\.\d{4}")
_ICD = re.compile(r"\b[A-Z]\d{2}\.[0-9A-Z]{0,4}\b")
_WORDS = [
    (re.compile(r"\bWAS\b"), "IS"),
    (re.compile(r"\bWERE\b"), "ARE"),
    (re.compile(r"\bAND/OR\b"), "AND"),
    (re.compile(r"NORMALLY"), "NORMAL"),
    (re.compile(r"MILDLY"), "MILD"),
    (re.compile(r"MODERATELY"), "MODERATE"),
    (re.compile(r"SEVERELY"), "SEVERE"),
    (re.compile(r"PULMONARY ARTERY"), "PA"),
]
_SPACE_BEFORE_UNIT = re.compile(r"(?<=\d)\s+(?=%|(?:MMHG|MM|CM)\b)")
_SENTENCE_PERIOD = re.compile(
    r"\.(?!\d)\s*|(?<!\d)\.\s*"
)  # a period not followed by a digit, or not after one
_SPACE_BEFORE_PERIOD = re.compile(r"\s+\.")
_PERIODS = re.compile(r"\.(?:\s*\.)+")
_WHITESPACE = re.compile(r"\s+")
# values: numbers (digits, optionally a point and more digits) and severity words not preceded by a letter
_VALUE = re.compile(
    r"\d+\.?\d*|(?<![A-Z])(?:" + "|".join(sorted(map(re.escape, SEVERITY_WORDS), key=len, reverse=True)) + ")"
)
_NON_SPACE = re.compile(r"\S")
_SENTENCE_END = re.compile(r"(?<=\. )")


class TemplateEncoding(NamedTuple):
    """Ids of one report (``<bos>`` ... ``<eos>``, not padded) and how much of it was dropped."""

    ids: list[int]
    dropped_chars: int  # non-space characters of the cleaned report that no phrase matched
    total_chars: int  # non-space characters of the cleaned report


def _blank_wordpiece() -> Tokenizer:
    """A tokenizer that knows only the five special tokens: any unmatched stretch is one ``[UNK]``."""
    return Tokenizer(models.WordPiece({t: i for i, t in enumerate(SPECIALS)}, unk_token="[UNK]"))


def read_phrase_file(path: str | os.PathLike[str]) -> list[str]:
    """The phrases of a phrase file, one per line, trailing spaces kept (they are part of a phrase)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TokenizerError(f"{path}: no such phrase file") from None
    except UnicodeDecodeError as e:
        raise TokenizerError(
            f"{path}: a phrase file must be UTF-8 text ({e.reason} at byte {e.start})"
        ) from None
    phrases = [line.rstrip("\r") for line in text.split("\n")]
    if not any(phrases):
        raise TokenizerError(f"{path}: the phrase file has no phrases")
    return phrases


class EchoClipRTokenizer:
    """The EchoCLIP-R template tokenizer, driven by a phrase file (see the module docstring).

    >>> tok = EchoClipRTokenizer("template_vocab.txt")
    >>> ids = tok(["LV EJECTION FRACTION IS 55%."])   # LongTensor [1, 77]
    >>> tok.dropped_share                              # share of report text dropped so far
    """

    pad_token_id = 0

    def __init__(
        self, phrase_file: str | os.PathLike[str] | None = None, phrases: Sequence[str] | None = None
    ) -> None:
        if (phrase_file is None) == (phrases is None):
            raise ValueError("give either a phrase_file or a list of phrases")
        if phrases is None:
            phrases = read_phrase_file(phrase_file)
        self._phrases = _blank_wordpiece()
        self._phrases.add_tokens(list(phrases))
        self._values = _blank_wordpiece()
        self._values.add_tokens(list(VALUE_VOCAB))
        self.phrase_vocab_size = self._phrases.get_vocab_size(with_added_tokens=True)
        value_vocab_size = self._values.get_vocab_size(with_added_tokens=True)
        self.bos_token_id = self.phrase_vocab_size + value_vocab_size
        self.eos_token_id = self.bos_token_id + 1
        self.vocab_size = self.eos_token_id + 1
        self._placeholders = {
            i: token.count(PLACEHOLDER)
            for token, i in self._phrases.get_vocab(with_added_tokens=True).items()
        }
        self.chars_seen = 0
        self.chars_dropped = 0

    @staticmethod
    def clean(text: str) -> str:
        """EchoCLIP-R's cleaning: upper case; ``WAS``->``IS``, ``WERE``->``ARE``, ``AND/OR``->``AND``,
        ``NORMALLY``->``NORMAL``, ``MILDLY``->``MILD`` (and ``MODERATELY``, ``SEVERELY``),
        ``PULMONARY ARTERY``->``PA``; dates (dd/dd/dddd, dd.dd.dddd), ICD codes, ``^``,
        ``CRLF``, ``‡`` and square brackets removed; units joined to numbers (``55 %``->``55%``);
        sentence periods followed by one space, whitespace collapsed, one space at the end
        (phrases end with a space)."""
        if not isinstance(text, str):
            raise TypeError(f"a report must be str, not {type(text).__name__}")
        text = _REMOVE.sub("", text.upper())
        text = _DATES.sub("", text)
        text = _ICD.sub("", text)
        for pattern, replacement in _WORDS:
            text = pattern.sub(replacement, text)
        text = _SPACE_BEFORE_UNIT.sub("", text)
        text = _SPACE_BEFORE_PERIOD.sub(".", text)
        text = _PERIODS.sub(".", text)
        text = _SENTENCE_PERIOD.sub(". ", text)
        text = _WHITESPACE.sub(" ", text).strip()
        return text + " " if text else ""

    def encode_with_stats(self, text: str) -> TemplateEncoding:
        """Ids of one report (``<bos>``, phrases and values, ``<eos>``; not padded or truncated) and what was dropped."""
        cleaned = self.clean(text)
        values = _VALUE.findall(cleaned)
        template = _VALUE.sub(PLACEHOLDER, cleaned)
        encoding = self._phrases.encode(template, add_special_tokens=False)
        ids = [self.bos_token_id]
        dropped = 0
        next_value = 0
        for token_id, (start, end) in zip(encoding.ids, encoding.offsets, strict=True):
            if token_id == 0:  # unmatched text: dropped, with the values inside it
                span = template[start:end]
                n = span.count(PLACEHOLDER)
                dropped += len(_NON_SPACE.findall(span)) - len(PLACEHOLDER) * n
                dropped += sum(len(v) for v in values[next_value : next_value + n])
                next_value += n
                continue
            ids.append(token_id)
            n = self._placeholders.get(token_id, 0)
            if n:
                joined = VALUE_SEPARATOR.join(values[next_value : next_value + n])
                ids.extend(i + self.phrase_vocab_size for i in self._values.encode(joined).ids)
                next_value += n
        ids.append(self.eos_token_id)
        total = len(_NON_SPACE.findall(cleaned))
        return TemplateEncoding(ids, dropped, total)

    def encode(self, text: str) -> list[int]:
        """Ids of one report, ``<bos>`` ... ``<eos>``, not padded or truncated."""
        return self.encode_with_stats(text).ids

    def __call__(self, texts: str | Sequence[str], context_length: int = 77) -> torch.Tensor:
        """``LongTensor [B, context_length]``, padded with 0 or cut with ``<eos>`` last; counts dropped text."""
        import torch

        if isinstance(texts, str):
            texts = [texts]
        if texts is None or isinstance(texts, (bytes, bytearray)) or not isinstance(texts, Iterable):
            raise TypeError(f"texts must be a str or a sequence of str, not {type(texts).__name__}")
        if isinstance(context_length, bool) or not isinstance(context_length, int) or context_length < 2:
            raise ValueError(f"context_length must be an integer >= 2, got {context_length!r}")
        rows = []
        for text in texts:
            ids, dropped, total = self.encode_with_stats(text)
            self.chars_dropped += dropped
            self.chars_seen += total
            if len(ids) > context_length:
                ids = ids[: context_length - 1] + [self.eos_token_id]
            rows.append(ids + [self.pad_token_id] * (context_length - len(ids)))
        return torch.tensor(rows, dtype=torch.long).reshape(len(rows), context_length)

    @property
    def dropped_share(self) -> float:
        """Share of the (non-space) report text dropped as unmatched by all calls so far (0 before any)."""
        return self.chars_dropped / self.chars_seen if self.chars_seen else 0.0

    def reset_stats(self) -> None:
        self.chars_seen = self.chars_dropped = 0

    def id_to_token(self, token_id: int) -> str:
        """Readable form of an id: ``[phrase]``, ``<value>``, ``[BOS]``, ``[EOS]``."""
        if token_id == self.bos_token_id:
            return "[BOS]"
        if token_id == self.eos_token_id:
            return "[EOS]"
        if token_id >= self.phrase_vocab_size:
            return f"<{self._values.id_to_token(token_id - self.phrase_vocab_size)}>"
        token = self._phrases.id_to_token(token_id)
        return token if token in SPECIALS else f"[{token}]"


def learn_phrase_file(
    reports: Iterable[str], path: str | os.PathLike[str], min_frequency: int = 5, max_phrases: int = 770
) -> Path:
    """Write a phrase file of the most frequent sentences of ``reports`` (values as ``<#>``).

    Sentences are the pieces of the cleaned report that end with ``". "``. This lets the
    template design be measured on any corpus; it is not the published phrase file.
    """
    counts: Counter[str] = Counter()
    for report in reports:
        template = _VALUE.sub(PLACEHOLDER, EchoClipRTokenizer.clean(report))
        counts.update(s for s in _SENTENCE_END.split(template) if s.strip())
    lines = [sentence for sentence, count in counts.most_common(max_phrases) if count >= min_frequency]
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path
