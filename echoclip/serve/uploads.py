"""Uploaded videos: a size limit on request bodies, decoding in a private temporary folder
that is deleted at once, and error messages that name the upload, not the server's files.

A DICOM's patient fields never leave its reader (``echoclip.data.deid``): the decoded
video carries de-identified metadata only, and the reader's error messages are redacted.
The log names no upload (its name may be a patient's), only sizes and timings.
"""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

from echoclip.errors import VideoReadError

log = logging.getLogger(__name__)

# Extensions kept on the temporary copy (readers choose by content; FFmpeg may use the hint).
KNOWN_SUFFIXES = (".dcm", ".dicom", ".avi", ".mp4", ".m4v", ".mov", ".mkv", ".webm")
_UNSAFE = re.compile(r"[^A-Za-z0-9._ -]+")
NAME_LIMIT = 80
COPY_BLOCK = 1 << 20


class UploadError(Exception):
    """An upload the server will not process; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def display_name(filename: str | None) -> str:
    """The upload's own file name, without any folder, reduced to plain characters."""
    name = _UNSAFE.sub("_", Path(str(filename or "").replace("\\", "/")).name).strip(" .")
    return name[-NAME_LIMIT:] or "upload"


def read_upload(stream: Any, filename: str | None, max_bytes: int) -> tuple[str, Any]:
    """Decode an uploaded file object into a :class:`~echoclip.data.video.Video`.

    The bytes go to a folder only this process can read (``tempfile.mkdtemp`` makes it
    mode 0700), which is removed before this returns, whatever happens.

    Returns ``(display name, video)``. Raises :class:`UploadError`: 400 empty, 413 over
    ``max_bytes``, 422 not a readable video.
    """
    from echoclip.data.video import load_video

    name = display_name(filename)
    suffix = Path(name).suffix.lower()
    folder = Path(tempfile.mkdtemp(prefix="echoclip-upload-"))
    path = folder / ("upload" + (suffix if suffix in KNOWN_SUFFIXES else ""))
    try:
        size = _copy(stream, path, max_bytes)
        if size == 0:
            raise UploadError(400, f"{name}: the file is empty")
        try:
            video = load_video(path)
        except VideoReadError as e:
            raise UploadError(422, _public_message(str(e), path, name)) from None
        except Exception as e:  # a decoder failing on hostile bytes is still the upload's fault
            log.warning("an upload of %d bytes could not be decoded (%s)", size, type(e).__name__)
            raise UploadError(422, f"{name}: cannot be read as a video ({type(e).__name__})") from None
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return name, video


def _copy(stream: Any, path: Path, max_bytes: int) -> int:
    size = 0
    with open(path, "wb") as out:
        while block := stream.read(COPY_BLOCK):
            size += len(block)
            if size > max_bytes:
                raise UploadError(413, f"the upload is larger than the limit of {_megabytes(max_bytes)}")
            out.write(block)
    return size


def _public_message(message: str, path: Path, name: str) -> str:
    """A reader's message about the temporary copy, told about the upload instead."""
    message = message.replace(str(path), name).replace(str(path.parent), "")
    return message.replace(tempfile.gettempdir(), "")


def _megabytes(n: int) -> str:
    return f"{n / 2**20:g} MB"


Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[
    [Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]
]


class BodySizeLimit:
    """ASGI middleware: refuse request bodies over ``max_bytes`` with 413, before they are
    parsed or spooled. A declared ``Content-Length`` is refused at once; a body sent without
    one (chunked) is counted as it arrives and refused once it passes the limit (the
    exception reaches FastAPI's handler of HTTP errors from inside the body parser)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        from starlette.exceptions import HTTPException
        from starlette.responses import JSONResponse

        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        message = f"the upload is larger than the limit of {_megabytes(self.max_bytes)}"
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await JSONResponse({"detail": message}, status_code=413)(scope, receive, send)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            item = await receive()
            if item["type"] == "http.request":
                received += len(item.get("body", b""))
                if received > self.max_bytes:
                    raise HTTPException(413, message)
            return item

        await self.app(scope, counting_receive, send)
