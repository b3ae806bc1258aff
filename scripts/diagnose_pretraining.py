"""Does a method learn on this data? Trains one client centrally and prints, every few steps,
the loss (and its terms) against its uniform value and the spread of the slice embeddings.

    python scripts/diagnose_pretraining.py --preset small --data /path/to/ACDC/database \
        --methods simclr,fcl,gcl --steps 400 [--set model.embed_grid=1]

Without --data it uses the preset's synthetic volumes (made in --out).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from bench.backbone import build_unet
from bench.config import load_config
from bench.data import prepare_data
from bench.diagnostics import loss_floor, mean_pairwise_cosine, uniform_loss
from bench.registry import get_method
from bench.sampling import SliceStack


def diagnose(name: str, config, slices: SliceStack, steps: int, every: int) -> None:
    torch.manual_seed(0)
    pretrain = config["pretrain"]
    hparams = dict(pretrain["methods"].get(name, {}))
    method = get_method(name)(build_unet(config["model"], 4), hparams, num_clients=1)
    method.begin_round(0, 2)  # GCL: its global stage
    optimizer = torch.optim.Adam(method.optimizer_parameters(), lr=pretrain["lr"])
    generator = torch.Generator().manual_seed(0)
    probe = slices.sample(pretrain["volumes_per_batch"], torch.Generator().manual_seed(1))["image"]
    per_step = pretrain["volumes_per_batch"] * pretrain["partitions"]
    uniform = uniform_loss(name, per_step, pretrain["partitions"], method.hparams)
    floor = loss_floor(name, pretrain["partitions"], method.hparams)
    print(
        f"{name}: uniform loss {uniform if uniform is None else round(uniform, 3)}"
        + ("" if floor is None else f", floor (perfect features) {floor:.3f}")
    )
    history: list[dict] = []
    for step in range(steps + 1):
        if step % every == 0:
            method.eval()
            with torch.no_grad():
                spread = mean_pairwise_cosine(method.unet.encoder.embed(probe))
            method.train()
            recent = (
                {k: np.mean([h[k] for h in history[-every:]]) for k in history[-1]}
                if history
                else {}
            )
            terms = " ".join(f"{k} {v:.3f}" for k, v in recent.items())
            print(f"  step {step:5d}  embedding mean cosine {spread:.4f}  {terms}", flush=True)
        if step == steps:
            break
        out = method.training_step(
            slices.sample(pretrain["volumes_per_batch"], generator), generator
        )
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
        method.after_optimizer_step()
        history.append({k: float(v) for k, v in out.items()})


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="small")
    parser.add_argument(
        "--data", help="ACDC or HVSMR folder (default: the preset's synthetic data)"
    )
    parser.add_argument("--methods", default="simclr,fcl,gcl")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--every", type=int, default=20, help="print every this many steps")
    parser.add_argument(
        "--out", default="runs/diagnose", help="folder for synthetic data and the split"
    )
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    overrides = [*args.set, "split.clients=1", "split.n_values=[1]", "split.folds=1"]
    if args.data:
        overrides.append(f"data.root={args.data}")
    config = load_config(args.preset, overrides)
    bundle = prepare_data(config, Path(args.out), progress=False)
    slices = SliceStack(bundle.pretrain_volumes("centralized")[0], config["pretrain"]["partitions"])
    for name in args.methods.split(","):
        diagnose(name, config, slices, args.steps, args.every)


if __name__ == "__main__":
    main()
