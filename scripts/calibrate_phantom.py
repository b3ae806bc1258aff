"""Calibrate the cine phantom: random-init local fine-tuning against FCL's published curve.

For each seed, draws the cine phantom (data seed = split seed = run seed), runs
`random` with local fine-tuning under the `small` preset (2 mm, 96 px) and
prints the mean Dice per N next to the published random-init curve
(FCL, Table 1; /work/shared/reference/fcl_miccai2021.csv, in bench.reports).
Dice per client is the mean over its test patients (ED and ES) and the three
classes; the table gives the mean over clients and seeds, the spread across
clients, and the gap to the published value.

Full calibration (docs/PROTOCOL.md):
    python scripts/calibrate_phantom.py --seeds 0,1,2 --out runs/calibration
Cheap proxy while tuning (3 clients of 10 patients, N = 1 and 8):
    python scripts/calibrate_phantom.py --seeds 0 --clients 3 --n-values 1,8
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

from bench.config import load_config
from bench.runner import Runner, open_run_dir

# FCL (Wu et al., MICCAI 2021), Table 1, random init, local fine-tuning on ACDC.
PUBLISHED = {1: 0.280, 2: 0.414, 4: 0.618, 8: 0.766}
TOLERANCE = 0.07


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def run_seed(args, seed: int) -> pd.DataFrame:
    per_client = 10  # FCL: 10 training patients per client
    overrides = [
        "data.synthetic.phantom=cine",
        f"data.synthetic.train={args.clients * per_client}",
        f"data.synthetic.test={args.clients * per_client // 2}",
        f"data.synthetic.seed={seed}",
        f"split.clients={args.clients}",
        f"split.n_values={args.n_values}",
        "split.folds=1",
        f"split.seed={seed}",
        f"run.seeds=[{seed}]",
        "finetune.modes=[local]",
        f"finetune.rounds={args.rounds}",
        f"finetune.local_steps={args.local_steps}",
        *args.set,
    ]
    config = load_config("small", overrides)
    run_dir = Path(args.out) / f"seed{seed}"
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
    classes = rows.groupby(["n_labeled", "class_name"])["dice"].mean().unstack("class_name")
    return out.join(classes).round(3)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=_ints, default=[0, 1, 2])
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--n-values", type=_ints, default=[1, 2, 4, 8])
    parser.add_argument(
        "--rounds",
        type=int,
        default=30,
        help="fine-tuning rounds (local: each keeps its best-on-validation round); a long fixed "
        "budget standing in for early stopping",
    )
    parser.add_argument("--local-steps", type=int, default=20)
    parser.add_argument("--out", default="runs/calibration")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    rows = pd.concat([run_seed(args, seed) for seed in args.seeds], ignore_index=True)
    print(
        f"\ncine phantom, random init, local fine-tuning, small preset; seeds {args.seeds}, "
        f"{args.clients} clients, {args.rounds} x {args.local_steps} steps; "
        f"{time.perf_counter() - start:.0f} s"
    )
    print(table(rows).to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
