"""The error type of the tokenizer library."""

from __future__ import annotations


class TokenizerError(ValueError):
    """A tokenizer file, phrase file or corpus is missing, malformed or unusable. The message names the file."""
