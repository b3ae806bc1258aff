"""PGL: prior-guided local self-supervised learning (Xie et al., 2020), on 2D slices with FedAvg.

BYOL (Grill et al., NeurIPS 2020) plus a local term. Two views of each slice
are made with known spatial transforms (crop/scale, rotation, flip; the
affines ``theta_a``, ``theta_b`` that ``bench.augment.random_view`` returns).
The transforms are the prior: the target network's feature map of view B is
resampled into view A's frame with ``relative_theta(theta_a, theta_b)``, so
that position (i, j) of both maps shows the same anatomy, and a BYOL-style
loss is applied to the aligned local features on the views' overlap.

- Global term (BYOL, Grill et al. Eq. 2, symmetrised): the online predictor's
  output for one view regresses the target projection of the other view,
  ``2 - 2 cos(q(z_a), z'_b)``, computed as ``2 + 2 * NegativeCosineSimilarity``
  (lightly) so that it is 0 at the optimum.
- Local term (Xie et al., Sec. 2, "local consistency"): the same loss per
  position between the online local prediction of view A and the target
  local projection of view B aligned into A's frame, averaged over the
  positions where B's map covers A's (a mask of valid positions), and vice versa.

Local features: the decoder output (``widths[0]`` channels at the input's
resolution), so the decoder is pretrained too and both views' maps share the
image's normalised coordinates exactly (the affines apply unchanged). The
local projector and predictor are 1x1-convolution MLPs, BYOL's heads applied
at every position. PGL was 3D with no released code; this is the 2D slice
version of the same idea.

Shared with FedAvg: the online encoder, decoder and the four heads. The target
network (EMA of the online encoder, decoder, projector and local projector)
stays on the client, as in FedU/FedEMA and this project's BYOL.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from lightly.loss import NegativeCosineSimilarity
from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead
from torch import nn

from bench.augment import apply_affine, random_view, relative_theta
from bench.methods._momentum import MomentumMethod
from bench.methods._views_and_losses import float32_loss
from bench.registry import register_method

# A position is valid when bilinear sampling of B's map takes all of its weight from inside B.
VALID_THRESHOLD = 0.999


def align_to_view(
    feature_b: torch.Tensor, theta_a: torch.Tensor, theta_b: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """View B's map resampled into view A's frame, and the mask of the views' overlap.

    ``theta_*`` map a view's normalised output coordinates to the original slice
    (``F.affine_grid`` convention), so ``relative_theta(a, b)`` maps A's
    coordinates to B's. A position of A is valid when both views show the slice
    there: A's pixel is not the zero padding of a rotated crop, and the aligned
    value of B is interpolated only from B's pixels inside B's frame that show
    the slice (resampling a map of ones both ways tells which). Returns
    (B, C, H, W) features and a (B, 1, H, W) bool mask.
    """
    theta_a, theta_b = theta_a.float(), theta_b.float()
    rel = relative_theta(theta_a, theta_b)
    aligned = apply_affine(feature_b, rel)
    ones = torch.ones_like(feature_b[:, :1])
    slice_in_a = apply_affine(ones, theta_a) >= VALID_THRESHOLD
    slice_in_b_aligned = apply_affine(apply_affine(ones, theta_b), rel) >= VALID_THRESHOLD
    return aligned, slice_in_a & slice_in_b_aligned


def masked_byol_loss(
    prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Mean of BYOL's ``2 - 2 cos`` (Grill et al. Eq. 2) over the valid positions of (B, C, H, W)
    maps.

    Returns 0 when no position is valid (views without overlap).
    """
    cos = F.cosine_similarity(prediction.float(), target.float(), dim=1)  # (B, H, W)
    weight = mask[:, 0].to(cos.dtype)
    return ((2 - 2 * cos) * weight).sum() / weight.sum().clamp_min(1)


class LocalHead(nn.Sequential):
    """BYOL's projector/predictor MLP at every position: 1x1 conv, BatchNorm, ReLU, 1x1 conv.

    The 1x1 convolutions run as batched matrix products of the weight with the
    (N, C, H*W) view of the map: the same function and parameters (state-dict
    keys of the ``nn.Sequential``), but on CPU oneDNN's 1x1 convolution of a
    full-resolution NCHW map reorders it to a blocked layout and back, which
    took about a fifth more time than the GEMM (docs/PERFORMANCE.md).
    """

    def __init__(self, in_channels: int, hidden: int, out_channels: int):
        super().__init__(
            nn.Conv2d(in_channels, hidden, 1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, out_channels, 1),
        )

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        expand, norm, activation, project = self
        n, _, h, w = maps.shape
        hidden = torch.matmul(expand.weight.flatten(1), maps.flatten(2))
        hidden = activation(norm(hidden.view(n, -1, h, w)))
        out = torch.baddbmm(
            project.bias.view(1, -1, 1),
            project.weight.flatten(1).expand(n, -1, -1),
            hidden.flatten(2),
        )
        return out.view(n, -1, h, w)


