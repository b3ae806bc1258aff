"""Does a pretrained encoder know where a slice lies? A linear probe of the slice's partition.

Embeds every pretraining slice of a run's data with the encoder at initialisation (the run's
seed) and with a method's pretrained encoder (the run's `pretrained/` weights file, checked
as `bench.weights.load_pretrained` checks it), then fits a
multinomial logistic regression of the partition (the `pretrain.partitions` equal parts of
the slice axis) on the first 60 % of the volumes and scores it on the rest. Prints the
embeddings' mean pairwise cosine and the probe's held-out accuracy (chance: 1 / partitions).

    python scripts/probe_partitions.py runs/repro-cpu --method fcl
    bench export runs/repro-cpu --method local_cl --client 0 --out lcl-0.safetensors
    python scripts/probe_partitions.py runs/repro-cpu --method local_cl --weights lcl-0.safetensors
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bench.backbone import build_unet
from bench.data import prepare_data
from bench.diagnostics import mean_pairwise_cosine
from bench.runner import read_saved_config
from bench.sampling import partition_of
from bench.weights import load_pretrained, pretrained_path


def embed(unet, volumes, partitions: int):
    unet.eval()
    features, labels, volume_ids = [], [], []
    with torch.no_grad():
        for index, volume in enumerate(volumes):
            features.append(unet.encoder.embed(torch.from_numpy(volume).unsqueeze(1).float()))
            depth = volume.shape[0]
            labels += [partition_of(z, depth, partitions) for z in range(depth)]
            volume_ids += [index] * depth
    return torch.cat(features).flatten(1), torch.tensor(labels), np.array(volume_ids)


def probe_accuracy(features, labels, volume_ids, partitions: int, l2: float = 1e-3) -> float:
    train = torch.from_numpy(volume_ids < int(0.6 * (volume_ids.max() + 1)))
    mean, sd = features[train].mean(0), features[train].std(0) + 1e-6
    z = (features - mean) / sd
    weight = torch.zeros(z.shape[1], partitions, requires_grad=True)
    bias = torch.zeros(partitions, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=300)

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(z[train] @ weight + bias, labels[train]) + l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    predicted = (z[~train] @ weight + bias).argmax(1)
    return (predicted == labels[~train]).float().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a run folder whose method was pretrained")
    parser.add_argument("--method", default="fcl")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--weights",
        type=Path,
        help="a weights file to probe instead of the run's pretrained file (e.g. one client's "
        "model of a local pretraining, written by bench export --client)",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = read_saved_config(args.run / "config.yaml")
    volumes = prepare_data(config, args.run, progress=False).pretrain_volumes("centralized")[0]
    partitions = config["pretrain"]["partitions"]
    torch.manual_seed(args.seed)
    initial = build_unet(config["model"], 4)
    pretrained = load_pretrained(args.weights or pretrained_path(args.run, args.method, args.seed))
    for label, unet in (("initialisation", initial), (f"{args.method} pretrained", pretrained)):
        features, labels, volume_ids = embed(unet, volumes, partitions)
        print(
            f"{label}: {features.shape[0]} slices of {len(volumes)} volumes, mean pairwise "
            f"cosine {mean_pairwise_cosine(features[::5]):.3f}, partition probe on held-out "
            f"volumes {probe_accuracy(features, labels, volume_ids, partitions):.3f} "
            f"(chance {1 / partitions:.2f})",
            flush=True,
        )


if __name__ == "__main__":
    main()
