"""FCL's loss variants (docs/PROTOCOL.md): the loss of each on identical inputs, and the
Dice and pretraining loss of run folders made with them.

    .venv/bin/python scripts/fcl_variants.py [RUN_DIR ...]

Identical inputs: random unit features, 8 volumes x 4 partitions of queries and keys
(keys[i], the other view of query i, near it: cosine about 0.94), K = 256 sampled bank
features over 4 partitions, 128-d, tau = 0.1, seed 0. Each RUN_DIR is a
``bench run --methods fcl`` folder; its FCL hyper-parameters are read from its config.yaml.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
import yaml

from bench.methods.fcl import FCL, NEGATIVES, fcl_loss


def identical_inputs_table(seed: int = 0) -> pd.DataFrame:
    g = torch.Generator().manual_seed(seed)

    def unit(n: int) -> torch.Tensor:
        return F.normalize(torch.randn(n, 128, generator=g), dim=1)

    partitions = torch.arange(4).repeat(8)
    queries = unit(32)
    # keys[i], the other view of query i's slice, lies near it (cosine about 0.9).
    keys = F.normalize(queries + 0.35 * unit(32), dim=1)
    sampled, sampled_partitions = unit(256), torch.randint(4, (256,), generator=g)
    rows = []
    for negatives in NEGATIVES:
        for own_view in (False, True):
            out = fcl_loss(
                queries,
                partitions,
                keys,
                partitions,
                sampled,
                sampled_partitions,
                0.1,
                negatives=negatives,
                own_view_positive=own_view,
            )
            rows.append(
                {
                    "negatives": negatives,
                    "own_view_positive": own_view,
                    "loss": round(float(out["loss"]), 3),
                    "bank_term": round(float(out["bank"]), 3),
                    "local_term": round(float(out["local"]), 3),
                }
            )
    return pd.DataFrame(rows)


def run_row(run_dir: Path) -> dict:
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    hp = {**FCL.defaults, **config["pretrain"]["methods"].get("fcl", {})}
    rows = pd.concat(pd.read_csv(f) for f in (run_dir / "results").glob("method-fcl_*.csv"))
    per_volume = rows.groupby(["client", "fold", "patient", "phase"])["dice"].mean()
    losses = pd.read_csv(run_dir / "pretrain_loss" / "fcl-seed0.csv")
    by_round = losses.groupby("round")["loss_mean"].mean()
    return {
        "run": run_dir.name,
        "negatives": hp["negatives"],
        "own_view_positive": hp["own_view_positive"],
        "empty_bank_each_round": hp["empty_bank_each_round"],
        "loss_round_first": round(float(by_round.iloc[0]), 3),
        "loss_round_last": round(float(by_round.iloc[-1]), 3),
        "dice": round(float(per_volume.mean()), 3),
        "test_volumes": len(per_volume),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="*", type=Path)
    args = parser.parse_args()
    print("Loss on identical inputs:")
    print(identical_inputs_table().to_string(index=False))
    if args.run_dirs:
        print("\nRuns:")
        print(pd.DataFrame([run_row(d) for d in args.run_dirs]).to_string(index=False))


if __name__ == "__main__":
    main()
