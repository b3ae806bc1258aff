"""Global and local contrastive learning (Chaitanya et al., NeurIPS 2020), trained with FedAvg.

Two stages, switched by round (``global_fraction`` of the rounds, then the rest):

1. **Global stage** (encoder e + dense head g1). Two spatially and
   intensity-augmented views of every slice of the batch are embedded,
   z = g1(e(x)), and contrasted with cosine similarity over tau (Eq. 1-2):

       l(x, x+) = -log( e^{sim(z, z+)/tau}
                        / (e^{sim(z, z+)/tau} + sum_{x- in Lambda-(x)} e^{sim(z, z-)/tau}) )
       L_g = 1/|Lambda+| sum_{(x, x+) in Lambda+} l(x, x+)

   with the positive pairs Lambda+ and negative sets Lambda- of one strategy:
   - G^R (SimCLR): positives, the two views of the same slice; negatives,
     every other embedding of the batch;
   - G^D-: positives as G^R; negatives, only the slices of other partitions
     (same-partition slices of other volumes are no longer contrasted);
   - G^D: positives also the same-partition slices of the other volumes
     (either view); negatives, the slices of other partitions.
   The batch sampler gives one slice per partition of each volume, the
   "partitions" of the paper (Sec. 3.1).

2. **Local stage** (the first ``decoder_blocks`` decoder blocks d_l + 1x1
   head g2; the encoder frozen). Two intensity-augmented views of each slice
   give feature maps f = g2(d_l(e(x))). Local regions of 3x3 at ``num_regions``
   positions are flattened and projected to 128-d vectors (the official code's
   ``local_reg_size=1, wgt_en=1``). For a pair of maps (f, f+) and a region r
   (Eq. 3-4):

       l(f, f+, r) = -log( e^{sim(f_r, f+_r)/tau}
                           / (e^{sim(f_r, f+_r)/tau}
                              + sum_{n in N(r)} e^{sim(f_r, f_n)/tau} + e^{sim(f_r, f+_n)/tau}) )

   N(r): the ``num_negatives`` regions nearest to r, taken from both maps.
   L^R pairs the two views of each slice; L^D also pairs each map with the
   maps of same-partition slices of other volumes.

   **Views cropped at different offsets** (``local_crop``, a bench change).
   In the paper and the official code both views are the whole slice, so a
   region and its positive sit at the same position of their maps while the
   negatives sit elsewhere: a decoder that encodes position (zero padding
   tells it where the borders are) solves the loss without reading the image.
   Measured: on slices without content (one constant value each) the aligned
   loss is 0.22 at initialisation and 0.000 after 20 steps, against a uniform
   value of log(1 + 2 x 5) = 2.40 (docs/PROTOCOL.md, "GCL options"). Here each
   view is a crop of ``local_crop`` of the side at its own random offset (a
   multiple of the map's stride, so that map cells correspond exactly); a pair
   of maps is compared on the part of the slice both show: the regions are laid
   out on that overlap and each is read at its own position in each map, so a
   positive holds the same pixels at a different position. ``local_crop: 1.0``
   gives the aligned views of the paper.

The paper trains centrally; here the encoder, decoder and both heads are
averaged with FedAvg. pretrained_parts: encoder and decoder (decoder blocks
beyond ``decoder_blocks`` keep their initialisation: only d_l is pretrained,
as in the official code).
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from bench.augment import random_intensity, random_view
from bench.methods._contrastive import pair_mean_loss
from bench.methods.base import PretrainMethod
from bench.registry import register_method

GLOBAL_STRATEGIES = ("GR", "GD-", "GD")
G1_INPUTS = ("pooled", "flattened")
LOCAL_STRATEGIES = ("LR", "LD")
REGION_SIZE = 3


def global_masks(
    partitions: torch.Tensor, volumes: torch.Tensor, strategy: str, copies: int = 2
) -> tuple[torch.Tensor, torch.Tensor]:
    """Positive and negative masks over the ``copies`` x B embeddings of a batch.

    Embeddings ``i``, ``i + B``, ... are the copies (views) of slice ``i``
    (partition ``partitions[i]`` of volume ``volumes[i]``); every other copy of
    the same slice is a positive. Returns (pos, neg), both (cB, cB) bool, row =
    anchor: Chaitanya et al. 2020, Sec. 3.1, G^R / G^D- / G^D.
    A same-partition slice of the anchor's own volume (a volume drawn twice)
    is neither positive nor negative under G^D- and G^D.
    """
    if strategy not in GLOBAL_STRATEGIES:
        raise ValueError(
            f"global_strategy: unknown {strategy!r}; expected one of {GLOBAL_STRATEGIES}"
        )
    n = partitions.shape[0]
    device = partitions.device
    slice_id = torch.arange(n, device=device).repeat(copies)
    part, vol = partitions.repeat(copies), volumes.to(device).repeat(copies)
    not_self = ~torch.eye(copies * n, dtype=torch.bool, device=device)
    same_slice = (slice_id[:, None] == slice_id[None, :]) & not_self
    same_part = part[:, None] == part[None, :]
    other_volume = vol[:, None] != vol[None, :]
    if strategy == "GR":
        return same_slice, not_self & ~same_slice
    if strategy == "GD-":
        return same_slice, ~same_part
    return same_slice | (same_part & other_volume), ~same_part


def global_contrastive_loss(
    z: torch.Tensor,
    partitions: torch.Tensor,
    volumes: torch.Tensor,
    strategy: str,
    temperature: float,
    copies: int = 2,
) -> torch.Tensor:
    """L_g of Chaitanya et al. 2020, Eq. 1-2, for embeddings z (cB, D) ordered as in
    ``global_masks``."""
    z = F.normalize(z, dim=1)
    logits = z @ z.T / temperature
    pos, neg = global_masks(partitions, volumes, strategy, copies)
    return pair_mean_loss(logits, pos, logits, neg)


def region_positions(height: int, width: int, num_regions: int) -> list[tuple[int, int]]:
    """Top-left corners of the 3x3 local regions, as the official code lays them out.

    9 regions: a 3x3 grid (corners, edge midpoints, centre); 13: the same plus
    the four quarter points. Corners are placed so that every region fits.
    """
    if num_regions not in (9, 13):
        raise ValueError(
            f"num_regions: {num_regions} not supported; expected 9 or 13 (Chaitanya et al.)"
        )
    if height < REGION_SIZE + 1 or width < REGION_SIZE + 1:
        raise ValueError(
            f"local feature map {height}x{width} is too small for {REGION_SIZE}x{REGION_SIZE} "
            "regions"
        )
    ymax, xmax = height - REGION_SIZE, width - REGION_SIZE
    fractions = [(a, b) for a in (0, 0.5, 1) for b in (0, 0.5, 1)]
    if num_regions == 13:
        fractions += [(0.25, 0.25), (0.25, 0.75), (0.75, 0.25), (0.75, 0.75)]
    return [(int(a * ymax), int(b * xmax)) for a, b in fractions]


def nearest_regions(positions: list[tuple[int, int]], count: int) -> torch.Tensor:
    """For each region, the ``count`` nearest other regions (the "nearby" negatives of the official
    code)."""
    if not 1 <= count < len(positions):
        raise ValueError(f"num_negatives: {count} must be in [1, {len(positions) - 1}]")
    pos = torch.tensor(positions, dtype=torch.float64)
    dist = torch.cdist(pos, pos)
    dist.fill_diagonal_(float("inf"))
    # Stable sort: ties go to the region listed first.
    return torch.sort(dist, dim=1, stable=True).indices[:, :count]


def local_contrastive_loss(
    anchors: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Chaitanya et al. 2020, Eq. 3-4: mean of l(f, f+, r) over the map pairs and regions.

    anchors, positives (P, R, D): the region vectors of each pair's anchor map and positive
    map, region r of both covering the same part of the image; negatives (R, n) or (P, R, n):
    each region's negative regions (indices into R), taken from both the anchor and the
    positive map.
    """
    a, p = F.normalize(anchors, dim=-1), F.normalize(positives, dim=-1)
    pairs, regions = a.shape[:2]
    if negatives.dim() == 2:
        negatives = negatives.expand(pairs, regions, -1)
    index = torch.arange(pairs, device=a.device)[:, None, None]
    pos_logits = (a * p).sum(-1) / temperature  # (P, R)
    neg_from_anchor = torch.einsum("prd,prnd->prn", a, a[index, negatives]) / temperature
    neg_from_positive = torch.einsum("prd,prnd->prn", a, p[index, negatives]) / temperature
    neg_logits = torch.cat([neg_from_anchor, neg_from_positive], dim=2)  # (P, R, 2n)
    pos_logits = pos_logits.reshape(-1, 1)
    neg_logits = neg_logits.reshape(pos_logits.shape[0], -1)
    return pair_mean_loss(
        pos_logits,
        torch.ones_like(pos_logits, dtype=torch.bool),
        neg_logits,
        torch.ones_like(neg_logits, dtype=torch.bool),
    )


