"""Compares two run folders' result CSVs: the same files, the same rows, every digit.

    python scripts/compare_runs.py RUN_A RUN_B [--ignore code_version ...]

Files are matched by name under ``results/``; each pair is compared as text, cell by
cell (no float parsing, so a change in the last digit counts), over the columns both
files have: a column only one side has (added by a later version) is listed, not
compared. By default only ``code_version`` (the git describe of the tree, which differs
between two commits by design) is left out. Exit status 0 when identical, 1 otherwise,
with one line per difference (at most ``--show`` of them per file).
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

DEFAULT_IGNORED = ("code_version",)


def read_rows(path: Path, ignored: set[str]) -> tuple[list[str], list[tuple[str, ...]]]:
    with path.open(newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, [])
        keep = [i for i, name in enumerate(header) if name not in ignored]
        rows = [tuple(row[i] for i in keep) for row in reader]
    return [header[i] for i in keep], rows


def compare_files(
    a: Path, b: Path, ignored: set[str], show: int, notes: dict[str, set[str]] | None = None
) -> list[str]:
    """Differences over the shared columns; ``notes`` collects the columns one side lacks."""
    header_a, rows_a = read_rows(a, ignored)
    header_b, rows_b = read_rows(b, ignored)
    shared = [name for name in header_a if name in header_b]
    if notes is not None:
        notes.setdefault("a", set()).update(set(header_a) - set(shared))
        notes.setdefault("b", set()).update(set(header_b) - set(shared))
    at_a = [header_a.index(name) for name in shared]
    at_b = [header_b.index(name) for name in shared]
    problems = []
    if len(rows_a) != len(rows_b):
        problems.append(f"{a.name}: {len(rows_a)} rows vs {len(rows_b)}")
    for index, (row_a, row_b) in enumerate(zip(rows_a, rows_b, strict=False)):
        for name, i, j in zip(shared, at_a, at_b, strict=True):
            if row_a[i] != row_b[j]:
                problems.append(f"{a.name}: row {index + 1}, {name}: {row_a[i]} vs {row_b[j]}")
    return problems[: show + 1] if len(problems) > show + 1 else problems


def compare_runs(
    run_a: Path,
    run_b: Path,
    ignored: set[str],
    show: int = 5,
    notes: dict[str, set[str]] | None = None,
) -> list[str]:
    files_a = {p.name: p for p in (Path(run_a) / "results").glob("*.csv")}
    files_b = {p.name: p for p in (Path(run_b) / "results").glob("*.csv")}
    problems = [f"only in {run_a}: {name}" for name in sorted(files_a.keys() - files_b.keys())]
    problems += [f"only in {run_b}: {name}" for name in sorted(files_b.keys() - files_a.keys())]
    for name in sorted(files_a.keys() & files_b.keys()):
        problems += compare_files(files_a[name], files_b[name], ignored, show, notes)
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_a", type=Path)
    parser.add_argument("run_b", type=Path)
    parser.add_argument(
        "--ignore",
        action="append",
        default=None,
        help=f"a column to leave out (repeatable; default: {', '.join(DEFAULT_IGNORED)})",
    )
    parser.add_argument("--show", type=int, default=5, help="differences shown per file")
    args = parser.parse_args(argv)
    ignored = set(args.ignore if args.ignore is not None else DEFAULT_IGNORED)
    files = len(list((args.run_a / "results").glob("*.csv")))
    if files == 0:
        print(f"{args.run_a}: no result CSVs under results/", file=sys.stderr)
        return 2
    notes: dict[str, set[str]] = {}
    problems = compare_runs(args.run_a, args.run_b, ignored, args.show, notes)
    for line in problems:
        print(line)
    for side, run in (("a", args.run_a), ("b", args.run_b)):
        if notes.get(side):
            print(f"columns only in {run} (not compared): {', '.join(sorted(notes[side]))}")
    rows = sum(len(read_rows(p, ignored)[1]) for p in (args.run_a / "results").glob("*.csv"))
    verdict = "identical" if not problems else f"{len(problems)} differences"
    print(
        f"{verdict}: {files} files, {rows} rows of {args.run_a}, "
        f"columns left out: {', '.join(sorted(ignored)) or 'none'}"
    )
    return 0 if not problems else 1


if __name__ == "__main__":
    raise SystemExit(main())
