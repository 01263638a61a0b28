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

The weights saw reports cleaned by fixed rules, and a phrase matches only text
cleaned the same way, so the rules are reproduced one for one, in their order
(:meth:`EchoClipRTokenizer.clean`):

1. text of fewer than two characters is left as it is; other text is upper-cased
   and stripped, and a backtick becomes an apostrophe;
2. ``^``, ``‡`` (the value separator) and the letters ``CRLF`` (a line break as
   exported) are removed;
3. a period becomes ``". "`` unless it stands between two digits or between a digit
   and an end of the text (``4.5`` stays a number; ``NORMAL.THE`` splits);
4. square brackets are removed;
5. ``WAS`` -> ``IS``, ``WERE`` -> ``ARE``, ``AND/OR`` -> ``AND`` (whole words);
   ``NORMALLY``, ``MILDLY``, ``MODERATELY``, ``SEVERELY`` lose their ``LY`` and
   ``PULMONARY ARTERY`` becomes ``PA`` (anywhere in a word);
6. dates ``dd/dd/dddd`` and then ``dd.dd.dddd`` are removed;
7. code-like tokens, a letter followed by digits, a period and optional digits
   (``I50.9``), are removed;
8. whitespace before ``MMHG``, ``MM``, ``CM`` and ``%`` is removed (``20 MMHG`` ->
   ``20MMHG``), then a single whitespace character before a period;
9. every run of whitespace becomes one space, and ``" + "`` becomes ``+``;
10. ``+CVPMMHG`` becomes ``MMHG``: a pressure written "30 + CVP mmHg" (right atrial
    pressure added) reads as ``30MMHG``;
11. the text is stripped and ends with one space (phrases end with a space);
12. the final period is added to the sentences listed in :data:`ADD_PERIOD`
    (``LV EJECTION FRACTION IS 60%`` -> ``... 60%.``) where no period follows;
13. runs of periods become one period.

