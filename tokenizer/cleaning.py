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
``1000 ML``. Cleaning is idempotent: ``clean(clean(x)) == clean(x)``.

The cleaning travels with the tokenizer: :meth:`Cleaner.normalizer` is the same
cleaning as a ``tokenizers`` normalizer, which ``EchoTokenizer.save`` writes into
``tokenizer.json``, so that ``transformers`` loaders give our ids on raw text. That
normalizer is the definition: :class:`Cleaner` hands it every text with a non-ASCII
character, and cleans ASCII text (nearly every report) by the same steps in Python,
about 15 µs a report against about 220 µs in the normalizer (the date and identifier
patterns run only on reports that contain a long number or a date-like group); tests
hold the two paths equal. The patterns are written once for both engines (Python's
``re`` with ``re.ASCII``, Oniguruma with its ASCII options). Upper-casing, which
``tokenizers`` lacks, is ``str.upper`` as a character map (:mod:`.charsmap`).

Limits of the normalizer, all outside ASCII: NFKC follows the Unicode version of the
installed ``tokenizers`` and upper-casing that of the Python that saved the file
(characters new in a later version may differ); normalising and upper-casing run two
rounds (enough for every character, see ``_CASE_ROUNDS``); and a short run of
combining marks (under six bytes) right after a control character (a tab, a line
break) keeps only its first mark.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any, Literal

from tokenizers import Regex, normalizers

from .charsmap import SEPARATOR, uppercase_steps

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
_ID_LABEL = (
    r"\b(MRN|MR ?#|MEDICAL RECORD(?: NUMBER| NO\.?)?|ACC(?:ESSION)?(?: NUMBER| NO\.?)?|ACCT|FIN|CSN"
    r"|PATIENT ID|PT ID|STUDY ID)(\s*[:#]?\s*#?\s*)"
)
_LABELLED_VALUE = r"(?=[A-Z-]*\d{4})[A-Z0-9][A-Z0-9-]{3,}"
# Python keeps the label by its groups; Oniguruma keeps everything before \K out of the match
_LABELLED_ID = _ID_LABEL + _LABELLED_VALUE
_LABELLED_ID_ONIG = _ID_LABEL + r"\K" + _LABELLED_VALUE
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


def _onig(patterns: str | tuple[str, ...], uppercase: bool) -> Regex:
    """The same pattern for ``tokenizers`` (Oniguruma): W, D, S make \\w, \\b, \\d, \\s ASCII; iI ignores ASCII case."""
    options = "(?WDS)" if uppercase else "(?iIWDS)"
    return Regex(options + (patterns if isinstance(patterns, str) else "|".join(patterns)))


