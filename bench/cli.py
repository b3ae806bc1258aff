"""The `bench` command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.config import ConfigError, available_presets, load_config
from bench.datasets.errors import DataError
from bench.datasets.splits import SplitError
from bench.registry import UnknownMethodError, available_methods, resolve_method_names

USER_ERRORS = (ConfigError, UnknownMethodError, DataError, SplitError, FileNotFoundError)


def _csv(kind):
    return lambda text: [kind(part) for part in text.split(",") if part.strip()]


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


def cmd_run(args) -> int:
    from bench.results import summary_table
    from bench.runner import Runner, open_run_dir

    config = load_config(args.preset, run_overrides(args))
    methods = resolve_method_names(args.methods)
    if args.dry_run:
        return dry_run(config, methods, args.profile)
    check_device(config)
    check_from_run(config)
    run_dir = Path(args.out or Path("runs") / (args.preset or "default"))
    with open_run_dir(run_dir, config, args.fresh):
        print(f"run folder: {run_dir}  methods: {', '.join(methods)}", file=sys.stderr)
        runner = Runner(config, run_dir, progress=not args.no_progress)
        runner.run(methods)
        rows = runner.store.load(split_hash=runner.bundle.split.hash)
    rows = rows[rows["method"].isin(methods)]
    print(f"\nMean Dice (foreground classes, test patients; split {runner.bundle.split.hash}):")
    print(summary_table(rows).to_string())
    return 0


def dry_run(config: dict, methods: list[str], profiles: list[str] | None) -> int:
    from bench.projection import format_projection, project

    paths = None
    if profiles:
        paths = [Path(p) for p in profiles]
        for path in paths:
            if not path.exists():
                raise FileNotFoundError(f"--profile {path}: no such folder")
    projection = project(
        config, methods, profile_paths=paths, log=lambda text: print(text, file=sys.stderr)
    )
    print(format_projection(config, methods, projection))
    return 0


def check_from_run(config: dict) -> None:
    from bench.runfolder import check_made_by_bench

    source = config["pretrain"]["from_run"]
    if source is None:
        return
    if not Path(source).is_dir():
        raise DataError(source, "pretrain.from_run: no such run folder")
    try:
        check_made_by_bench(Path(source))
    except DataError as error:
        raise DataError(source, f"pretrain.from_run: {error.message}") from None


def check_device(config: dict) -> None:
    if config["run"]["device"] == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(
                "run.device=cuda (--device cuda): no CUDA GPU is available here; use --device cpu"
            )


def cmd_methods(args) -> int:
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


class Parser(argparse.ArgumentParser):
    """argparse, with its errors as one line ``bench: error: ...`` (exit code 2)."""

    def error(self, message: str):
        self.exit(2, f"bench: error: {self.prog}: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="bench", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="pretrain, fine-tune and evaluate methods")
    run.add_argument("--methods", required=True, help="comma-separated method names, or 'all'")
    run.add_argument("--preset", default="tiny", choices=available_presets())
    run.add_argument("--data", help="ACDC or HVSMR folder (default: synthetic volumes)")
    run.add_argument("--clients", type=int)
    run.add_argument("--n-values", type=_csv(int), help="labeled patients per client, e.g. 1,2,4,8")
    run.add_argument("--folds", type=int)
    run.add_argument("--modes", type=_csv(str), help="fine-tuning modes: local,federated")
    run.add_argument(
        "--setting", choices=["federated", "local", "centralized"], help="pretraining setting"
    )
    run.add_argument("--seeds", type=_csv(int))
    run.add_argument("--device", choices=["cpu", "cuda"])
    run.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="any config option"
    )
    run.add_argument("--out", help="run folder (default: runs/<preset>)")
    run.add_argument("--fresh", action="store_true", help="delete the run folder and start over")
    run.add_argument("--no-progress", action="store_true")
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
        "(default: runs/profile-*; steps no profile has are timed here on the CPU)",
    )
    run.set_defaults(func=cmd_run)

    methods = commands.add_parser("methods", help="list the registered methods")
    methods.add_argument("--verbose", action="store_true")
    methods.set_defaults(func=cmd_methods)

    from bench.cli_data import add_data_commands
    from bench.profile.cli import add_profile_command
    from bench.reports.cli import add_report_command

    add_data_commands(commands)
    add_report_command(commands)
    add_profile_command(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except USER_ERRORS as error:
        where = "split: " if isinstance(error, SplitError) else ""
        print(f"bench: error: {where}{' '.join(str(error).split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
