"""``echoclip serve``: a local web page and JSON API over a model directory and an index.

::

    from echoclip.serve import create_app
    app = create_app("runs/clip/final", "runs/index")   # loads the model and the index once
    # uvicorn.run(app, host="127.0.0.1", port=8000)

Importing this package does no work; ``create_app`` imports FastAPI (the ``serve`` extra).
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from echoclip.serve.app import create_app

        return create_app
    raise AttributeError(f"module 'echoclip.serve' has no attribute {name!r}")
