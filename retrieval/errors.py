"""The one error type of the retrieval library.

``echoclip.retrieval`` is a leaf library (it imports no other echoclip module), so
it defines its own error. It derives from ``ValueError`` like the package's other
errors, which is what the command line catches and prints as one line.
"""

from __future__ import annotations


class RetrievalError(ValueError):
    """An embedding store or index is malformed, or a query does not fit the index."""
