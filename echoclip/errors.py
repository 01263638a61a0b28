"""Exception types, one per domain, all under :class:`EchoclipError`.

The CLI catches :class:`EchoclipError` at the top, prints its message as one line
and exits 1. Each type also derives from the builtin a caller would expect
(``ValueError`` for bad data), so ``except ValueError`` keeps working.
"""

from __future__ import annotations

from pathlib import PurePath


class EchoclipError(Exception):
    """Base class of every error echoclip raises on purpose."""


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
