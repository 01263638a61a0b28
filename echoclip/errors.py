"""Exception types, one per domain.

Every error echoclip raises on purpose is an :class:`EchoclipError`, except those of
the two leaf libraries, which import nothing from echoclip and so define their own:
:class:`echoclip.tokenizer.TokenizerError` and :class:`echoclip.retrieval.RetrievalError`.
:func:`package_errors` names all of them; the command line catches those (and
``OSError`` and ``ValueError`` from bad input) at the top, prints the message as one
line and exits 1. Each type also derives from the builtin a caller would expect
(``ValueError`` for bad data), so ``except ValueError`` keeps working.
"""

from __future__ import annotations

from pathlib import PurePath


class EchoclipError(Exception):
    """Base class of every error the echoclip core raises on purpose."""


class VideoReadError(EchoclipError, ValueError):
    """A file could not be read as a video. The message names the file and the cause.

    A reader may also give the two parts apart: ``path``, the file as the message
    names it (patient data replaced, one component per component of the path it was
    given), and ``reason``. Datasets use them to name the file relative to their root.
    """

    def __init__(self, message: str, *, path: PurePath | None = None, reason: str | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.reason = reason


class DataError(EchoclipError, ValueError):
    """A data set, manifest or table is malformed (missing columns, empty, wrong values)."""


class ModelError(EchoclipError, ValueError):
    """A model config, checkpoint or model directory is wrong or incomplete."""


class ConfigError(EchoclipError, ValueError):
    """A run configuration or prompt set is invalid."""


class TrainingError(EchoclipError, RuntimeError):
    """A training run cannot go on (e.g. the loss became NaN); the message says where it stopped."""


def package_errors() -> tuple[type[Exception], ...]:
    """The error types of echoclip and of its two leaf libraries (imported on first call)."""
    from echoclip.retrieval.errors import RetrievalError
    from echoclip.tokenizer.errors import TokenizerError

    return (EchoclipError, TokenizerError, RetrievalError)
