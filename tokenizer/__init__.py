"""echoclip.tokenizer: a compact, lossless and fast tokenizer for echocardiography reports.

``EchoTokenizer`` learns frequent report phrases as single tokens, keeps numbers and
severity words as value tokens, and spells everything else with subwords or, for a
character it does not know, its UTF-8 bytes, so that no text is lost; ``EchoClipRTokenizer`` reproduces the id layout of the published EchoCLIP-R
template tokenizer from its phrase file. This package imports nothing else from
echoclip.
"""

from __future__ import annotations

from .cleaning import DATE_TOKEN, ID_TOKEN, Cleaner, CleaningConfig, clean
from .echo_tokenizer import EchoTokenizer
from .echoclip_r import EchoClipRTokenizer
from .errors import TokenizerError
from .values import PLACEHOLDER, expand_template

__all__ = [
    "DATE_TOKEN",
    "ID_TOKEN",
    "PLACEHOLDER",
    "Cleaner",
    "CleaningConfig",
    "EchoClipRTokenizer",
    "EchoTokenizer",
    "TokenizerError",
    "clean",
    "expand_template",
]