Values are then taken out: every number (digits, optionally a point and more
digits, so a period right after an integer goes with it: ``IS 5.`` leaves ``IS <#>``)
and every severity word (``MILD``, ``MODERATE``, ``SEVERE``, the two combinations,
``VERY SEVERE``) not preceded by a letter. In the text with ``<#>`` in their place,
two sentences are rewritten to their phrase (:data:`REWRITES`): the long form of the
normal inferior vena cava sentence, and ``ANALYSIS.:`` after the wall motion
heading.

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

# Sentences that the published cleaning ends with a period where none follows (12.):
# reports often leave it out, and the phrases have it.
ADD_PERIOD: tuple[str, ...] = (
    "THE PEAK TRANSAORTIC GRADIENT IS <#>MMHG",
    "THE MEAN TRANSAORTIC GRADIENT IS <#>MMHG",
    "LV EJECTION FRACTION IS <#>%",
    "ESTIMATED PA PRESSURE IS <#>MMHG",
    "RESTING SEGMENTAL WALL MOTION ANALYSIS",
    "THE IVC DIAMETER IS <#>MM",
    "EST RV/RA PRESSURE GRADIENT IS <#>MMHG",
    "ESTIMATED PEAK RVSP IS <#>MMHG",
    "HEART FAILURE, UNSPECIFIED",
    "CHEST PAIN, UNSPECIFIED",
    "SINUS OF VALSALVA: <#>CM",
    "THE PEAK TRANSMITRAL GRADIENT IS <#>MMHG",
    "THE MEAN TRANSMITRAL GRADIENT IS <#>MMHG",
    "ASCENDING AORTA <#>CM",
    "ESTIMATED PA SYSTOLIC PRESSURE IS <#>MMHG",
    "ICD_CODE SHORTNESS BREATH",
    "ICD_CODE ABNORMAL ELECTROCARDIOGRAM ECG EKG",
    "SHORTNESS BREATH",
    "ABNORMAL ELECTROCARDIOGRAM ECG EKG",
    "THE LEFT ATRIAL APPENDAGE IS NORMAL IN APPEARANCE WITH NO EVIDENCE OF THROMBUS",
)
# Rewrites of the text with <#> in place of the values, applied before phrase matching:
# other wordings of a sentence whose phrase the weights know.
REWRITES: tuple[tuple[str, str], ...] = (
    (
        "THE INFERIOR VENA CAVA IS NORMAL IN SIZE AND SHOWS A NORMAL RESPIRATORY COLLAPSE, "
        "CONSISTENT WITH NORMAL RIGHT ATRIAL PRESSURE (<#>MMHG).",
        "THE INFERIOR VENA CAVA SHOWS A NORMAL RESPIRATORY COLLAPSE "
        "CONSISTENT WITH NORMAL RIGHT ATRIAL PRESSURE (<#>MMHG).",
    ),
    ("RESTING SEGMENTAL WALL MOTION ANALYSIS.:", "RESTING SEGMENTAL WALL MOTION ANALYSIS."),
)

# A value as the published code reads it: note that ``\d`` is any Unicode digit and
# that an integer takes a period right after it ("5." in "IS 5. THE").
_NUMBER = r"\d+\.?\d*"
# The cleaning rules (see the module docstring), in their order. Regular expressions
# with Python's default (Unicode) classes, as the weights were trained with.
_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\^|CRLF|‡"), ""),  # 2.
    (re.compile(r"(?<=\D)\.|\.(?=\D)"), ". "),  # 3. a period not between digits (or a digit and an end)
    (re.compile(r"\[|\]"), ""),  # 4.
    (re.compile(r"\bWAS\b"), "IS"),  # 5.
    (re.compile(r"\bWERE\b"), "ARE"),
    (re.compile(r"\bAND/OR\b"), "AND"),
    (re.compile("NORMALLY"), "NORMAL"),
    (re.compile("MILDLY"), "MILD"),
    (re.compile("MODERATELY"), "MODERATE"),
    (re.compile("SEVERELY"), "SEVERE"),
    (re.compile("PULMONARY ARTERY"), "PA"),
    (re.compile(r"\d{2}/\d{2}/\d{4}"), ""),  # 6.
    (re.compile(r"\d{2}\.\d{2}\.\d{4}"), ""),
    (re.compile(r"[A-Z]\d+\.\d*\b"), ""),  # 7.
    (re.compile(r"\s+(?=MMHG|MM|CM|%)"), ""),  # 8.
    (re.compile(r"\s\."), "."),
    (re.compile(r"\s+"), " "),  # 9.
    (re.compile(r"\s\+\s"), "+"),
    (re.compile(r"\+CVPMMHG"), "MMHG"),  # 10.
)
# 12.: each sentence with its values as numbers, not already followed by a period
_MISSING_PERIOD = re.compile(
    "|".join(
        "(?:" + re.escape(sentence).replace(re.escape(PLACEHOLDER), f"(?:{_NUMBER})") + r")(?!\.)"
        for sentence in ADD_PERIOD
    )
)
_PERIODS = re.compile(r"\.+")  # 13.
# values: numbers and severity words not preceded by a letter (a combination before its first word)
_VALUE = re.compile(
    _NUMBER + r"|(?<![A-Za-z])(?:MODERATE/SEVERE|MILD/MODERATE|MILD|MODERATE|SEVERE|VERY SEVERE)"
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
        """The published EchoCLIP-R cleaning, rule for rule (see the module docstring).

        >>> EchoClipRTokenizer.clean("LV ejection fraction was 55 %")
        'LV EJECTION FRACTION IS 55%. '
        """
        if not isinstance(text, str):
            raise TypeError(f"a report must be str, not {type(text).__name__}")
        if len(text) < 2:
            return text
        text = text.upper().strip().replace("`", "'")
        for pattern, replacement in _RULES:
            text = pattern.sub(replacement, text)
        text = text.strip() + " "
        text = _MISSING_PERIOD.sub(lambda m: m.group() + ".", text)
        return _PERIODS.sub(".", text)

    @staticmethod
    def template(cleaned: str) -> tuple[list[str], str]:
        """The values of a cleaned report and its text with ``<#>`` in their place, rewritten (:data:`REWRITES`)."""
        values = _VALUE.findall(cleaned)
        text = _VALUE.sub(PLACEHOLDER, cleaned)
        for before, after in REWRITES:
            text = text.replace(before, after)
        return values, text

    def encode_with_stats(self, text: str) -> TemplateEncoding:
        """Ids of one report (``<bos>``, phrases and values, ``<eos>``; not padded or truncated) and what was dropped."""
        cleaned = self.clean(text)
        values, template = self.template(cleaned)
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
        _, template = EchoClipRTokenizer.template(EchoClipRTokenizer.clean(report))
        counts.update(s for s in _SENTENCE_END.split(template) if s.strip())
    lines = [sentence for sentence, count in counts.most_common(max_phrases) if count >= min_frequency]
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path
