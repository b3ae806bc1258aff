"""timm encoders under the U-Net decoder, and batch norm under FedAvg (model.norm)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bench.backbone import build_unet
from bench.config import ConfigError, load_config
from bench.timm_encoder import TESTED

WIDTHS = [8, 16, 32, 64]


def model(encoder: str, norm: str = "instance", out_channels: int = 4):
    torch.manual_seed(0)
    config = {"widths": WIDTHS, "norm": norm, "norm_kernel": "group", "encoder": encoder}
    return build_unet(config, out_channels=out_channels)


@pytest.mark.parametrize("name", TESTED)
def test_timm_unet_segments_at_input_size_with_skips_finest_first(name):
    unet = model(f"timm/{name}")
    x = torch.rand(2, 1, 64, 64)
    assert unet(x).shape == (2, 4, 64, 64)
    features = unet.encoder(x)
    sides = [f.shape[-1] for f in features]
    assert sides == [64 // 2**k for k in range(len(sides))]  # each level halves the side
    assert [f.shape[1] for f in features] == list(unet.encoder.widths)
    assert unet.encoder.embed(x).shape == (2, unet.encoder.out_dim)
    assert unet.downsampling == 32
    assert not any(isinstance(m, nn.BatchNorm2d) for m in unet.modules())


def per_sample(unet: nn.Module) -> bool:
    """Whether a sample's output in training mode is independent of the rest of its batch."""
    unet.train()
    generator = torch.Generator().manual_seed(3)
    a, b, c = (torch.rand(1, 1, 64, 64, generator=generator) for _ in range(3))
    with torch.no_grad():
        first = unet(torch.cat([a, b]))[0]
        second = unet(torch.cat([a, c]))[0]
    return torch.allclose(first, second, atol=1e-5)


@pytest.mark.parametrize("name", ["resnet18", "efficientnet_b0"])
def test_batch_norm_is_swapped_for_per_sample_normalisation_by_default(name):
    """Under FedAvg only parameters are averaged: no client's batch statistics exist to mix."""
    swapped = model(f"timm/{name}")
    assert per_sample(swapped)
    assert not any("running_mean" in key for key in swapped.state_dict())
    kept = model(f"timm/{name}", norm="batch")  # the documented alternative: timm's BatchNorm
    assert not per_sample(kept)
    assert any("running_mean" in key for key in kept.state_dict())


def test_swap_keeps_timms_fused_activation():
    """EfficientNet's BatchNormAct2d normalises then activates: the swap keeps the activation."""
    from timm.layers import GroupNormAct

    fused = [m for m in model("timm/efficientnet_b0").modules() if isinstance(m, GroupNormAct)]
    assert fused and any(not isinstance(m.act, nn.Identity) for m in fused)


def test_group_norm_variant_uses_eight_groups():
    unet = model("timm/resnet18", norm="group")
    groups = {m.num_groups for m in unet.encoder.modules() if isinstance(m, nn.GroupNorm)}
    assert groups == {8}


def test_config_checks_the_encoder_and_the_size():
    config = load_config("tiny", ["model.encoder=timm/resnet18"])
    assert config["model"]["encoder"] == "timm/resnet18"
    with pytest.raises(ConfigError, match="timm has no such model"):
        load_config("tiny", ["model.encoder=timm/no_such_net"])
    with pytest.raises(ConfigError, match="expected 'unet' or 'timm/<name>'"):
        load_config("tiny", ["model.encoder=resnet18"])
    with pytest.raises(ConfigError, match="divisible by 32"):
        load_config("tiny", ["model.encoder=timm/resnet18", "data.preprocess.size=48"])


def test_default_stays_the_papers_unet():
    assert load_config(None)["model"]["encoder"] == "unet"
    assert type(model("unet").encoder).__name__ == "Encoder"
