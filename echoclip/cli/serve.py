"""``echoclip serve``: a local web page and JSON API to search reports by video, videos by
text, and read zero-shot findings, from a model directory and its index."""

from __future__ import annotations

import argparse
import ipaddress

HELP = "serve a web page and JSON API: search by video or text, zero-shot EF and devices, draft reports"
EXAMPLE = (
    "echoclip serve --model runs/demo/clip/final --index runs/demo/index"
    "\n  echoclip serve --model runs/demo/clip/final --index runs/demo/index "
    "--sections runs/demo/sections --neighbours runs/demo/emb"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="the model directory that made the indexed embeddings")
    p.add_argument(
        "--index", required=True, help="an index folder, or one holding videos/ and reports/ indexes"
    )
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default: 127.0.0.1, this machine only; the page has no login)",
    )
    p.add_argument("--port", type=int, default=8000, help="port to listen on (default: 8000)")
    p.add_argument("--max-upload-mb", type=float, default=64.0, help="largest upload accepted (default: 64)")
    p.add_argument(
        "--video-root",
        help="folder that relative video paths of the index start from, for thumbnails "
        "(default: the one the index records)",
    )
    p.add_argument(
        "--sections",
        metavar="SECTION_INDEX",
        help="a section index (`echoclip index --sections`): the page drafts a report for each uploaded "
        "video, each section with the study it comes from and its similarity",
    )
    p.add_argument(
        "--neighbours",
        help="reference reports with labels (the folder `echoclip embed` wrote for the training split): "
        "the page shows each EF, device and finding's neighbour label beside the prompt prediction",
    )
    p.add_argument("--neighbours-k", type=int, help="nearest reports a neighbour label averages (default 50)")
    p.add_argument(
        "--prompts",
        help="comma-separated prompt sets the page asks: shipped names or JSON files, such as the "
        "findings `echoclip demo` reads from its training reports "
        "(default: ejection_fraction,devices,findings,views)",
    )
    p.add_argument("--device", help="cpu, cuda ... (default: a GPU when present)")


def run(args: argparse.Namespace) -> int:
    from echoclip.errors import ConfigError

    try:
        import uvicorn
    except ModuleNotFoundError:
        raise ConfigError("echoclip serve needs the serve extra: pip install 'echoclip[serve]'") from None
    from echoclip.serve.app import create_app

    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port must be 0-65535, not {args.port}")
    app = create_app(
        args.model,
        args.index,
        max_upload_mb=args.max_upload_mb,
        device=args.device,
        video_root=args.video_root,
        sections=args.sections,
        neighbours=args.neighbours,
        neighbours_k=args.neighbours_k,
        prompt_sets=_prompt_sets(args.prompts),
    )
    engine = app.state.engine
    sizes = ", ".join(f"{len(index):,} {name}" for name, index in engine.indexes.items())
    if engine.sections is not None:
        sizes += f"; drafts from {len(engine.sections.default_sections)} sections"
    if engine.neighbours is not None:
        sizes += f"; neighbour labels of {engine.neighbours_k} of {len(engine.neighbours):,} reports"
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"serve: model {engine.model_name} on {engine.device}, index of {sizes}", flush=True)
    print(f"serve: open http://{host}:{args.port}/ (API at /docs); Ctrl-C stops", flush=True)
    if not _is_loopback(args.host):
        print(f"serve: warning: listening on {args.host}, reachable from other machines, without login")
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _prompt_sets(prompts: str | None) -> list[str] | None:
    """``--prompts`` as a list (``None``: the page's default sets)."""
    from echoclip.errors import ConfigError

    if prompts is None:
        return None
    sets = [p.strip() for p in prompts.split(",") if p.strip()]
    if not sets:
        raise ConfigError("--prompts names no prompt set")
    return sets
