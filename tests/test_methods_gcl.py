"""Global/local contrastive learning (Chaitanya et al. 2020): positive/negative sets, losses,
stages."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bench.backbone import DEFAULT_EMBED_GRID, UNet2D
from bench.methods.gcl import (
    GlobalLocalContrastive,
    global_contrastive_loss,
    global_masks,
    local_contrastive_loss,
    nearest_regions,
    pair_regions,
    region_positions,
    region_windows,
)

# Hand-made batch: 3 volumes x 2 partitions, plus volume 0 drawn a second time.
PARTITIONS = torch.tensor([0, 1, 0, 1, 0, 1, 0])
VOLUMES = torch.tensor([0, 0, 1, 1, 2, 2, 0])
B = 7


def _info(k: int) -> tuple[int, int, int]:
    """(slice, partition, volume) of embedding k of the two-view batch."""
    s = k % B
    return s, int(PARTITIONS[s]), int(VOLUMES[s])


def _direct_sets(strategy: str) -> tuple[set, set]:
    """Positive and negative pairs written from the paper's wording, one pair at a time."""
    pos, neg = set(), set()
    for a in range(2 * B):
        for b in range(2 * B):
            if a == b:
                continue
            (sa, pa, va), (sb, pb, vb) = _info(a), _info(b)
            same_slice = sa == sb
            if strategy == "GR":  # SimCLR: the other view is the positive, everything else negative
                (pos if same_slice else neg).add((a, b))
            elif strategy == "GD-":  # negatives only from other partitions
                if same_slice:
                    pos.add((a, b))
                elif pa != pb:
                    neg.add((a, b))
            else:  # GD: same partition of another volume is positive too
                if same_slice or (pa == pb and va != vb):
                    pos.add((a, b))
                elif pa != pb:
                    neg.add((a, b))
    return pos, neg


def _pairs(mask: torch.Tensor) -> set:
    return {tuple(p) for p in mask.nonzero().tolist()}


@pytest.mark.parametrize("strategy", ["GR", "GD-", "GD"])
def test_global_positive_and_negative_sets_match_direct_computation(strategy):
    pos, neg = global_masks(PARTITIONS, VOLUMES, strategy)
    expected_pos, expected_neg = _direct_sets(strategy)
    assert _pairs(pos) == expected_pos
    assert _pairs(neg) == expected_neg
    assert not (pos & neg).any()


def test_gd_minus_excludes_same_partition_other_volume_slices_from_negatives():
    pos, neg = global_masks(PARTITIONS, VOLUMES, "GD-")
    gr_pos, gr_neg = global_masks(PARTITIONS, VOLUMES, "GR")
    # Slice 0 (partition 0, volume 0) and slice 2 (partition 0, volume 1): a negative pair in G^R
    # only.
    for a, b in [(0, 2), (0, 2 + B), (0 + B, 4), (2, 0)]:
        assert gr_neg[a, b] and not neg[a, b] and not pos[a, b]
    # Other partitions stay negatives; the positives are those of G^R.
    assert neg[0, 1] and neg[0, 3 + B]
    assert torch.equal(pos, gr_pos)
    # G^D makes them positives.
    gd_pos, gd_neg = global_masks(PARTITIONS, VOLUMES, "GD")
    assert gd_pos[0, 2] and gd_pos[0, 4 + B] and not gd_neg[0, 2]
    # Same partition, same volume (volume 0 drawn twice): neither positive nor negative.
    assert not gd_pos[0, 6] and not gd_neg[0, 6]


@pytest.mark.parametrize("strategy", ["GR", "GD-", "GD"])
def test_global_loss_equals_explicit_loops(strategy):
    tau = 0.1
    z = torch.randn(2 * B, 6, generator=torch.Generator().manual_seed(0))
    loss = float(global_contrastive_loss(z, PARTITIONS, VOLUMES, strategy, tau))
    zn = F.normalize(z, dim=1)
    pos, neg = _direct_sets(strategy)
    terms = []
    for a, b in sorted(pos):
        num = math.exp(float(zn[a] @ zn[b]) / tau)
        den = num + sum(math.exp(float(zn[a] @ zn[n]) / tau) for (x, n) in neg if x == a)
        terms.append(-math.log(num / den))  # Eq. 1, averaged over Lambda+ (Eq. 2)
    assert loss == pytest.approx(np.mean(terms), rel=1e-5)


