"""A cheap check that a refactor moved no number: each method's state after a few steps, hashed.

    python scripts/method_fingerprint.py [METHOD ...] > before.txt   # on the old code
    python scripts/method_fingerprint.py [METHOD ...] > after.txt    # on the new code
    diff before.txt after.txt

Each trained method is built from a fixed seed on a small U-Net and runs 2 rounds of
2 steps (begin_round, training_step, backward, Adam step, after_optimizer_step, the
payload exchange), on one CPU thread. A line holds a hash of the whole state dict
(momentum networks, queues and banks included), a hash of the shared keys (what
FedAvg averages) and the losses. Seconds per method, against minutes for
``bench run`` (use scripts/compare_runs.py on two run folders for the full check).
"""

from __future__ import annotations

import argparse
import hashlib

import numpy as np
import torch

from bench.backbone import UNet2D
from bench.registry import available_methods
from bench.sampling import SliceStack


def batch(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    volumes = [
        rng.normal(size=(int(rng.integers(5, 10)), 32, 32)).astype(np.float32) for _ in range(4)
    ]
    return SliceStack(volumes, partitions=4).sample(2, torch.Generator().manual_seed(seed), 0)


def fingerprint(name: str, rounds: int = 2, steps: int = 2) -> str:
    torch.manual_seed(0)
    method = available_methods()[name](UNet2D(widths=(8, 16, 32)), {}, num_clients=2)
    optimizer = torch.optim.Adam(method.optimizer_parameters(), lr=1e-2)
    losses = []
    for round_index in range(rounds):
        method.begin_round(round_index, rounds)
        method.train()
        for step in range(steps):
            loss = method.training_step(
                batch(10 * round_index + step), torch.Generator().manual_seed(step)
            )["loss"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            method.after_optimizer_step()
            losses.append(loss.item())
        payload = method.outgoing_payload()
        if payload:
            method.incoming_payload({1: payload})
    state = hashlib.sha256()
    for key, value in method.state_dict().items():
        state.update(key.encode())
        state.update(value.detach().cpu().contiguous().numpy().tobytes())
    shared = hashlib.sha256("|".join(sorted(method.shared_state())).encode())
    numbers = " ".join(f"{x:.9g}" for x in losses)
    return f"{name} state {state.hexdigest()[:16]} shared {shared.hexdigest()[:12]} loss {numbers}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("methods", nargs="*", help="default: every method that pretrains")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    names = args.methods or sorted(
        name for name, cls in available_methods().items() if cls.needs_pretraining
    )
    for name in names:
        print(fingerprint(name), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
