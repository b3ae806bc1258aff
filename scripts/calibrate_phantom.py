"""Calibrate the cine phantom: random-init local fine-tuning against FCL's published curve.

For each seed, draws the cine phantom (data seed = split seed = run seed; the
``phantom_cine.Difficulty`` defaults, or those changed with ``--difficulty``),
runs `random` with local fine-tuning under the `small` preset (2 mm, 96 px, its
epoch budgets and early stopping on validation Dice: converged units) and
prints the mean Dice per N next to the published random-init curve
(FCL, Table 1; /work/shared/reference/fcl_miccai2021.csv, in bench.reports).
Dice per client is the mean over its test patients (ED and ES) and the three
classes; the table gives the mean over clients and seeds, the spread across
clients, the gap to the published value and the share of units stopped by the
rule (not by the maximum).

Full calibration (docs/PROTOCOL.md):
    python scripts/calibrate_phantom.py --seeds 0,1,2 --out runs/calibration
Cheap proxy while tuning (3 clients of 10 patients, N = 1 and 8):
    python scripts/calibrate_phantom.py --seeds 0 --clients 3 --n-values 1,8
Trying another difficulty (fields of phantom_cine.Difficulty; tuples as a,b):
    python scripts/calibrate_phantom.py --seeds 0 --clients 3 --n-values 1,8 \\
        --difficulty snr=5,12 --difficulty shading=0.8
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
import time
from pathlib import Path

import pandas as pd

from bench.config import load_config
from bench.datasets.phantom_cine import Difficulty, write_cine_phantom
from bench.runner import Runner, open_run_dir

# FCL (Wu et al., MICCAI 2021), Table 1, random init, local fine-tuning on ACDC.
PUBLISHED = {1: 0.280, 2: 0.414, 4: 0.618, 8: 0.766}
TOLERANCE = 0.07


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def difficulty(settings: list[str]) -> Difficulty:
    """The default Difficulty with ``field=value`` changes (a tuple field as ``low,high``)."""
    changes = {}
    fields = {f.name: f for f in dataclasses.fields(Difficulty)}
    for setting in settings:
        name, _, value = setting.partition("=")
        if name not in fields:
            raise SystemExit(
                f"calibrate_phantom: error: --difficulty {name!r}: not one of {list(fields)}"
            )
        default = getattr(Difficulty(), name)
        numbers = tuple(float(part) for part in value.split(","))
        changes[name] = numbers if isinstance(default, tuple) else numbers[0]
    return dataclasses.replace(Difficulty(), **changes)


def phantom_folder(args, seed: int, hard: Difficulty) -> tuple[Path, str]:
    """The seed's phantom, drawn once per difficulty and size (a digest names the folder)."""
    per_client = 10  # FCL: 10 training patients per client
    train, test = args.clients * per_client, args.clients * per_client // 2
    settings = json.dumps(
        {**dataclasses.asdict(hard), "train": train, "test": test}, sort_keys=True
    )
    digest = hashlib.sha256(settings.encode()).hexdigest()[:8]
    folder = Path(args.out) / f"data-seed{seed}-{digest}"
    if not (folder / ".complete").exists():
        write_cine_phantom(folder, train, test, seed, difficulty=hard)
        (folder / "settings.json").write_text(settings + "\n")
        (folder / ".complete").write_text("ok\n")
    return folder / "database", digest


def run_seed(args, seed: int, hard: Difficulty) -> pd.DataFrame:
    data, digest = phantom_folder(args, seed, hard)
    overrides = [
        f"data.root={data}",
        f"split.clients={args.clients}",
        f"split.n_values={args.n_values}",
        "split.folds=1",
        f"split.seed={seed}",
        f"run.seeds=[{seed}]",
        "finetune.modes=[local]",
        f"run.threads={args.threads}",
        *([f"finetune.rounds={args.rounds}"] if args.rounds else []),
        *([f"finetune.local_steps={args.local_steps}"] if args.local_steps else []),
        *args.set,
    ]
    config = load_config("small", overrides)
    run_dir = Path(args.out) / f"seed{seed}-{digest}"
    with open_run_dir(run_dir, config, False):
        runner = Runner(config, run_dir, progress=not args.no_progress)
        runner.run(["random"])
    rows = runner.store.load()
    return rows.assign(seed=seed)


def table(rows: pd.DataFrame) -> pd.DataFrame:
    per_client = rows.groupby(["seed", "n_labeled", "client"])["dice"].mean()
    per_seed = per_client.groupby(["seed", "n_labeled"]).mean()
    out = pd.DataFrame(
        {
            "dice": per_seed.groupby("n_labeled").mean(),
            "sd_seeds": per_seed.groupby("n_labeled").std(),
            "sd_clients": per_client.groupby(["seed", "n_labeled"])
            .std()
            .groupby("n_labeled")
            .mean(),
        }
    )
    out["published"] = [PUBLISHED.get(int(n), float("nan")) for n in out.index]
    out["gap"] = out["dice"] - out["published"]
    out["within"] = out["gap"].abs() <= TOLERANCE
    units = rows.groupby(["seed", "n_labeled", "client"])["stopped_by"].first()
    out["by_rule"] = (units == "rule").groupby("n_labeled").mean()
    classes = rows.groupby(["n_labeled", "class_name"])["dice"].mean().unstack("class_name")
    return out.join(classes).round(3)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=_ints, default=[0, 1, 2])
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--n-values", type=_ints, default=[1, 2, 4, 8])
    parser.add_argument(
        "--rounds", type=int, default=None, help="maximum fine-tuning rounds (default: small's)"
    )
    parser.add_argument(
        "--local-steps",
        type=int,
        default=None,
        help="fixed steps per round instead of small's epochs (default: epochs)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1: on a shared 2-core machine two threads cost about 9 "
        "times the CPU per step, docs/PROTOCOL.md)",
    )
    parser.add_argument(
        "--difficulty",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="change a phantom_cine.Difficulty field, e.g. snr=5,12 or shading=0.8",
    )
    parser.add_argument("--out", default="runs/calibration")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    hard = difficulty(args.difficulty)
    start = time.perf_counter()
    rows = pd.concat([run_seed(args, seed, hard) for seed in args.seeds], ignore_index=True)
    budget = (
        f"{args.rounds or 'small'} rounds x {args.local_steps or 'small epochs of'} steps"
        if args.rounds or args.local_steps
        else "small's epoch budgets with early stopping"
    )
    print(
        f"\ncine phantom {hard}, random init, local fine-tuning, small preset; seeds "
        f"{args.seeds}, {args.clients} clients, {budget}; {time.perf_counter() - start:.0f} s"
    )
    print(table(rows).to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