def test_local_loss_equals_explicit_loops():
    tau = 0.5
    g = torch.Generator().manual_seed(1)
    anchors, positives = torch.randn(3, 5, 3, generator=g), torch.randn(3, 5, 3, generator=g)
    # Each pair has its own negatives (its own overlap's layout).
    negatives = torch.tensor(
        [
            [[1, 2], [0, 2], [1, 3], [2, 4], [3, 1]],
            [[4, 2], [0, 3], [1, 0], [2, 4], [3, 0]],
            [[1, 3], [2, 4], [1, 3], [0, 4], [3, 2]],
        ]
    )
    loss = float(local_contrastive_loss(anchors, positives, negatives, tau))
    a, p = F.normalize(anchors, dim=-1), F.normalize(positives, dim=-1)
    terms = []
    for pair in range(3):
        for r in range(5):
            num = math.exp(float(a[pair, r] @ p[pair, r]) / tau)
            den = num
            for n in negatives[pair, r].tolist():  # nearby regions of both maps
                den += math.exp(float(a[pair, r] @ a[pair, n]) / tau) + math.exp(
                    float(a[pair, r] @ p[pair, n]) / tau
                )
            terms.append(-math.log(num / den))
    assert loss == pytest.approx(np.mean(terms), rel=1e-5)
    # One set of negatives for every pair broadcasts.
    shared = float(local_contrastive_loss(anchors, positives, negatives[0], tau))
    expected = float(local_contrastive_loss(anchors, positives, negatives[0].expand(3, 5, 2), tau))
    assert shared == pytest.approx(expected, rel=1e-6)


def test_region_layout_and_nearest_negatives():
    positions = region_positions(12, 12, 13)
    assert len(set(positions)) == 13
    assert all(0 <= y <= 9 and 0 <= x <= 9 for y, x in positions)
    assert (0, 0) in positions and (9, 9) in positions and (4, 4) in positions
    near = nearest_regions(positions, 5)
    assert near.shape == (13, 5)
    assert all(r not in near[r].tolist() for r in range(13))
    with pytest.raises(ValueError):
        region_positions(12, 12, 7)


def _batch(volumes=2, partitions=4, size=32):
    g = torch.Generator().manual_seed(0)
    n = volumes * partitions
    return {
        "image": torch.rand(n, 1, size, size, generator=g),
        "partition": torch.arange(partitions).repeat(volumes),
        "volume": torch.arange(volumes).repeat_interleave(partitions),
    }


def _method(**hparams):
    torch.manual_seed(0)
    unet = UNet2D(widths=(4, 8, 16, 16))
    return GlobalLocalContrastive(
        unet, {"hidden_dim": 32, "projection_dim": 8, "region_dim": 8, **hparams}
    )


def test_stage_switch_by_round():
    method = _method(global_fraction=0.5)
    stages = []
    for r in range(4):
        method.begin_round(r, 4)
        stages.append(method.stage)
    assert stages == ["global", "global", "local", "local"]
    assert method.global_rounds(1) == 1 and method.global_rounds(3) in (1, 2)
    assert _method(global_fraction=0.0).global_rounds(5) == 0
    assert _method(global_fraction=1.0).global_rounds(5) == 5


def test_global_stage_trains_the_encoder_not_the_decoder():
    method = _method()
    method.begin_round(0, 2)
    loss = method.training_step(_batch(), torch.Generator().manual_seed(0))["loss"]
    assert torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None for p in method.unet.encoder.parameters())
    assert all(p.grad is None for p in method.unet.decoder.parameters())


@pytest.mark.parametrize("local_strategy", ["LR", "LD"])
def test_local_stage_freezes_the_encoder(local_strategy):
    method = _method(local_strategy=local_strategy, decoder_blocks=2)
    method.begin_round(1, 2)
    assert method.stage == "local"
    assert all(not p.requires_grad for p in method.unet.encoder.parameters())
    assert all(p.requires_grad for p in method.unet.decoder.parameters())
    loss = method.training_step(_batch(), torch.Generator().manual_seed(0))["loss"]
    assert torch.isfinite(loss) and loss.requires_grad
    loss.backward()
    assert all(p.grad is None for p in method.unet.encoder.parameters())
    # The first two decoder blocks (d_l) and g2 are trained.
    for block in method.unet.decoder.ups[:2]:
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in block.parameters())
    assert all(p.grad is not None for p in method.local_head.parameters())
    assert set(method.optimizer_parameters()).isdisjoint(set(method.unet.encoder.parameters()))
    # Back to a global round: the encoder trains again.
    method.begin_round(0, 2)
    assert all(p.requires_grad for p in method.unet.encoder.parameters())


