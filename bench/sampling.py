"""The one pretraining batch sampler every method shares.

A batch holds ``volumes_per_batch`` volumes and, from each, one slice drawn at
random from each of ``partitions`` ordered partitions along the slice axis
(FCL, Chaitanya et al.). All draws come from the generator passed in.
"""

from __future__ import annotations

import numpy as np
import torch


def partition_of(slice_index: int, num_slices: int, partitions: int) -> int:
    """Partition of a slice: the slice axis cut into ``partitions`` equal parts."""
    return min(partitions - 1, slice_index * partitions // num_slices)


class SliceStack:
    """The slices of a client's volumes in one contiguous array, ready for sampling."""

    def __init__(self, volumes: list[np.ndarray], partitions: int):
        if not volumes:
            raise ValueError("no volumes to sample from")
        self.images = torch.from_numpy(np.concatenate(volumes, axis=0)).unsqueeze(1).contiguous()
        self.partitions = partitions
        # For each volume and partition, the global indices of its slices.
        self.index: list[list[np.ndarray]] = []
        self.volume_of = []
        start = 0
        for v, volume in enumerate(volumes):
            depth = volume.shape[0]
            parts = [[] for _ in range(partitions)]
            for z in range(depth):
                parts[partition_of(z, depth, partitions)].append(start + z)
            # A volume thinner than S slices reuses its nearest slices for empty parts.
            for p in range(partitions):
                if not parts[p]:
                    parts[p] = [start + min(depth - 1, p * depth // partitions)]
            self.index.append([np.asarray(part) for part in parts])
            self.volume_of.extend([v] * depth)
            start += depth
        self.depths = [volume.shape[0] for volume in volumes]

    @property
    def num_volumes(self) -> int:
        return len(self.index)

    def sample(self, volumes_per_batch: int, generator: torch.Generator, client: int = 0) -> dict:
        chosen = torch.randperm(self.num_volumes, generator=generator)
        # Fewer volumes than asked: cycle through them again.
        chosen = chosen.repeat(-(-volumes_per_batch // self.num_volumes))[
            :volumes_per_batch
        ].tolist()
        picks, parts, positions = [], [], []
        for v in chosen:
            for p, candidates in enumerate(self.index[v]):
                pick = int(
                    candidates[int(torch.randint(len(candidates), (1,), generator=generator))]
                )
                picks.append(pick)
                parts.append(p)
                first = sum(self.depths[:v])
                positions.append((pick - first + 0.5) / self.depths[v])
        idx = torch.as_tensor(picks)
        return {
            "image": self.images[idx],
            "partition": torch.as_tensor(parts),
            "position": torch.as_tensor(positions, dtype=torch.float32),
            "volume": torch.as_tensor(chosen).repeat_interleave(self.partitions),
            "client": torch.full((len(picks),), client, dtype=torch.long),
        }
