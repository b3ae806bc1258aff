"""The `bench report` subcommand: ``add_report_command(subparsers)`` joins it to the CLI."""

from __future__ import annotations

import sys
from pathlib import Path


def cmd_report(args) -> int:
    from bench.reports.build import build_report
    from bench.reports.runs import RunFolderError

    try:
        written = build_report(
            args.run_dirs, Path(args.out), qualitative=not args.no_qualitative, quiet=args.quiet
        )
    except RunFolderError as error:
        print(f"bench report: error: {error}", file=sys.stderr)
        return 2
    for kind, path in written.files.items():
        print(f"{kind:10s} {path}")
    print(f"{'tables':10s} {written.out / 'tables'}")
    print(f"{'figures':10s} {written.out / 'figures'}")
    return 0


def add_report_command(subparsers) -> None:
    report = subparsers.add_parser(
        "report",
        help="tables, figures and provenance (Markdown, LaTeX, CSV, HTML) from run folders",
        description="Combine one or more run folders (rows concatenated) into one report.",
    )
    report.add_argument(
        "run_dirs", nargs="+", metavar="RUN_DIR", help="run folder(s) made by `bench run`"
    )
    report.add_argument("--out", required=True, help="folder to write the report into")
    report.add_argument(
        "--no-qualitative",
        action="store_true",
        help="skip the qualitative figure (it loads the data and the saved models)",
    )
    report.add_argument("--quiet", action="store_true", help="no progress messages")
    report.set_defaults(func=cmd_report)
