"""The `bench` command line (also installed as `bench-fedssl`).

Building the parser imports no heavy module (torch, MONAI, the profiler): each
command imports what it needs when it runs, so `bench --help` starts at once.
"""

from __future__ import annotations

import argparse
import sys

from bench.cli_help import add_command
from bench.config import ConfigError, available_presets
from bench.datasets.errors import DataError
from bench.registry import UnknownMethodError


def user_errors() -> tuple[type[Exception], ...]:
    """Errors shown as one line, exit code 2 (imported when needed: numpy is not free)."""
    from bench.datasets.splits import SplitError
    from bench.federated.strategy import ClientFailure

    # ClientFailure: clients refused their input (e.g. a crafted state file, a site's changed
    # data); its message names each client and why, and the work done so far is kept.
    return (
        ConfigError,
        UnknownMethodError,
        DataError,
        SplitError,
        FileNotFoundError,
        ClientFailure,
    )


DESCRIPTION = (
    "Benchmark self-supervised pretraining for federated volumetric medical image "
    "segmentation: pretrain each method across clients, fine-tune on N labeled patients "
    "per client, evaluate Dice, and report."
)
EXAMPLES = """\
examples:
  bench run --methods fcl,byol --preset tiny      # the whole pipeline on synthetic data (minutes)
  bench run --methods all --preset paper --data /data/ACDC --out runs/acdc
  bench report runs/acdc --out report/
  bench export runs/acdc --method fcl --out fcl-encoder.safetensors
  bench methods --verbose
  bench <command> --help                          # each command's options and examples
"""


def _csv(kind):
    def parse(text: str) -> list:
        try:
            return [kind(part) for part in text.split(",") if part.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated {kind.__name__} values, got {text!r}"
            ) from None

    return parse


def run_overrides(args) -> list[str]:
    """The CLI's shortcut options as config overrides."""
    pairs = {
        "data.root": args.data,
        "split.clients": args.clients,
        "split.n_values": args.n_values,
        "split.folds": args.folds,
        "finetune.modes": args.modes,
        "run.seeds": args.seeds,
        "pretrain.setting": args.setting,
        "run.device": args.device,
    }
    return [f"{key}={value}" for key, value in pairs.items() if value is not None] + list(args.set)


def progress_mode(args) -> str:
    """``bar`` on a terminal, ``lines`` (plain log lines) when redirected, ``none`` if asked."""
    if args.quiet or args.no_progress:
        return "none"
    return "bar" if sys.stderr.isatty() else "lines"


def cmd_run(args) -> int:
    from bench.api import open_run, resolve_run
    from bench.results import summary_table

    if args.dry_run:
        config, methods = resolve_run(
            args.methods,
            preset=args.preset,
            config=args.config,
            overrides=run_overrides(args),
            split=args.split,
        )
        return dry_run(config, methods, args.profile)
    with open_run(
        args.methods,
        preset=args.preset,
        config=args.config,
        overrides=run_overrides(args),
        split=args.split,
        out=args.out,
        fresh=args.fresh,
        progress=progress_mode(args),
    ) as runner:
        if not args.quiet:
            print(
                f"run folder: {runner.run_dir}  methods: {', '.join(runner.methods)}",
                file=sys.stderr,
            )
        runner.run(runner.methods)
        rows = runner.store.load(split_hash=runner.bundle.split.hash)
    rows = rows[rows["method"].isin(runner.methods)]
    print(f"\nMean Dice (foreground classes, test patients; split {runner.bundle.split.hash}):")
    print(summary_table(rows).to_string())
    return 0


def dry_run(config: dict, methods: list[str], profiles: list[str] | None) -> int:
    from pathlib import Path

    from bench.projection import format_projection, project

    paths = None
    if profiles:
        paths = [Path(p) for p in profiles]
        for path in paths:
            if not path.exists():
                raise FileNotFoundError(f"--profile {path}: no such folder")
    projection = project(config, methods, profile_paths=paths)
    print(format_projection(config, methods, projection))
    return 0


def cmd_methods(args) -> int:
    from bench.registry import available_methods

    for name, cls in available_methods().items():
        print(f"{name:14s} {cls.summary}")
        if args.verbose:
            print(f"{'':14s}   averaged across clients: {cls.shared_doc}")
            print(f"{'':14s}   kept on the client:      {cls.local_doc}")
            print(
                f"{'':14s}   fine-tuning loads:       "
                f"{', '.join(cls.pretrained_parts) or 'nothing'}"
            )
            for key, value in cls.defaults.items():
                print(f"{'':14s}   {key} = {value!r}  ({cls.sources.get(key, 'no source given')})")
    return 0


