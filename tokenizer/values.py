"""Value tokens: numbers and severity words that the tokenizer keeps whole.

Every integer 0-100 is one token, so ``LV EJECTION FRACTION IS <#>%`` expands to 101
prompts that differ in exactly one token, and a model can give these tokens
value-aware embeddings (:meth:`EchoTokenizer.value_token_values`). The set:

- integers ``0`` ... ``100``;
- one-decimal numbers ``0.0`` ... ``9.9`` (lengths in cm, velocities in m/s);
- decimal fractions ``.0`` ... ``.9``, so that ``12.5`` is ``12`` + ``.5``;
- severity words ``MILD``, ``MODERATE``, ``SEVERE``, their combinations
  (``MILD/MODERATE``, ``MILD-MODERATE``, ``MILD TO MODERATE``, ...) and adverbs
  (``MILDLY``, ...), with an ordinal value 1-3.

A number is a value token only as a whole: ``1000``, ``05`` or ``A4C`` are not cut
into values; they are spelled by the subword model. Its characters include the
digits, so a digit spelled alone there has the id of the value 0-9 it reads as.
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Iterable

PLACEHOLDER = "<#>"

INTEGERS: tuple[str, ...] = tuple(str(i) for i in range(101))
DECIMALS: tuple[str, ...] = tuple(f"{i}.{d}" for i in range(10) for d in range(10))
FRACTIONS: tuple[str, ...] = tuple(f".{d}" for d in range(10))

SEVERITIES: dict[str, float] = {
    "MILD": 1.0,
    "MILDLY": 1.0,
    "MILD/MODERATE": 1.5,
    "MILD-MODERATE": 1.5,
    "MILD TO MODERATE": 1.5,
    "MODERATE": 2.0,
    "MODERATELY": 2.0,
    "MODERATE/SEVERE": 2.5,
    "MODERATE-SEVERE": 2.5,
    "MODERATE TO SEVERE": 2.5,
    "SEVERE": 3.0,
    "SEVERELY": 3.0,
}


def number_tokens() -> dict[str, float]:
    """Every number value token and its value, in vocabulary order."""
    out: dict[str, float] = {s: float(s) for s in INTEGERS}
    out.update({s: float(s) for s in DECIMALS})
    out.update({s: float(s) for s in FRACTIONS})
    return out


def severity_tokens(uppercase: bool = True) -> dict[str, float]:
    """Severity value tokens and their ordinal values (also lower and title case unless the text is upper-cased)."""
    out = dict(SEVERITIES)
    if not uppercase:
        for word, value in SEVERITIES.items():
            out[word.lower()] = value
            out[word.title()] = value
    return out


# Spans that phrase mining treats as values: phrases never contain a digit or a
# severity word, so a phrase token can never swallow a value.
VALUE_SPAN = re.compile(
    r"\d+(?:\.\d+)?|<DATE>|<ID>|\b(?:"
    + "|".join(sorted((re.escape(w) for w in SEVERITIES), key=len, reverse=True))
    + r")\b",
    re.IGNORECASE,
)


def format_value(value: object) -> str:
    """How a candidate value is written in a prompt: ``55``, ``3.5``, ``MILD``."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"a template value must be a number or str, not {type(value).__name__}")
    if isinstance(value, numbers.Integral):
        return str(int(value))
    value = float(value)
    if value.is_integer():
        return str(int(value))
    return f"{value:.6g}"


def expand_template(template: str, values: Iterable[object]) -> list[str]:
    """One prompt per value, with ``<#>`` replaced by the value.

    >>> expand_template("LV EJECTION FRACTION IS <#>%.", [35, 40.0, 42.5])
    ['LV EJECTION FRACTION IS 35%.', 'LV EJECTION FRACTION IS 40%.', 'LV EJECTION FRACTION IS 42.5%.']
    """
    if not isinstance(template, str):
        raise TypeError(f"a template must be str, not {type(template).__name__}")
    if PLACEHOLDER not in template:
        raise ValueError(f"template {template!r} has no {PLACEHOLDER} placeholder")
    return [template.replace(PLACEHOLDER, format_value(v)) for v in values]