def test_local_pairs_follow_the_strategy():
    partitions, volumes = torch.tensor([0, 1, 0, 1]), torch.tensor([0, 0, 1, 1])
    lr = {tuple(p) for p in _method(local_strategy="LR").local_pairs(partitions, volumes).tolist()}
    assert lr == {(0, 4), (4, 0), (1, 5), (5, 1), (2, 6), (6, 2), (3, 7), (7, 3)}
    ld = {tuple(p) for p in _method(local_strategy="LD").local_pairs(partitions, volumes).tolist()}
    assert lr < ld and (0, 2) in ld and (0, 6) in ld and (0, 1) not in ld


def test_engine_order_optimiser_built_before_begin_round_trains_each_stage():
    """bench.pretrain builds the optimiser right after construction, then calls begin_round."""
    method = _method(decoder_blocks=2)
    optimizer = torch.optim.Adam(method.optimizer_parameters(), lr=1e-2)
    for round_index, trained, frozen in [(0, "encoder", "decoder"), (1, "decoder", "encoder")]:
        method.begin_round(round_index, 2)
        before = {k: v.clone() for k, v in method.unet.state_dict().items()}
        loss = method.training_step(_batch(), torch.Generator().manual_seed(round_index))["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        after = method.unet.state_dict()
        moved = {k.split(".")[0] for k in before if not torch.equal(before[k], after[k])}
        assert trained in moved and frozen not in moved, (round_index, moved)
    # The optimiser's state reloads into a fresh method's optimiser (same parameter list every
    # round).
    fresh = _method(decoder_blocks=2)
    torch.optim.Adam(fresh.optimizer_parameters(), lr=1e-2).load_state_dict(optimizer.state_dict())


def test_gd_minus_third_unaugmented_copy_pairs_every_copy_of_a_slice():
    pos, neg = global_masks(PARTITIONS, VOLUMES, "GD-", copies=3)
    assert pos.shape == (3 * B, 3 * B)
    for a in range(3 * B):
        for b in range(3 * B):
            sa, sb = a % B, b % B
            same_slice = a != b and sa == sb
            assert bool(pos[a, b]) == same_slice
            assert bool(neg[a, b]) == (int(PARTITIONS[sa]) != int(PARTITIONS[sb]))
    tau = 0.1
    z = torch.randn(3 * B, 6, generator=torch.Generator().manual_seed(2))
    loss = float(global_contrastive_loss(z, PARTITIONS, VOLUMES, "GD-", tau, copies=3))
    zn = F.normalize(z, dim=1)
    terms = []
    for a, b in pos.nonzero().tolist():
        num = math.exp(float(zn[a] @ zn[b]) / tau)
        den = num + sum(
            math.exp(float(zn[a] @ zn[n]) / tau)
            for n in range(3 * B)
            if int(PARTITIONS[a % B]) != int(PARTITIONS[n % B])
        )
        terms.append(-math.log(num / den))
    assert loss == pytest.approx(np.mean(terms), rel=1e-5)


def test_g1_options_flattened_bottleneck_and_third_copy_train():
    torch.manual_seed(0)
    hp = {"hidden_dim": 32, "projection_dim": 8, "region_dim": 8, "global_strategy": "GD-"}
    flat = GlobalLocalContrastive(
        UNet2D(widths=(4, 8, 16, 16)),
        {**hp, "g1_input": "flattened", "gd_minus_unaugmented_copy": True},
        image_size=32,
    )
    assert flat.global_head[0].in_features == 16 * 4 * 4  # 32 / 2**3 = 4 per side
    flat.begin_round(0, 2)
    loss = flat.training_step(_batch(), torch.Generator().manual_seed(0))["loss"]
    loss.backward()
    assert torch.isfinite(loss) and flat.global_head[0].weight.grad is not None
    # pooled: the encoder's embedding, the bottleneck's channels x the embedding grid's cells
    assert _method().global_head[0].in_features == 16 * DEFAULT_EMBED_GRID**2
    with pytest.raises(ValueError, match="needs the image size"):
        _method(g1_input="flattened")


# ------------------------------------------------- the local stage's views: content, not position


def _local_views(method, volumes=2, partitions=4, size=32):
    """Crops of 2 x (volumes x partitions) views, their offsets and the map pairs of L^R."""
    n = volumes * partitions
    g = torch.Generator().manual_seed(3)
    # Every pixel of the slice holds its own value: equal windows mean the same pixels.
    slices = torch.arange(n * size * size, dtype=torch.float32).reshape(n, 1, size, size)
    crops, offsets = method.crop_views(torch.cat([slices, slices]), g)
    pairs = method.local_pairs(
        torch.arange(partitions).repeat(volumes), torch.arange(volumes).repeat_interleave(n // 2)
    )
    return crops, offsets, pairs


def test_cropped_views_match_regions_by_content():
    method = _method(local_crop=0.75)  # 4 levels: the local map has the input's resolution
    assert method.local_stride == 1 and method.crop_side(32) == 24
    crops, offsets, pairs = _local_views(method)
    assert crops.shape[-2:] == (24, 24)
    assert len({tuple(o) for o in offsets.tolist()}) > 2  # views are cropped at many offsets
    anchor_at, positive_at, negatives = pair_regions(offsets, pairs, 24, 13, 5)
    anchors = region_windows(crops, pairs[:, 0], anchor_at)
    positives = region_windows(crops, pairs[:, 1], positive_at)
    # Region r of a pair holds the same pixels in both maps ...
    assert torch.equal(anchors, positives)
    # ... at different positions of the two maps wherever the views' offsets differ,
    shifted = (offsets[pairs[:, 0]] != offsets[pairs[:, 1]]).any(1)
    assert shifted.any()
    assert (anchor_at[shifted] != positive_at[shifted]).any(-1).all()
    # and the 13 regions of a pair are 13 different places of the slice, each with 5 others as
    # negatives.
    assert all(len({tuple(c) for c in corners.tolist()}) == 13 for corners in anchor_at)
    assert negatives.shape == (len(pairs), 13, 5)
    assert not (negatives == torch.arange(13)[None, :, None]).any()


def test_aligned_views_are_the_papers_whole_slices():
    method = _method(local_crop=1.0)
    crops, offsets, pairs = _local_views(method)
    assert crops.shape[-1] == 32 and not offsets.any()
    anchor_at, positive_at, negatives = pair_regions(offsets, pairs, 32, 13, 5)
    layout = torch.tensor(region_positions(32, 32, 13))
    assert torch.equal(anchor_at, layout.expand_as(anchor_at)) and torch.equal(
        anchor_at, positive_at
    )
    assert torch.equal(negatives[0], nearest_regions(region_positions(32, 32, 13), 5))


@pytest.mark.parametrize(("crop", "low", "high"), [(1.0, 0.0, 0.01), (0.75, 0.85, 2.0)])
def test_features_that_encode_only_position_solve_aligned_views_not_cropped_ones(crop, low, high):
    """A decoder can tell where it is in its input (zero padding shows the borders); here a map
    whose features are a random code of the position alone, the same for every input."""
    method = _method(local_crop=crop)
    crops, offsets, pairs = _local_views(method)
    side = crops.shape[-1]
    code = torch.randn(16, side, side, generator=torch.Generator().manual_seed(4))
    maps = code.expand(len(crops), -1, -1, -1)
    anchor_at, positive_at, negatives = pair_regions(offsets, pairs, side, 13, 5)
    loss = local_contrastive_loss(
        region_windows(maps, pairs[:, 0], anchor_at),
        region_windows(maps, pairs[:, 1], positive_at),
        negatives,
        0.1,
    )
    uniform = math.log(1 + 2 * 5)  # every similarity equal
    assert low * uniform <= float(loss) <= high * uniform


def test_the_crop_is_the_nearest_that_fits_and_a_slice_too_small_is_refused():
    method = _method(local_crop=0.3)  # downsampling 8: crops of 8, 16 or 24 px at 32 px
    assert method.crop_side(32) == 24  # the only one whose two crops share 4 x 4 cells
    assert _method(local_crop=0.6).crop_side(64) == 40
    with pytest.raises(ValueError, match="local_crop"):
        method.crop_side(16)
    # Known slice size: refused when the method is built, before any training.
    with pytest.raises(ValueError, match="local_crop: 0.75: no crop of a 16-px slice"):
        GlobalLocalContrastive(UNet2D(widths=(4, 8, 16, 16)), {}, image_size=16)
    GlobalLocalContrastive(UNet2D(widths=(4, 8, 16, 16)), {"local_crop": 1.0}, image_size=16)
    with pytest.raises(ValueError, match="local_crop"):
        _method(local_crop=0.0)