def add_run_command(commands) -> None:
    run = add_command(
        commands,
        "run",
        summary="pretrain, fine-tune and evaluate methods",
        description=(
            "Pretrain each method (federated, local or centralized), fine-tune it for every "
            "mode, N labeled patients per client and fold, and evaluate Dice on the test "
            "patients. Options are merged in this order: the preset, --config, the shortcut "
            "options below, --set. Rerunning the same command resumes: finished units are "
            "skipped."
        ),
        examples="""
            bench run --methods fcl,byol --preset tiny
            bench run --methods all --preset small --data /data/ACDC --out runs/acdc-small
            bench run --methods simclr --config my.yaml --set pretrain.rounds=50
            bench data split --data /data/ACDC --clients 10 --out split.json
            bench run --methods fcl --preset paper --data /data/ACDC --split split.json
            bench run --methods all --preset paper --dry-run     # units and projected hours
        """,
    )
    add_run_options(run)
    run.set_defaults(func=cmd_run)


def add_run_options(run) -> None:
    """The options of ``bench run`` (``bench federation submit`` takes the same)."""
    run.add_argument(
        "--methods",
        required=True,
        help="comma-separated method names, or 'all' (see `bench methods`); e.g. fcl,byol",
    )
    run.add_argument(
        "--preset",
        default="tiny",
        choices=available_presets(),
        help="built-in settings the run starts from (default: tiny); e.g. --preset small",
    )
    run.add_argument(
        "--config",
        metavar="YAML",
        help="your own YAML options, merged over the preset (same keys as "
        "bench/presets/default.yaml; unknown keys are errors); e.g. --config my.yaml",
    )
    run.add_argument(
        "--split",
        metavar="JSON",
        help="a split file made by `bench data split`: it decides the clients, N values and "
        "folds (split options that contradict it are errors); e.g. --split split.json",
    )
    run.add_argument(
        "--data",
        metavar="DIR",
        help="ACDC or HVSMR folder (default: synthetic volumes); e.g. --data /data/ACDC",
    )
    run.add_argument(
        "--clients", type=int, help="number of clients (split.clients); e.g. --clients 10"
    )
    run.add_argument(
        "--n-values",
        type=_csv(int),
        help="labeled patients per client (split.n_values); e.g. --n-values 1,2,4,8",
    )
    run.add_argument(
        "--folds", type=int, help="labeled subsets drawn per N (split.folds); e.g. --folds 5"
    )
    run.add_argument(
        "--modes",
        type=_csv(str),
        help="fine-tuning modes (finetune.modes); e.g. --modes local,federated",
    )
    run.add_argument(
        "--setting",
        choices=["federated", "local", "centralized"],
        help="pretraining setting (pretrain.setting); e.g. --setting local",
    )
    run.add_argument(
        "--seeds", type=_csv(int), help="seeds, one full run each (run.seeds); e.g. --seeds 0,1,2"
    )
    run.add_argument("--device", choices=["cpu", "cuda"], help="run.device; e.g. --device cuda")
    run.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any config option, value in YAML, repeatable; e.g. --set pretrain.rounds=5",
    )
    run.add_argument(
        "--out", metavar="DIR", help="run folder (default: runs/<preset>); e.g. --out runs/mine"
    )
    run.add_argument(
        "--fresh",
        action="store_true",
        help="delete the run folder and start over instead of resuming; e.g. --fresh",
    )
    run.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bars or progress lines (messages and the result table still print)",
    )
    run.add_argument(
        "--quiet",
        "-q",
        action="store_true",
        help="print only the result table (no progress, no messages); e.g. -q > log.txt",
    )
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="print the units, the steps of each phase and the projected time; run nothing",
    )
    run.add_argument(
        "--profile",
        action="append",
        metavar="DIR",
        help="--dry-run: per-step times from this bench profile folder or run folder "
        "(default: runs/profile-*; a dry run times nothing: steps no profile has get no time "
        "and the command that records one is printed); "
        "e.g. --profile runs/profile-tiny",
    )


def add_methods_command(commands) -> None:
    methods = add_command(
        commands,
        "methods",
        summary="list the registered methods",
        description="The pretraining methods bench knows, one line each.",
        examples="""
            bench methods
            bench methods --verbose
        """,
    )
    methods.add_argument(
        "--verbose",
        "-v",
        action="store_true",
        help="also what each method averages, keeps local, loads for fine-tuning, and its "
        "hyper-parameters with their sources",
    )
    methods.set_defaults(func=cmd_methods)


class Parser(argparse.ArgumentParser):
    """argparse, with its errors as one line ``bench: error: ...`` (exit code 2)."""

    def error(self, message: str):
        self.exit(2, f"bench: error: {self.prog}: {message}\n")


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("bench-fedssl")
    except PackageNotFoundError:  # a source tree that was never installed
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    from bench.cli_data import add_data_commands
    from bench.cli_export import add_export_command
    from bench.cli_site import add_site_commands
    from bench.profile.cli import add_profile_command
    from bench.reports.cli import add_report_command

    parser = Parser(
        prog="bench",
        description=DESCRIPTION,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s (bench-fedssl) {package_version()}"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_run_command(commands)
    add_methods_command(commands)
    add_data_commands(commands)
    add_report_command(commands)
    add_profile_command(commands)
    add_export_command(commands)
    add_site_commands(commands, add_run_options, cmd_run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except Exception as error:
        if not isinstance(error, user_errors()):
            raise
        from bench.datasets.splits import SplitError

        where = "split: " if isinstance(error, SplitError) else ""
        print(f"bench: error: {where}{' '.join(str(error).split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
