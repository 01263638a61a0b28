"""Entry point of the ``echoclip`` console script.

Each subcommand is a module of ``echoclip.cli`` with ``HELP`` (one line),
``EXAMPLE`` (shown by ``--help``), ``add_arguments(parser)`` and ``run(args) -> int``.
A command module turns flags into library calls; library code never sees ``args``.
Errors of the package (:func:`echoclip.errors.package_errors`: every
:class:`echoclip.EchoclipError` and the leaf libraries' errors) and bad paths end as
one readable line on stderr and exit code 1; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import re
import sys
from collections.abc import Sequence

# subcommand -> module; modules are imported when the parser is built (they import
# nothing heavy at module level) and do their work in run().
COMMANDS: dict[str, str] = {
    "demo": "echoclip.cli.demo",
    "simulate": "echoclip.cli.simulate",
    "ingest": "echoclip.cli.ingest",
    "preprocess": "echoclip.cli.preprocess",
    "tokenizer": "echoclip.cli.tokenizer",
    "pretrain": "echoclip.cli.pretrain",
    "train": "echoclip.cli.train",
    "calibrate-ood": "echoclip.cli.calibrate_ood",
    "finetune": "echoclip.cli.finetune",
    "embed": "echoclip.cli.embed",
    "merge": "echoclip.cli.merge",
    "index": "echoclip.cli.index",
    "search": "echoclip.cli.search",
    "report": "echoclip.cli.report",
    "prompts": "echoclip.cli.prompts",
    "zeroshot": "echoclip.cli.zeroshot",
    "views": "echoclip.cli.views",
    "evaluate": "echoclip.cli.evaluate",
    "serve": "echoclip.cli.serve",
}


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Help texts as written: a lone ``%`` ("EF < 50 %") is a percent sign, not a format.

    argparse %-formats every help string (for ``%(default)s``), so a plain percent sign
    in one would crash ``--help``.
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = super()._get_help_string(action)
        return None if text is None else re.sub(r"%(?![(%])", "%%", text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="echoclip",
        description="Echocardiography video-report foundation models: pretraining, contrastive\n"
        "training, zero-shot prediction and search, on simulated or real echoes.",
        epilog="start with:\n  echoclip demo            the whole loop on simulated echoes, on a CPU\n"
        "  echoclip COMMAND --help  each command's options and an example",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name == module_name:
                continue  # a command not built in this version
            raise
        p = sub.add_parser(
            name,
            help=module.HELP,
            description=module.HELP,
            epilog=f"example:\n  {module.EXAMPLE}",
            formatter_class=HelpFormatter,
        )
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):  # a bare `echoclip`: say what it can do
        parser.print_help()
        return 0
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # which faiss build loaded is noise
    from echoclip.errors import package_errors

    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("echoclip: interrupted", file=sys.stderr)
        return 130
    except (*package_errors(), OSError, ValueError) as e:
        if args.debug:
            raise
        print(f"echoclip {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return 1


def _one_line(e: BaseException) -> str:
    text = str(e) or type(e).__name__
    if isinstance(e, OSError) and e.filename and str(e.filename) not in text:
        text = f"{e.filename}: {text}"
    return " ".join(text.split())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
