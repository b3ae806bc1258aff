"""`bench data ...`: make synthetic data, make a split, check a dataset folder, fill the
preprocessing cache."""

from __future__ import annotations

import argparse
import sys

from bench.cli_help import add_command
from bench.datasets.errors import DataError


def _ints(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None


def _guard(handler):
    def run(args) -> int:
        try:
            return handler(args)
        except (DataError, ValueError) as err:
            print(f"bench: error: {' '.join(str(err).split())}", file=sys.stderr)
            return 2

    return run


def cmd_synth(args) -> int:
    from bench.datasets.synthetic import write_synthetic

    if args.phantom == "cine":
        from bench.datasets.phantom_cine import write_cine_phantom

        if args.layout != "acdc":
            raise ValueError("--phantom cine draws the ACDC layout only")
        out = write_cine_phantom(
            args.out,
            100 if args.train is None else args.train,
            50 if args.test is None else args.test,
            args.seed,
            cine=args.cine,
            progress=not args.no_progress,
        )
        print(out)
        return 0
    out = write_synthetic(
        args.out,
        args.layout,
        args.train,
        args.test,
        args.seed,
        real_sizes=args.real_sizes,
        cine=args.cine,
        progress=not args.no_progress,
    )
    print(out)
    return 0


def cmd_split(args) -> int:
    from bench.datasets.layout import read_dataset
    from bench.datasets.splits import make_split

    _, records = read_dataset(args.data)
    split = make_split(
        records,
        protocol=args.protocol,
        clients=args.clients,
        scheme=args.scheme,
        alpha=args.alpha,
        n_values=args.n_values,
        folds=args.folds,
        val_per_client=args.val_per_client,
        test=args.test,
        test_fraction=args.test_fraction,
        seed=args.seed,
    )
    split.save(args.out)
    print(split.hash)
    return 0


def cmd_check(args) -> int:
    from bench.datasets.check import check_dataset

    warnings: list[str] = []
    layout, records, problems = check_dataset(
        args.data, cine=not args.no_cine, progress=not args.no_progress, warnings=warnings
    )
    frames = sum(len(r.frames) for r in records)
    for text in warnings:
        print(f"warning: {text}", file=sys.stderr)
    for err in problems:
        print(f"problem: {err}", file=sys.stderr)
    print(
        f"{layout}: {len(records)} patients, {frames} frames, {len(problems)} problem(s), "
        f"{len(warnings)} warning(s)"
    )
    if problems:
        first = " ".join(str(problems[0]).split())
        more = f" ({len(problems) - 1} more problem(s) above)" if len(problems) > 1 else ""
        print(f"bench: error: {first}{more}", file=sys.stderr)
        return 2
    return 0


def cmd_preprocess(args) -> int:
    import time

    from bench.config import ConfigError, load_config
    from bench.data import preprocess, preprocessed_dir
    from bench.datasets.layout import read_dataset

    try:
        data_cfg = load_config(args.preset, args.overrides)["data"]
    except ConfigError as err:
        print(f"bench: error: {err}", file=sys.stderr)
        return 2
    layout, records = read_dataset(args.data)
    folder = preprocessed_dir()
    before = set(folder.glob("*.npz")) if folder.is_dir() else set()
    start = time.perf_counter()
    volumes = preprocess(
        data_cfg, layout, records, progress=not args.no_progress, workers=args.workers
    )
    seconds = time.perf_counter() - start
    count = sum(len(v) for v in volumes.values())
    computed = len(set(folder.glob("*.npz")) - before)
    print(
        f"{layout}: {len(records)} patients, {count} volumes ({computed} entries computed, "
        f"the rest read from the cache) in {seconds:.1f} s; cache: {folder}"
    )
    return 0


def add_data_commands(subparsers) -> argparse.ArgumentParser:
    """Add ``data synth|split|check|preprocess`` to an argparse subparsers object."""
    data = add_command(
        subparsers,
        "data",
        summary="synthetic data, splits, dataset checks, the preprocessing cache",
        description="Data tools: make synthetic volumes, split patients over clients, check a "
        "dataset folder, fill the preprocessing cache.",
        examples="""
            bench data synth --out synth/ --real-sizes
            bench data split --data /data/ACDC --clients 10 --out split.json
            bench data check --data /data/ACDC
            bench data preprocess --data /data/ACDC --preset small
        """,
    )
    sub = data.add_subparsers(dest="data_command", required=True, metavar="COMMAND")

    synth = add_command(
        sub,
        "synth",
        summary="write synthetic volumes in the ACDC or HVSMR layout",
        description="Writes synthetic NIfTI volumes with labels in the folder layout of ACDC or "
        "HVSMR 2016, for trying bench without the real data.",
        examples="""
            bench data synth --out synth/
            bench data synth --layout hvsmr --out synth-hvsmr/ --train 10 --test 0
            bench data synth --out synth/ --train 100 --test 50 --real-sizes --cine
        """,
    )
    synth.add_argument(
        "--layout", choices=["acdc", "hvsmr"], default="acdc", help="folder layout (default acdc)"
    )
    synth.add_argument("--out", required=True, help="folder to write; e.g. --out synth/")
    synth.add_argument("--train", type=int, help="training patients (default: 12 tiny, 100 real)")
    synth.add_argument("--test", type=int, help="testing patients (default: 4 tiny, 50 real)")
    synth.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    synth.add_argument(
        "--real-sizes",
        action="store_true",
        help="real in-plane sizes, slice counts and patient counts",
    )
    synth.add_argument(
        "--phantom",
        choices=["easy", "cine"],
        default="easy",
        help="easy: clean rings (CI); cine: as hard as real cine MRI, ACDC's real sizes and counts",
    )
    synth.add_argument("--cine", action="store_true", help="also write small 4D cines (ACDC)")
    synth.add_argument("--no-progress", action="store_true", help="no progress bar")
    synth.set_defaults(func=_guard(cmd_synth))

    split = add_command(
        sub,
        "split",
        summary="split a dataset's patients over clients",
        description="Assigns the patients to clients and picks each client's validation, "
        "labeled (per N and fold) and test patients; writes the split file that "
        "`bench run --split` takes and prints its hash.",
        examples="""
            bench data split --data /data/ACDC --clients 10 --out split.json
            bench data split --data /data/ACDC --clients 5 --scheme dirichlet --alpha 0.3 \\
                --n-values 1,8 --folds 3 --out split-noniid.json
        """,
    )
    split.add_argument("--data", required=True, help="ACDC or HVSMR folder")
    split.add_argument("--clients", type=int, required=True, help="number of clients")
    split.add_argument(
        "--protocol",
        choices=["own", "fcl", "chaitanya"],
        default="own",
        help="evaluation protocol: own, fcl or chaitanya (docs/PROTOCOL.md; default own)",
    )
    split.add_argument(
        "--scheme",
        choices=["iid", "group", "dirichlet"],
        default="iid",
        help="iid, group (non-IID by pathology) or dirichlet (default iid)",
    )
    split.add_argument(
        "--alpha", type=float, default=0.5, help="Dirichlet concentration (default 0.5)"
    )
    split.add_argument(
        "--n-values",
        type=_ints,
        default=[1, 2, 4, 8],
        help="labeled patients per client, e.g. 1,2,4,8",
    )
    split.add_argument(
        "--folds", type=int, default=5, help="labeled subsets drawn per N (default 5)"
    )
    split.add_argument(
        "--val-per-client", type=int, default=1, help="validation patients per client (default 1)"
    )
    split.add_argument(
        "--test",
        choices=["auto", "holdout"],
        default="auto",
        help="auto: the labeled testing/ folder when there is one, else holdout (default auto)",
    )
    split.add_argument(
        "--test-fraction",
        type=float,
        default=0.2,
        help="share of each client's patients held out for testing (holdout; default 0.2)",
    )
    split.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    split.add_argument("--out", default="split.json", help="file to write (default split.json)")
    split.set_defaults(func=_guard(cmd_split))

    check = add_command(
        sub,
        "check",
        summary="read every file and report problems",
        description="Reads every image and label of a dataset folder and lists what is wrong "
        "(exit code 2 when anything is).",
        examples="""
            bench data check --data /data/ACDC
            bench data check --data /data/ACDC --no-cine
        """,
    )
    check.add_argument("--data", required=True, help="ACDC or HVSMR folder")
    check.add_argument("--no-cine", action="store_true", help="skip the 4D cines")
    check.add_argument("--no-progress", action="store_true", help="no progress bar")
    check.set_defaults(func=_guard(cmd_check))

    preprocess = add_command(
        sub,
        "preprocess",
        summary="preprocess a dataset into the cache that runs read",
        description="Resamples, crops and normalises every volume under a preset's "
        "data.preprocess settings into the cache (~/.cache/bench or $BENCH_CACHE_DIR), so "
        "that later runs start at once.",
        examples="""
            bench data preprocess --data /data/ACDC --preset small
            bench data preprocess --data /data/ACDC --set data.preprocess.size=128 --workers 2
        """,
    )
    preprocess.add_argument("--data", required=True, help="ACDC or HVSMR folder")
    preprocess.add_argument("--preset", help="config preset whose data.preprocess settings apply")
    preprocess.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config option, e.g. data.preprocess.size=128",
    )
    preprocess.add_argument("--workers", type=int, help="processes (default: up to 2)")
    preprocess.add_argument("--no-progress", action="store_true", help="no progress bar")
    preprocess.set_defaults(func=_guard(cmd_preprocess))
    return data
