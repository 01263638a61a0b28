"""Cleaning of report text before tokenization.

Cleaning is the only lossy step of :class:`~echoclip.tokenizer.EchoTokenizer`, and it
is deliberate: the tokenizer is lossless *on cleaned text*, ``decode(encode(x)) ==
clean(x)``. Each step is a switch of :class:`CleaningConfig`, applied in this order:

1. unicode normalisation (NFKC by default: full-width digits become ASCII digits,
   ligatures and non-breaking spaces become plain characters) and removal of
   control, format and surrogate characters;
2. upper-casing (echo reports are conventionally upper case; it halves the number
   of spellings the tokenizer has to learn);
3. whitespace: every run of whitespace becomes one space, and the ends are stripped;
4. dates (``03/14/2023``, ``2023-03-14``, ``14 MAR 2023``, ``MARCH 14, 2023``) become
   ``<DATE>``;
5. identifiers (a value with four digits or more after a label such as ``MRN:`` or
   ``ACCESSION #``, runs of six or more digits, phone numbers, DICOM UIDs, ICD-10 codes
   such as ``I50.9``) become ``<ID>``, so that patient identifiers never reach a
   vocabulary, an embedding or a log.

Clinical numbers stay as they are: ``55%``, ``50-55%``, ``120/80``, ``3.5 CM``,
``1000 ML``. Cleaning is idempotent: ``clean(clean(x)) == clean(x)``. It runs in
Python (about 15 µs for a typical ASCII report: the date and identifier patterns run
only on reports that contain a long number or a date-like group); the saved
``tokenizer.json`` carries no normaliser, so other loaders of that file must be given
cleaned text (:meth:`EchoTokenizer.clean`) to produce the same ids.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import asdict, dataclass
from typing import Any, Literal

DATE_TOKEN = "<DATE>"
ID_TOKEN = "<ID>"
PLACEHOLDER_TOKENS = (DATE_TOKEN, ID_TOKEN)

_MONTH = (
    r"(?:JAN(?:UARY)?|FEB(?:RUARY)?|MAR(?:CH)?|APR(?:IL)?|MAY|JUNE?|JULY?|AUG(?:UST)?"
    r"|SEP(?:T(?:EMBER)?)?|OCT(?:OBER)?|NOV(?:EMBER)?|DEC(?:EMBER)?)"
)
_DATE = (
    r"(?<![\w.])\d{1,2}[/.-]\d{1,2}[/.-](?:\d{4}|\d{2})(?![\w.]?\d)",  # 03/14/2023, 14.03.23
    r"(?<![\w.])\d{4}[/.-]\d{1,2}[/.-]\d{1,2}(?![\w.]?\d)",  # 2023-03-14
    rf"(?<![\w.])\d{{1,2}}[ -]?{_MONTH}\.?[ ,-]*\d{{4}}\b",  # 14 MAR 2023, 14-MAR-2023
    rf"\b{_MONTH}\.? \d{{1,2}}(?:ST|ND|RD|TH)?,? \d{{4}}\b",  # MARCH 14, 2023
)
_LABELLED_ID = (
    r"\b(MRN|MR ?#|MEDICAL RECORD(?: NUMBER| NO\.?)?|ACC(?:ESSION)?(?: NUMBER| NO\.?)?|ACCT|FIN|CSN"
    r"|PATIENT ID|PT ID|STUDY ID)(\s*[:#]?\s*#?\s*)(?=[A-Z-]*\d{4})[A-Z0-9][A-Z0-9-]{3,}"
)
_BARE_ID = (
    r"(?<![\w.])\d+(?:\.\d+){3,}(?![\w.]?\d)",  # DICOM UID 1.2.840.10008...
    r"\b[A-Z]{0,3}\d{6,}[A-Z]?\b",  # MRN-like digit runs
    r"(?<![\w.-])\(?\d{3}\)?[-.]\d{3}[-.]\d{4}\b",  # phone numbers 310-555-0123
    r"\b[A-TV-Z]\d{2}\.[0-9A-Z]{1,4}\b",  # ICD-10 codes with the dot: I50.9, I25.10
)
# Every date or identifier above contains one of these marks, once digits are written
# 0, letters A and date separators "." (0000: a year, a long number; 0.0.0, 0.00.0,
# 0.000: a numeric date or UID; A00.: an ICD code). Most reports contain none, and this
# check (a byte translation and five substring searches, a few µs) spares them the
# slower patterns.
_MARKS = bytes.maketrans(
    b"0123456789/-ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
    b"0000000000.." + b"A" * 52,
)


def _may_hold_date_or_id(text: str) -> bool:
    marks = text.encode("utf-8", "surrogatepass").translate(_MARKS)
    return (
        b"0000" in marks or b"0.0.0" in marks or b"0.00.0" in marks or b"0.000" in marks or b"A00." in marks
    )


def _compile(patterns: str | tuple[str, ...], uppercase: bool) -> re.Pattern[str]:
    # ASCII: \d is [0-9] in every pattern, so that the marks above find every match; after upper-casing
    # the patterns need not ignore case, which makes them several times faster.
    flags = re.ASCII if uppercase else re.ASCII | re.IGNORECASE
    return re.compile(patterns if isinstance(patterns, str) else "|".join(patterns), flags)


# C0 controls except whitespace, and DEL
_ASCII_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1b\x7f]")
# ASCII whitespace other than the space (what str.split() splits on)
_ASCII_WHITESPACE = str.maketrans("\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f", " " * 9)
_SURROGATES = re.compile(r"[\ud800-\udfff]")
# additionally: C1 controls, soft hyphen, zero-width and bidi format characters, BOM, lone surrogates
_UNICODE_CONTROL = re.compile(
    r"[\x00-\x08\x0e-\x1b\x7f-\x84\x86-\x9f\u00ad\u200b-\u200f\u202a-\u202e\u2060-\u206f\ufeff\ud800-\udfff]"
)


@dataclass(frozen=True)
class CleaningConfig:
    """Switches of the cleaning steps (see the module docstring for the order).

    ``unicode_form`` is ``"NFKC"``, ``"NFC"`` or ``None`` (keep the code points).
    """

    unicode_form: Literal["NFKC", "NFC"] | None = "NFKC"
    remove_control: bool = True
    uppercase: bool = True
    collapse_whitespace: bool = True
    mask_dates: bool = True
    mask_identifiers: bool = True

    def __post_init__(self) -> None:
        if self.unicode_form not in ("NFKC", "NFC", None):
            raise ValueError(f"unicode_form must be 'NFKC', 'NFC' or None, not {self.unicode_form!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CleaningConfig:
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(
                f"unknown cleaning options {sorted(unknown)}; known: {sorted(cls.__dataclass_fields__)}"
            )
        return cls(**data)


class Cleaner:
    """A callable that cleans one report with a fixed :class:`CleaningConfig`.

    >>> Cleaner()("Echo  on 03/14/2023,  MRN: 12345678.\\nLVEF 55 %")
    'ECHO ON <DATE>, MRN: <ID>. LVEF 55 %'
    """

    def __init__(self, config: CleaningConfig | None = None) -> None:
        self.config = cfg = config or CleaningConfig()
        self._date = _compile(_DATE, cfg.uppercase)
        self._labelled_id = _compile(_LABELLED_ID, cfg.uppercase)
        self._bare_id = _compile(_BARE_ID, cfg.uppercase)

    def __call__(self, text: str) -> str:
        if not isinstance(text, str):
            raise TypeError(f"a report must be str, not {type(text).__name__}")
        cfg = self.config
        if text.isascii():  # the fast path of nearly every report
            if cfg.uppercase:
                text = text.upper()
            if not text.isprintable():  # a control character, or whitespace other than " "
                if cfg.collapse_whitespace:
                    text = text.replace("\n", " ")
                    if not text.isprintable():
                        text = text.translate(_ASCII_WHITESPACE)
                if cfg.remove_control and not text.isprintable():
                    text = _ASCII_CONTROL.sub("", text)
        else:
            text = self._unicode(text)
            if cfg.collapse_whitespace:
                text = " ".join(text.split())
        if cfg.collapse_whitespace and ("  " in text or text.startswith(" ") or text.endswith(" ")):
            text = " ".join(text.split())
        if (cfg.mask_dates or cfg.mask_identifiers) and _may_hold_date_or_id(text):
            if cfg.mask_dates:
                text = self._date.sub(DATE_TOKEN, text)
            if cfg.mask_identifiers:
                text = self._labelled_id.sub(_keep_label, text)
                text = self._bare_id.sub(ID_TOKEN, text)
        return text

    def _unicode(self, text: str) -> str:
        cfg = self.config
        # lone surrogates cannot be written as UTF-8 at all: they always go
        text = _UNICODE_CONTROL.sub("", text) if cfg.remove_control else _SURROGATES.sub("", text)
        # Upper-casing can produce text that is not normalised ('ǰ' -> 'J' + caron) and
        # normalising can produce lower case ('ᵃ' -> 'a'): repeat until both are stable
        # so that cleaning stays idempotent.
        for _ in range(4):
            before = text
            if cfg.unicode_form:
                text = unicodedata.normalize(cfg.unicode_form, text)
                if cfg.remove_control:
                    text = _UNICODE_CONTROL.sub("", text)
            if cfg.uppercase:
                text = text.upper()
            if text == before:
                break
        return text


def _keep_label(match: re.Match[str]) -> str:
    return f"{match.group(1)}{match.group(2)}{ID_TOKEN}"


def clean(text: str, config: CleaningConfig | None = None) -> str:
    """Clean one report (see :class:`Cleaner`; build a ``Cleaner`` once to clean many)."""
    return Cleaner(config)(text)
