"""Can GCL's local loss be solved from position alone? Train its local stage on slices
without content (every pixel of a slice one random value) and print the loss.

No loss should fall below its uniform value log(1 + 2 x num_negatives) there; with the
paper's aligned views (--local-crop 1.0) it falls to 0 within 20 steps (docs/PROTOCOL.md,
"GCL options").

    python scripts/gcl_local_shortcut.py --local-crop 1.0
    python scripts/gcl_local_shortcut.py --local-crop 0.75
"""

from __future__ import annotations

import argparse
import math

import torch

from bench.backbone import UNet2D
from bench.methods.gcl import GlobalLocalContrastive


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--local-crop", type=float, default=0.75)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--widths", default="8,16,32,64")
    parser.add_argument("--steps", type=int, default=101)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    unet = UNet2D(widths=tuple(int(w) for w in args.widths.split(",")))
    method = GlobalLocalContrastive(unet, {"local_crop": args.local_crop}, image_size=args.size)
    method.begin_round(1, 2)  # the second of two rounds: the local stage
    optimizer = torch.optim.Adam(method.optimizer_parameters(), lr=1e-3)
    draws = torch.Generator().manual_seed(args.seed)
    batch = {"partition": torch.arange(4).repeat(2), "volume": torch.arange(2).repeat_interleave(4)}
    uniform = math.log(1 + 2 * method.hparams["num_negatives"])
    for step in range(args.steps):
        values = torch.rand(8, 1, 1, 1, generator=draws)
        batch["image"] = values.expand(8, 1, args.size, args.size).contiguous()
        loss = method.training_step(batch, draws)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % 20 == 0:
            print(f"step {step:4d}  loss {float(loss.detach()):.3f}  (uniform {uniform:.3f})")


if __name__ == "__main__":
    main()
