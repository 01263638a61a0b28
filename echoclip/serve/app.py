"""The FastAPI app of ``echoclip serve``: a JSON API and one page that uses it.

``POST /api/search/video``  an uploaded DICOM/AVI/MP4 -> the reports most like it, zero-shot findings
                            (several files of one study: answered for the study, see below)
``POST /api/search/text``   a report text -> the indexed videos most like it (with thumbnails)
``POST /api/zeroshot``      an uploaded video -> EF with its spread, device/finding/view probabilities
``POST /api/draft``         an uploaded video or study -> a draft report, each section with its source
                            and similarity (when the server has a section index)
``GET  /api/health``        the model and index served
``GET  /``                  the page; ``/docs`` the API (Swagger UI, served from here, no CDN)

The video endpoints say whether the upload is unlike the model's training videos
(``ood``, from the model's OOD reference; ``null`` when it has none), with the warning
the page shows then. A server started with a section index adds the draft report to a
video search; one started with reference reports (``neighbours``) gives every EF, device
and finding its neighbour label beside the prompt prediction.

``/api/search/video``, ``/api/zeroshot`` and ``/api/draft`` take one file or several files of one study (the
``file`` field repeated, at most ``MAX_STUDY_FILES``). Several are answered at study level:
the readable files' embeddings pooled by the model's study pooling (views unknown), their OOD
score the mean of theirs; files that cannot be read are skipped and listed in ``skipped``, and
a study none of whose files can be read is a 422.

Every refusal is a 4xx with ``{"detail": "..."}``: a bad upload says what is wrong with it.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fastapi import FastAPI, File, Query, UploadFile
from fastapi import Path as PathParam
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, Field, field_validator

import echoclip
from echoclip.errors import DataError, EchoclipError
from echoclip.serve.engine import PROMPT_SETS, Engine
from echoclip.serve.media import animated_preview, data_url
from echoclip.serve.uploads import BodySizeLimit, UploadError, display_name, read_upload

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
MAX_K = 50
TEXT_LIMIT = 2000
DEFAULT_MAX_UPLOAD_MB = 64.0
MAX_STUDY_FILES = 64
FILES = "a DICOM, AVI or MP4 echo video, or several files of one study (repeat the field)"
# The page loads nothing from elsewhere; say so to the browser too.
PAGE_POLICY = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)


class Problem(BaseModel):
    detail: str = Field(description="what is wrong, in one sentence")


class VideoInfo(BaseModel):
    file: str = Field(description="the upload's file name, without folders")
    frames: int
    fps: float
    width: int
    height: int


class SkippedFile(BaseModel):
    file: str = Field(description="the upload's file name, without folders")
    reason: str = Field(description="why it could not be read")


class Hit(BaseModel):
    rank: int
    score: float = Field(description="cosine similarity of the query and this row")
    row: int = Field(description="row of the index")
    study_id: str | None = None
    view: str | None = None
    split: str | None = None
    report: str | None = None
    thumbnail: str | None = Field(None, description="URL of a still of the video (text search)")


NEIGHBOURS = "the mean label of the k nearest reference reports (null: the server has none with this label)"


class Regression(BaseModel):
    value: float = Field(description="EchoCLIP's rank-based estimate")
    sd: float = Field(description="standard deviation of the softmax over candidate values")
    unit: str
    method: str
    neighbours: float | None = Field(None, description=NEIGHBOURS + ", weighted by similarity")


class Binary(BaseModel):
    name: str
    group: str = Field(description="the prompt set: devices, findings ...")
    description: str
    probability: float | None
    score: float | None = None
    method: str
    neighbours: float | None = Field(None, description=NEIGHBOURS + ": the share that have it")


class Categorical(BaseModel):
    name: str
    predicted: str
    probabilities: dict[str, float]


class Findings(BaseModel):
    ejection_fraction: Regression | None
    binary: list[Binary]
    categorical: list[Categorical]
    neighbours_k: int | None = Field(None, description="reference reports per neighbour label; null: none")


class DraftSection(BaseModel):
    name: str = Field(description="the section: lv, rv, atria, valves, ...")
    heading: str
    text: str = Field(
        description="the consensus of the nearest reports for this section; empty when not drafted"
    )
    study_id: str | None = Field(description="the indexed study the text comes from")
    similarity: float | None = Field(description="cosine similarity of the video and the text")
    message: str | None = Field(None, description="why the section has no text")
    presence: float | None = Field(
        None,
        description="similarity-weighted share of the video's nearest whole reports that have this "
        "section; the draft has it from 0.4; null: the index has no text of it",
    )


class Draft(BaseModel):
    text: str = Field(description="the drafted sections as a headed report")
    presence_k: int | None = Field(None, description="nearest whole reports that decided the sections")
    sections: list[DraftSection]


class OutOfDistribution(BaseModel):
    score: float = Field(
        description="mean cosine similarity to the nearest training videos of the model's reference"
    )
    threshold: float = Field(
        description="held-out training-like videos score below it only rarely (2.5 % by default)"
    )
    out_of_distribution: bool = Field(description="the score is below the threshold")
    warning: str | None = Field(description="what to tell a person when the video is out of distribution")


class ZeroShotResult(BaseModel):
    video: VideoInfo = Field(description="the upload (of several: the first readable one)")
    level: str = Field("video", description="video: one file answered; study: several pooled")
    videos: list[VideoInfo] = Field(default_factory=list, description="every readable file of the study")
    skipped: list[SkippedFile] = Field(default_factory=list, description="files of the study not read")
    findings: Findings
    ood: OutOfDistribution | None = Field(
        description="whether the video is unlike the model's training videos; null: the model has no OOD reference"
    )
    timing_ms: dict[str, float]


class VideoSearchResult(ZeroShotResult):
    preview: str = Field(description="animated WebP of the video, as a data URL")
    target: str = Field(description="the index searched: reports, or videos with their reports")
    results: list[Hit]
    draft: Draft | None = Field(None, description="the draft report; null: the server has no section index")


class DraftResult(BaseModel):
    video: VideoInfo = Field(description="the upload (of several: the first readable one)")
    level: str = Field("video", description="video: one file drafted for; study: several pooled")
    videos: list[VideoInfo] = Field(default_factory=list, description="every readable file of the study")
    skipped: list[SkippedFile] = Field(default_factory=list, description="files of the study not read")
    draft: Draft
    ood: OutOfDistribution | None
    timing_ms: dict[str, float]


class TextQuery(BaseModel):
    text: str = Field(min_length=1, max_length=TEXT_LIMIT, examples=["SEVERELY REDUCED LV FUNCTION."])
    k: int = Field(5, ge=1, le=MAX_K)

    @field_validator("text")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the text is blank")
        return value


class TextSearchResult(BaseModel):
    results: list[Hit]
    timing_ms: dict[str, float]


class Health(BaseModel):
    status: str
    version: str
    model: str
    model_hash: str
    device: str
    indexes: dict[str, int] = Field(description="rows of each index served")
    max_upload_mb: float
    ood_reference: bool = Field(description="whether uploads are checked against the model's training data")
    sections: list[str] | None = Field(
        None, description="the sections a draft report holds; null: no section index"
    )
    neighbours: int | None = Field(None, description="reference reports with labels; null: none")


UPLOAD_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": Problem, "description": "empty upload, or a malformed multipart body"},
    413: {"model": Problem, "description": "upload over the size limit"},
    422: {"description": "not a readable video, or invalid parameters"},
}


def create_app(
    model_dir: str | os.PathLike[str],
    index_dir: str | os.PathLike[str],
    *,
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
    device: str | None = None,
    video_root: str | os.PathLike[str] | None = None,
    sections: str | os.PathLike[str] | None = None,
    neighbours: str | os.PathLike[str] | None = None,
    neighbours_k: int | None = None,
    prompt_sets: Sequence[str] | None = None,
) -> FastAPI:
    """The app serving ``model_dir`` and the index of its embeddings in ``index_dir``.

    Both are loaded here, once: a wrong path or an index of another model fails now,
    not at the first request. ``video_root`` is the folder that relative video paths of
    the index start from (the data set's folder); absolute paths, as ``echoclip embed``
    writes, need none. ``sections``: a section index, for draft reports; ``neighbours``:
    reference reports with labels (the training split's ``echoclip embed`` folder), for
    neighbour labels of the ``neighbours_k`` nearest (default 50). ``prompt_sets``: the
    shipped names or JSON files the page asks (default: EF, devices, findings, views).
    """
    if not max_upload_mb > 0:
        raise ValueError(f"the upload limit must be positive, not {max_upload_mb} MB")
    engine = Engine(
        model_dir,
        index_dir,
        device=device,
        video_root=video_root,
        sections=sections,
        neighbours=neighbours,
        neighbours_k=neighbours_k,
        prompt_sets=PROMPT_SETS if prompt_sets is None else prompt_sets,
    )
    max_bytes = int(max_upload_mb * 2**20)
    # FastAPIOffline: FastAPI whose /docs page loads Swagger UI from this server, not a CDN
    app = FastAPIOffline(
        title="echoclip",
        version=echoclip.__version__,
        description="Search echo reports by video and videos by report text; zero-shot findings.",
    )
    app.state.engine = engine
    app.add_middleware(BodySizeLimit, max_bytes=max_bytes)

    @app.exception_handler(UploadError)
    def _upload_error(request: Any, e: UploadError) -> JSONResponse:
        return JSONResponse({"detail": e.message}, status_code=e.status)

    @app.exception_handler(RequestValidationError)
    def _invalid(request: Any, e: RequestValidationError) -> JSONResponse:
        # FastAPI's default echoes each bad input back; an upload sent as a plain form field
        # would come back whole, patient header and all. Say where and what, not the value.
        errors = [{k: err[k] for k in ("loc", "msg", "type") if k in err} for err in e.errors()]
        return JSONResponse({"detail": jsonable_encoder(errors)}, status_code=422)

    @app.exception_handler(EchoclipError)
    def _refused(request: Any, e: EchoclipError) -> JSONResponse:
        return JSONResponse({"detail": " ".join(str(e).split())}, status_code=422)

    def _receive(file: UploadFile) -> tuple[VideoInfo, Any, dict[str, float]]:
        start = time.perf_counter()
        name, video = read_upload(file.file, file.filename, max_bytes)
        decoded = time.perf_counter()
        emb, layer_stats = engine.embed_video(video)
        timing = {"decode": _ms(decoded - start), "embed": _ms(time.perf_counter() - decoded)}
        return _info(name, video), (video, emb, layer_stats), timing

    def _receive_study(files: list[UploadFile]) -> tuple[dict[str, Any], Any, dict[str, float]]:
        """One file as :func:`_receive`; several as one study: ``(fields of the result, (first
        video, study embedding, layer statistics), timing)``."""
        if not files:
            raise UploadError(422, "no file uploaded")
        if len(files) == 1:
            info, received, timing = _receive(files[0])
            return {"video": info, "videos": [info]}, received, timing
        if len(files) > MAX_STUDY_FILES:
            raise UploadError(422, f"{len(files)} files: a study takes at most {MAX_STUDY_FILES}")
        start = time.perf_counter()
        infos, videos, skipped = [], [], []
        for file in files:
            try:
                name, video = read_upload(file.file, file.filename, max_bytes)
            except UploadError as e:
                if e.status == 413:
                    raise
                skipped.append(SkippedFile(file=display_name(file.filename), reason=e.message))
                continue
            infos.append(_info(name, video))
            videos.append(video)
        if not videos:
            reasons = "; ".join(s.reason for s in skipped)
            raise UploadError(
                422, f"none of the {len(files)} files of the study is a readable video: {reasons}"
            )
        decoded = time.perf_counter()
        emb, layer_stats = engine.embed_study(videos)
        timing = {"decode": _ms(decoded - start), "embed": _ms(time.perf_counter() - decoded)}
        fields = {"video": infos[0], "videos": infos, "skipped": skipped, "level": "study"}
        return fields, (videos[0], emb, layer_stats), timing

    @app.post("/api/search/video", response_model=VideoSearchResult, responses=UPLOAD_ERRORS)
    def search_video(
        file: list[UploadFile] = File(description=FILES),
        k: int = Query(5, ge=1, le=MAX_K, description="results to return"),
    ) -> Any:
        """The reports (or indexed videos, with their reports) nearest to an uploaded video or
        study, its zero-shot findings and an animated preview (of the first video)."""
        fields, (video, emb, layer_stats), timing = _receive_study(file)
        start = time.perf_counter()
        results = engine.search(engine.report_target, emb, k)
        findings = engine.zero_shot(emb)
        ood = engine.out_of_distribution(layer_stats)
        draft = engine.draft(emb)
        timing["search"] = _ms(time.perf_counter() - start)
        preview = data_url(animated_preview(video), "image/webp")
        log.info("video search: %d videos, %s ms", len(fields["videos"]), timing)
        return VideoSearchResult(
            **fields,
            findings=Findings(**findings),
            ood=ood,
            timing_ms=timing,
            preview=preview,
            target=engine.report_target,
            results=[Hit(**r) for r in results],
            draft=draft,
        )

    @app.post(
        "/api/draft",
        response_model=DraftResult,
        responses={
            **UPLOAD_ERRORS,
            404: {"model": Problem, "description": "the server has no section index"},
        },
    )
    def draft_report(file: list[UploadFile] = File(description=FILES)) -> Any:
        """A draft report for an uploaded video or study: per section, the consensus of the
        nearest reports' text, with the study it comes from and its similarity."""
        if engine.sections is None:
            return JSONResponse(
                {"detail": "the server has no section index (start it with --sections)"}, status_code=404
            )
        fields, (_, emb, layer_stats), timing = _receive_study(file)
        start = time.perf_counter()
        draft = engine.draft(emb)
        ood = engine.out_of_distribution(layer_stats)
        timing["draft"] = _ms(time.perf_counter() - start)
        log.info("draft: %d videos, %s ms", len(fields["videos"]), timing)
        return DraftResult(**fields, draft=draft, ood=ood, timing_ms=timing)

    @app.post("/api/zeroshot", response_model=ZeroShotResult, responses=UPLOAD_ERRORS)
    def zeroshot(file: list[UploadFile] = File(description=FILES)) -> Any:
        """EF (with the spread of the model's belief), devices, findings and view of an uploaded
        video, or of a study's videos together."""
        fields, (_, emb, layer_stats), timing = _receive_study(file)
        start = time.perf_counter()
        findings = engine.zero_shot(emb)
        ood = engine.out_of_distribution(layer_stats)
        timing["zero_shot"] = _ms(time.perf_counter() - start)
        log.info("zero-shot: %d videos, %s ms", len(fields["videos"]), timing)
        return ZeroShotResult(**fields, findings=Findings(**findings), ood=ood, timing_ms=timing)

    @app.post(
        "/api/search/text",
        response_model=TextSearchResult,
        responses={
            400: {"model": Problem, "description": "the body is not JSON"},
            404: {"model": Problem, "description": "the index holds no videos"},
            413: {"model": Problem, "description": "body over the size limit"},
        },
    )
    def search_text(query: TextQuery) -> Any:
        """The indexed videos nearest to a report text, each with a thumbnail URL."""
        if "videos" not in engine.indexes:
            return JSONResponse({"detail": "the index has no videos/ index to search"}, status_code=404)
        start = time.perf_counter()
        emb = engine.embed_text(query.text)
        embedded = time.perf_counter()
        results = engine.search("videos", emb, query.k)
        timing = {"embed": _ms(embedded - start), "search": _ms(time.perf_counter() - embedded)}
        log.info("text search: %d characters, %s ms", len(query.text), timing)
        return TextSearchResult(
            results=[Hit(**r, thumbnail=f"/api/videos/{r['row']}/thumbnail") for r in results],
            timing_ms=timing,
        )

    @app.get(
        "/api/videos/{row}/thumbnail",
        response_class=Response,
        responses={
            200: {"content": {"image/jpeg": {}}, "description": "a still of the video"},
            404: {"model": Problem, "description": "no such video, or its file cannot be read"},
        },
    )
    def video_thumbnail(
        row: int = PathParam(ge=0, le=2**62, description="row of the videos index"),
    ) -> Response:
        """A still (the middle frame) of an indexed video."""
        try:
            jpeg = engine.thumbnail(row)
        except DataError as e:
            return JSONResponse({"detail": str(e)}, status_code=404)
        return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    @app.get("/api/health", response_model=Health)
    def health() -> Any:
        """What is served: the model (name and hash of its files), the device and the index sizes."""
        return Health(
            status="ok",
            version=echoclip.__version__,
            model=engine.model_name,
            model_hash=engine.model_hash,
            device=str(engine.device),
            indexes={name: len(index) for name, index in engine.indexes.items()},
            max_upload_mb=max_upload_mb,
            ood_reference=engine.has_ood_reference,
            sections=None if engine.sections is None else engine.sections.default_sections,
            neighbours=None if engine.neighbours is None else len(engine.neighbours),
        )

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Content-Security-Policy": PAGE_POLICY})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def _info(name: str, video: Any) -> VideoInfo:
    return VideoInfo(
        file=name, frames=video.num_frames, fps=video.fps, width=video.width, height=video.height
    )


def _ms(seconds: float) -> float:
    return round(1000 * seconds, 1)