# C0 controls except whitespace, and DEL
_ASCII_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1b\x7f]")
# ASCII whitespace other than the space (what str.split() splits on)
_ASCII_WHITESPACE = str.maketrans("\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f", " " * 9)
_SURROGATES = re.compile(r"[\ud800-\udfff]")
# additionally: C1 controls, soft hyphen, zero-width and bidi format characters, BOM
_UNICODE_CONTROL = (
    r"[\x00-\x08\x0e-\x1b\x7f-\x84\x86-\x9f\u00ad\u200b-\u200f\u202a-\u202e\u2060-\u206f\ufeff]"
)
# what str.isspace() holds true, so that a run of them is what str.split() splits on
WHITESPACE = "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
# Upper-casing can give text that is not normalised ('ǰ' -> 'J' + caron, 'ΐ' -> three
# characters that NFKC composes again), and normalising can give lower case ('ᵃ' ->
# 'a'): two rounds of both reach a stable text (every character and 300,000 random
# strings of up to four letters and marks took at most two), which keeps cleaning
# idempotent.
_CASE_ROUNDS = 2


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

    ``normalizer`` is the cleaning of a saved tokenizer, used for non-ASCII text (by
    default :meth:`normalizer` builds it from the config).

    >>> Cleaner()("Echo  on 03/14/2023,  MRN: 12345678.\\nLVEF 55 %")
    'ECHO ON <DATE>, MRN: <ID>. LVEF 55 %'
    """

    def __init__(
        self, config: CleaningConfig | None = None, normalizer: normalizers.Normalizer | None = None
    ) -> None:
        self.config = cfg = config or CleaningConfig()
        self._date = _compile(_DATE, cfg.uppercase)
        self._labelled_id = _compile(_LABELLED_ID, cfg.uppercase)
        self._bare_id = _compile(_BARE_ID, cfg.uppercase)
        self._normalizer = normalizer

    def __call__(self, text: str) -> str:
        if not isinstance(text, str):
            raise TypeError(f"a report must be str, not {type(text).__name__}")
        cfg = self.config
        if not text.isascii():
            return self._unicode(text)
        # the fast path of nearly every report: the steps of the normalizer, for ASCII text
        if cfg.uppercase:
            text = text.upper()
        if not text.isprintable():  # a control character, or whitespace other than " "
            if cfg.collapse_whitespace:
                text = text.replace("\n", " ")
                if not text.isprintable():
                    text = text.translate(_ASCII_WHITESPACE)
            if cfg.remove_control and not text.isprintable():
                text = _ASCII_CONTROL.sub("", text)
            elif cfg.uppercase and SEPARATOR in text:  # the upper-casing step removes it
                text = text.replace(SEPARATOR, "")
        if cfg.collapse_whitespace and ("  " in text or text.startswith(" ") or text.endswith(" ")):
            text = " ".join(text.split())
        if (cfg.mask_dates or cfg.mask_identifiers) and _may_hold_date_or_id(text):
            if cfg.mask_dates:
                text = self._date.sub(DATE_TOKEN, text)
            if cfg.mask_identifiers:
                text = self._labelled_id.sub(_keep_label, text)
                text = self._bare_id.sub(ID_TOKEN, text)
        return text

    def normalizer(self) -> normalizers.Normalizer:
        """This cleaning as a ``tokenizers`` normalizer (what ``tokenizer.json`` carries).

        >>> Cleaner().normalizer().normalize_str("lvef  55 %\\u00a0on 03/14/2023")
        'LVEF 55 % ON <DATE>'
        """
        if self._normalizer is None:
            self._normalizer = build_normalizer(self.config)
        return self._normalizer

    @property
    def has_normalizer(self) -> bool:
        """Whether the normalizer is at hand (given, or built already) rather than still to build."""
        return self._normalizer is not None

    def _unicode(self, text: str) -> str:
        try:
            return self.normalizer().normalize_str(text)
        except UnicodeEncodeError:  # lone surrogates cannot be written as UTF-8 at all: they always go
            return self.normalizer().normalize_str(_SURROGATES.sub("", text))


def build_normalizer(config: CleaningConfig) -> normalizers.Normalizer:
    """The steps of :class:`Cleaner` as one ``tokenizers`` normalizer (see the module docstring)."""
    cfg = config
    # neither normalising nor upper-casing makes a control character: removed once
    steps: list[normalizers.Normalizer] = (
        [normalizers.Replace(Regex(_UNICODE_CONTROL), "")] if cfg.remove_control else []
    )
    case_round: list[normalizers.Normalizer] = []
    if cfg.unicode_form:
        case_round.append(normalizers.NFKC() if cfg.unicode_form == "NFKC" else normalizers.NFC())
    if cfg.uppercase:
        case_round += uppercase_steps()
    steps += case_round * (_CASE_ROUNDS if cfg.unicode_form and cfg.uppercase else 1)
    if cfg.collapse_whitespace:
        steps += [
            normalizers.Replace(Regex(f"[{WHITESPACE}]+"), " "),
            normalizers.Replace(Regex(r"\A | \z"), ""),
        ]
    if cfg.mask_dates:
        steps.append(normalizers.Replace(_onig(_DATE, cfg.uppercase), DATE_TOKEN))
    if cfg.mask_identifiers:
        steps.append(normalizers.Replace(_onig(_LABELLED_ID_ONIG, cfg.uppercase), ID_TOKEN))
        steps.append(normalizers.Replace(_onig(_BARE_ID, cfg.uppercase), ID_TOKEN))
    return normalizers.Sequence(steps)


def _keep_label(match: re.Match[str]) -> str:
    return f"{match.group(1)}{match.group(2)}{ID_TOKEN}"


def clean(text: str, config: CleaningConfig | None = None) -> str:
    """Clean one report (see :class:`Cleaner`; build a ``Cleaner`` once to clean many)."""
    return Cleaner(config)(text)