@lru_cache(maxsize=256)
def _overlap_layout(height: int, width: int, num_regions: int, num_negatives: int):
    """Region corners and nearest negatives on an overlap of ``height`` x ``width`` cells."""
    positions = region_positions(height, width, num_regions)
    return torch.tensor(positions), nearest_regions(positions, num_negatives)


def pair_regions(
    offsets: torch.Tensor, pairs: torch.Tensor, side: int, num_regions: int, num_negatives: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where each pair's regions lie in its two maps, and their negatives.

    offsets (M, 2): each map's crop origin in the slice, in map cells; every map is ``side``
    cells square; pairs (P, 2): (anchor, positive) map indices. The regions are laid out on
    the part of the slice both maps of a pair show. Returns the corners in the anchor map and
    in the positive map, (P, R, 2) each, and the negatives (P, R, n).
    """
    first, second = offsets[pairs[:, 0]], offsets[pairs[:, 1]]
    origin = torch.maximum(first, second)  # the overlap's corner in slice cells
    extent = side - (first - second).abs()
    corners, negatives = [], []
    for height, width in extent.tolist():
        layout, nearest = _overlap_layout(height, width, num_regions, num_negatives)
        corners.append(layout)
        negatives.append(nearest)
    corners = torch.stack(corners).to(offsets.device)  # (P, R, 2), from the overlap's corner
    anchor_at = corners + (origin - first)[:, None, :]
    positive_at = corners + (origin - second)[:, None, :]
    return anchor_at, positive_at, torch.stack(negatives).to(offsets.device)


def region_windows(maps: torch.Tensor, index: torch.Tensor, corners: torch.Tensor) -> torch.Tensor:
    """The 3x3 windows of maps[index[p]] at corners[p] (P, R, 2), flattened as (C, 3, 3):
    (P, R, C * 9)."""
    step = torch.arange(REGION_SIZE, device=maps.device)
    y = corners[..., 0, None, None] + step[:, None]  # (P, R, 3, 1)
    x = corners[..., 1, None, None] + step[None, :]  # (P, R, 1, 3)
    windows = maps.permute(0, 2, 3, 1)[index[:, None, None, None], y, x]  # (P, R, 3, 3, C)
    return windows.permute(0, 1, 4, 2, 3).flatten(2)


@register_method
class GlobalLocalContrastive(PretrainMethod):
    name = "gcl"
    summary = (
        "Global (partition-aware, G^R/G^D-/G^D) then local (decoder regions, L^R/L^D) contrastive "
        "learning of Chaitanya et al. 2020, with FedAvg"
    )
    defaults: ClassVar[dict] = {
        "global_strategy": "GD",
        "local_strategy": "LR",
        "temperature": 0.1,
        "local_temperature": 0.1,
        "hidden_dim": 1024,
        "projection_dim": 128,
        "global_fraction": 0.5,
        "decoder_blocks": 3,
        "num_regions": 13,
        "num_negatives": 5,
        "region_dim": 128,
        "g1_input": "pooled",
        "gd_minus_unaugmented_copy": False,
        "local_crop": 0.75,
    }
    sources: ClassVar[dict[str, str]] = {
        "global_strategy": "GD, the best ACDC encoder strategy of Chaitanya et al. 2020",
        "local_strategy": "LR, the best ACDC decoder strategy of Chaitanya et al. 2020 (G^D + L^R)",
        "temperature": "0.1, Chaitanya et al. 2020 (official --temp_fac 0.1)",
        "local_temperature": "0.1, the official code uses the same --temp_fac for the local stage",
        "hidden_dim": "1024, g1 of Chaitanya et al. (dense 1024 -> 128)",
        "g1_input": "choice: pooled, the encoder's embedding (the bottleneck average-pooled to "
        "model.embed_grid x model.embed_grid cells and flattened: at 192 px and the default grid "
        "of 6 that is the whole map, as the official code), so that the head does not depend on "
        "the image size; flattened, the whole bottleneck map flattened at any size",
        "gd_minus_unaugmented_copy": "choice: false, two augmented views per slice as in G^R and "
        "G^D; true adds the official code's third, unaugmented copy of each slice to G^D-'s "
        "batch (every pair of copies of a slice is positive)",
        "projection_dim": "128, Chaitanya et al. 2020",
        "global_fraction": "choice: half of the rounds for the global stage, the rest for the "
        "local "
        "stage; the paper trains the stages one after the other with equal iteration counts "
        "(10,000 each in the official scripts)",
        "decoder_blocks": "choice: 3 decoder blocks (a map at 1/4 of the input side, 48x48 at "
        "192); "
        "the official script's default --no_of_decoder_blocks is 1; capped at the U-Net's decoder "
        "depth",
        "num_regions": "13, the official code (--no_of_local_regions 13)",
        "num_negatives": "5 nearest regions from each of the two maps, official code",
        "region_dim": "128, the dense layer on the flattened 3x3 region in the official code "
        "(wgt_en=1)",
        "local_crop": "choice (bench): each local-stage view is a crop of this fraction of the "
        "side (rounded down to the U-Net's downsampling) at its own random offset, regions "
        "matched by content, so that the loss cannot be solved from position alone; 1.0: the "
        "paper's aligned whole-slice views, which a decoder solves from position "
        "(docs/PROTOCOL.md, GCL options)",
    }
    federation = "fedavg"
    pretrained_parts = ("encoder", "decoder")
    shared_doc = "encoder, decoder, global head g1 and local head g2 (FedAvg)"
    local_doc = "g2's BatchNorm step counter, optimiser state"

    def __init__(self, unet, hparams, **kwargs):
        super().__init__(unet, hparams, **kwargs)
        hp = self.hparams
        if hp["global_strategy"] not in GLOBAL_STRATEGIES:
            raise ValueError(
                f"global_strategy: unknown {hp['global_strategy']!r}; expected one of "
                f"{GLOBAL_STRATEGIES}"
            )
        if hp["local_strategy"] not in LOCAL_STRATEGIES:
            raise ValueError(
                f"local_strategy: unknown {hp['local_strategy']!r}; expected one of "
                f"{LOCAL_STRATEGIES}"
            )
        if hp["decoder_blocks"] < 1:
            raise ValueError(f"decoder_blocks: {hp['decoder_blocks']} must be at least 1")
        # A shallower U-Net than the default uses all of its decoder blocks.
        self.decoder_blocks = min(int(hp["decoder_blocks"]), len(unet.decoder.ups))
        if not 0.0 <= hp["global_fraction"] <= 1.0:
            raise ValueError(f"global_fraction: {hp['global_fraction']} not in [0, 1]")
        if not 0.0 < hp["local_crop"] <= 1.0:
            raise ValueError(f"local_crop: {hp['local_crop']} not in (0, 1]")
        if hp["local_crop"] < 1.0 and self.image_size is not None:
            self.crop_side(self.image_size)  # refused before any training, not at the local stage
        if hp["g1_input"] not in G1_INPUTS:
            raise ValueError(f"g1_input: unknown {hp['g1_input']!r}; expected one of {G1_INPUTS}")
        # g1: dense layers without bias, as in the official code.
        self.global_head = nn.Sequential(
            nn.Linear(self.g1_in_features(unet), hp["hidden_dim"], bias=False),
            nn.ReLU(inplace=True),
            nn.Linear(hp["hidden_dim"], hp["projection_dim"], bias=False),
        )
        # g2: two 1x1 convolutions on the decoder map, then a dense layer per flattened 3x3 region.
        channels = unet.decoder.widths[len(unet.decoder.widths) - 1 - self.decoder_blocks]
        self.local_head = nn.Sequential(
            nn.Conv2d(channels, channels, 1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 1, bias=False),
        )
        self.region_projection = nn.Linear(channels * REGION_SIZE**2, hp["region_dim"], bias=False)
        # Every parameter is trainable until begin_round freezes what the round's stage does not
        # train: the engine builds the optimiser between construction and begin_round, so it holds
        # all of them in every round (frozen ones get no gradient and Adam skips them).
        self.stage = "global" if hp["global_fraction"] > 0 else "local"

    def g1_in_features(self, unet) -> int:
        if self.hparams["g1_input"] == "pooled":
            return unet.encoder.out_dim
        if self.image_size is None:
            raise ValueError("g1_input: flattened needs the image size (data.preprocess.size)")
        side = self.image_size // 2 ** (len(unet.encoder.widths) - 1)
        return unet.encoder.widths[-1] * side * side

    def g1_input(self, images: torch.Tensor) -> torch.Tensor:
        """The encoder's output that g1 embeds: the pooled or the flattened bottleneck."""
        if self.hparams["g1_input"] == "pooled":
            return self.unet.encoder.embed(images)
        return self.unet.encoder(images)[-1].flatten(1)

    # -- stages ---------------------------------------------------------
    def global_rounds(self, num_rounds: int) -> int:
        """Rounds of the global stage: ``global_fraction`` of them, at least one of each stage
        when the fraction is strictly between 0 and 1 and there are two rounds or more."""
        fraction = self.hparams["global_fraction"]
        rounds = math.floor(fraction * num_rounds + 0.5)
        if fraction > 0:
            rounds = max(rounds, 1)
        if fraction < 1 and num_rounds > 1:
            rounds = min(rounds, num_rounds - 1)
        return min(rounds, num_rounds)

    def set_stage(self, stage: str) -> None:
        """Freezes what the stage does not train: the local stage trains d_l and g2 on a frozen
        encoder (Chaitanya et al., Sec. 3.2); the global stage trains e and g1 only."""
        self.stage = stage
        is_global = stage == "global"
        self.unet.encoder.requires_grad_(is_global)
        self.global_head.requires_grad_(is_global)
        self.unet.decoder.requires_grad_(not is_global)
        self.local_head.requires_grad_(not is_global)
        self.region_projection.requires_grad_(not is_global)

    def begin_round(self, round_index: int, num_rounds: int) -> None:
        super().begin_round(round_index, num_rounds)
        self.set_stage("global" if round_index < self.global_rounds(num_rounds) else "local")

    # -- training -------------------------------------------------------
    def training_step(self, batch, generator):
        if self.stage == "global":
            return {"loss": self.global_step(batch, generator)}
        return {"loss": self.local_step(batch, generator)}

    def global_step(self, batch, generator) -> torch.Tensor:
        images = batch["image"]
        self.unet.encoder.train(self.training)
        view_a, _ = random_view(images, generator)
        view_b, _ = random_view(images, generator)
        strategy = self.hparams["global_strategy"]
        copies = [view_a, view_b]
        if strategy == "GD-" and self.hparams["gd_minus_unaugmented_copy"]:
            copies.append(images)
        z = self.global_head(self.g1_input(torch.cat(copies)))
        partitions = batch["partition"].to(images.device)
        with torch.autocast(device_type=images.device.type, enabled=False):  # float32 loss
            return global_contrastive_loss(
                z.float(),
                partitions,
                batch["volume"],
                strategy,
                self.hparams["temperature"],
                copies=len(copies),
            )

    def local_features(self, images: torch.Tensor) -> torch.Tensor:
        """g2(d_l(e(x))): the first ``decoder_blocks`` decoder blocks on the frozen encoder."""
        self.unet.encoder.eval()  # frozen: no normalisation statistics move either
        with torch.no_grad():
            features = self.unet.encoder(images)
        x = features[-1]
        skips = list(reversed(features[:-1]))
        for up, skip in zip(self.unet.decoder.ups[: self.decoder_blocks], skips, strict=False):
            x = up(x, skip)
        return self.local_head(x)

    @property
    def local_stride(self) -> int:
        """Input pixels per cell of the local feature map."""
        return self.unet.downsampling // 2**self.decoder_blocks

    def crop_views(
        self, views: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Each view cropped to ``local_crop`` of the side at its own random offset.

        Offsets are multiples of the local map's stride, so that a map cell covers the same
        pixels in every crop. Returns the crops and each crop's offset in map cells (M, 2).
        """
        side, stride = views.shape[-1], self.local_stride
        crop = side if self.hparams["local_crop"] >= 1.0 else self.crop_side(side)
        most = (side - crop) // stride
        # The second view of slice i (views i and i + B) is cropped at the mirror image of the
        # first's offset: their shift is uniform over [-most, most] on each axis (two
        # independent offsets would make small shifts, which position alone can tell, likelier).
        first = torch.randint(0, most + 1, (views.shape[0] // 2, 2), generator=generator)
        offsets = torch.cat([first, most - first])
        crops = torch.stack(
            [
                view[:, y * stride : y * stride + crop, x * stride : x * stride + crop]
                for view, (y, x) in zip(views, offsets.tolist(), strict=True)
            ]
        )
        return crops, offsets.to(views.device)

    def crop_side(self, side: int) -> int:
        """The crops' side: the multiple of the U-Net's downsampling nearest to ``local_crop`` of
        the slice's among those that leave room for a shift and overlap enough for the regions."""
        downsampling, stride = self.unet.downsampling, self.local_stride
        fitting = [
            crop
            for crop in range(downsampling, side, downsampling)
            if (2 * crop - side) // stride >= REGION_SIZE + 1  # the least two crops share
        ]
        if not fitting:
            raise ValueError(
                f"local_crop: {self.hparams['local_crop']}: no crop of a {side}-px slice that "
                f"is a multiple of the U-Net's downsampling ({downsampling} px) leaves room for "
                f"a shift and {REGION_SIZE + 1} map cells of overlap; use local_crop: 1.0 (the "
                "paper's aligned views) or larger slices"
            )
        target = self.hparams["local_crop"] * side
        return min(fitting, key=lambda crop: (abs(crop - target), -crop))

    def local_pairs(self, partitions: torch.Tensor, volumes: torch.Tensor) -> torch.Tensor:
        """(anchor, positive) map index pairs: L^R the two views of each slice; L^D also the
        same-partition slices of other volumes (G^D's positives)."""
        strategy = "GR" if self.hparams["local_strategy"] == "LR" else "GD"
        pos, _ = global_masks(partitions, volumes, strategy)
        return pos.nonzero()

    def local_step(self, batch, generator) -> torch.Tensor:
        images = batch["image"]
        view_a = random_intensity(images, generator)
        view_b = random_intensity(images, generator)
        crops, offsets = self.crop_views(torch.cat([view_a, view_b]), generator)
        maps = self.local_features(crops)
        pairs = self.local_pairs(batch["partition"].to(images.device), batch["volume"])
        anchor_at, positive_at, negatives = pair_regions(
            offsets,
            pairs,
            maps.shape[-1],
            self.hparams["num_regions"],
            self.hparams["num_negatives"],
        )
        anchors = self.region_projection(region_windows(maps, pairs[:, 0], anchor_at))
        positives = self.region_projection(region_windows(maps, pairs[:, 1], positive_at))
        with torch.autocast(device_type=images.device.type, enabled=False):  # float32 loss
            return local_contrastive_loss(
                anchors.float(), positives.float(), negatives, self.hparams["local_temperature"]
            )