@register_method
class PGL(MomentumMethod):
    name = "pgl"
    summary = (
        "PGL: BYOL plus a local BYOL loss on decoder feature maps of two views aligned with "
        "their known spatial transforms"
    )
    defaults: ClassVar[dict] = {
        "momentum": 0.99,
        "momentum_end": 1.0,
        "hidden_dim": 512,
        "projection_dim": 128,
        "local_hidden_dim": 64,
        "local_dim": 64,
        "local_weight": 1.0,
    }
    sources: ClassVar[dict[str, str]] = {
        "momentum": "choice: 0.99 start of the cosine EMA schedule, as this project's BYOL (BYOL: "
        "0.996 for long ImageNet runs); PGL follows BYOL",
        "momentum_end": "1.0, BYOL's cosine schedule, stepped per round",
        "hidden_dim": "choice: 512, BYOL's MLP (4096 for ResNet-50) scaled to the U-Net encoder",
        "projection_dim": "choice: 128, BYOL uses 256; 128 as the other heads here",
        "local_hidden_dim": "choice: 64 channels in the 1x1-conv local projector/predictor "
        "(4x the decoder's 16 output channels)",
        "local_dim": "choice: 64-d local projections",
        "local_weight": "choice: 1.0, global and local terms added with equal weight (unstated "
        "for this 2D version; no official code)",
    }
    pretrained_parts = ("encoder", "decoder")
    local_state_prefixes = ("target_",)
    shared_doc = (
        "online encoder, decoder, projector, predictor, local projector and local predictor"
    )
    local_doc = (
        "target encoder, decoder, projector and local projector (EMA of the online ones), "
        "BatchNorm step counters, optimiser state"
    )

    def __init__(self, unet, hparams, **kwargs):
        super().__init__(unet, hparams, **kwargs)
        hp = self.hparams
        dim, local_dim = hp["projection_dim"], hp["local_dim"]
        self.projection = BYOLProjectionHead(unet.encoder.out_dim, hp["hidden_dim"], dim)
        self.prediction = BYOLPredictionHead(dim, hp["hidden_dim"], dim)
        self.local_projection = LocalHead(unet.decoder.widths[0], hp["local_hidden_dim"], local_dim)
        self.local_prediction = LocalHead(local_dim, hp["local_hidden_dim"], local_dim)
        # The target network: an EMA of the online encoder, decoder and projectors (BYOL).
        self.add_momentum_targets(
            target_encoder=unet.encoder,
            target_decoder=unet.decoder,
            target_projection=self.projection,
            target_local_projection=self.local_projection,
        )
        self.criterion = NegativeCosineSimilarity()

    # -- networks -------------------------------------------------------
    def online(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Global prediction q(g(y)) (N, D) and local prediction map (N, d, H, W)."""
        features = self.unet.encoder(images)
        embedding = self.unet.encoder.embedding(features)
        global_pred = self.prediction(self.projection(embedding))
        local_pred = self.local_prediction(self.local_projection(self.unet.decoder(features)))
        return global_pred, local_pred

    @torch.no_grad()
    def target(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.target_encoder(images)
        embedding = self.target_encoder.embedding(features)
        global_proj = self.target_projection(embedding)
        local_proj = self.target_local_projection(self.target_decoder(features))
        return global_proj, local_proj

    # -- training -------------------------------------------------------
    def local_loss(self, pred_a, pred_b, target_a, target_b, theta_a, theta_b) -> torch.Tensor:
        """Xie et al. 2020, local consistency: each view's local prediction regresses the other
        view's target map aligned into its frame, over the overlap."""
        target_b_in_a, mask_a = align_to_view(target_b.float(), theta_a, theta_b)
        target_a_in_b, mask_b = align_to_view(target_a.float(), theta_b, theta_a)
        return 0.5 * (
            masked_byol_loss(pred_a, target_b_in_a, mask_a)
            + masked_byol_loss(pred_b, target_a_in_b, mask_b)
        )

    def training_step(self, batch, generator):
        images = batch["image"]
        view_a, theta_a = random_view(images, generator)
        view_b, theta_b = random_view(images, generator)
        views = torch.cat([view_a, view_b])
        global_pred, local_pred = self.online(views)
        global_target, local_target = self.target(views)
        p_a, p_b = global_pred.chunk(2)
        z_a, z_b = global_target.chunk(2)
        lp_a, lp_b = local_pred.chunk(2)
        lz_a, lz_b = local_target.chunk(2)
        # BYOL, symmetrised, as 2 - 2 cos (Grill et al. Eq. 2).
        global_term = 2 + (
            float32_loss(self.criterion, p_a, z_b) + float32_loss(self.criterion, p_b, z_a)
        )
        with torch.autocast(device_type=images.device.type, enabled=False):
            local_term = self.local_loss(lp_a, lp_b, lz_a, lz_b, theta_a, theta_b)
        loss = global_term + self.hparams["local_weight"] * local_term
        return {
            "loss": loss,
            "global_term": global_term.detach(),
            "local_term": local_term.detach(),
        }
