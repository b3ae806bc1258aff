"""The `bench report` subcommand: ``add_report_command(subparsers)`` joins it to the CLI."""

from __future__ import annotations

import sys
from pathlib import Path


def cmd_report(args) -> int:
    from bench.datasets.errors import DataError
    from bench.reports.build import build_report
    from bench.reports.runs import RunFolderError

    try:
        check_report_out(Path(args.out))
        written = build_report(
            args.run_dirs,
            Path(args.out),
            qualitative=not args.no_qualitative,
            quiet=args.quiet,
            show_unverified=args.show_unverified,
        )
    except (RunFolderError, DataError) as error:
        print(f"bench: error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    for kind, path in written.files.items():
        print(f"{kind:10s} {path}")
    print(f"{'tables':10s} {written.out / 'tables'}")
    print(f"{'figures':10s} {written.out / 'figures'}")
    return 0


def check_report_out(out: Path) -> None:
    """DataError naming ``--out`` when a report cannot be written there."""
    import os

    from bench.datasets.errors import DataError

    if out.exists() and not out.is_dir():
        raise DataError(out, "--out names an existing file, not a folder")
    existing = out.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise DataError(out, f"--out lies under {existing}, which is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise DataError(out, f"--out cannot be written ({existing} is not writable)")


def add_report_command(subparsers) -> None:
    from bench.cli_help import with_examples

    report = subparsers.add_parser(
        "report",
        help="tables, figures and provenance (Markdown, LaTeX, CSV, HTML) from run folders",
        description="Combine one or more run folders (rows concatenated) into one report.",
        **with_examples("""
            bench report runs/tiny --out report/
            bench report runs/acdc runs/acdc-seed1 --out report/ --no-qualitative
        """),
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
    report.add_argument(
        "--show-unverified",
        action="store_true",
        help="show result units whose files do not match their manifests, flagged "
        "'[unverified]', instead of refusing the run",
    )
    report.set_defaults(func=cmd_report)
