"""DAF's depth branch and the depth-aware segmentor (docs/methods.md B.4, B.14.1).

Asked for by the model config's ``depth`` option (``depth: {}`` for the defaults, ``null`` = off;
see :mod:`udaseg.models.factory`). The branch reads the backbone's four stages B1…B4 and

1. **channel attention** on each stage, squeeze-and-excitation style: a_i = σ(W2·ReLU(W1·GAP(B_i)))
   with bias-free 1×1 convs C_i → C_i/16 → C_i; B_i ⊙ a_i;
2. **up-projection** of each attended stage: 5×5 conv (C_i → 16, no bias), BN, ReLU, bilinear
   resize to B2's size (stride 8; B1 is downsampled);
3. **multi-scale fusion**: concatenation (4·16 = 64 channels), 5×5 conv 64 → 64 (no bias), BN,
   ReLU → X_mff;
4. **regressor**: 5×5 conv 64 → 64 (no bias), BN, ReLU, 5×5 conv 64 → 1 (bias): the predicted
   **inverse depth**, bilinearly resized to the fixed 228×304 of the depth network the reference
   adapted (``internal_size``; ``null`` keeps the regressor's stride-8 map — the method upsamples
   to the input size either way, B.13.5);
5. **depth-aware feature modulation** (DADA-style): G = ReLU(Conv1×1_{64→C4}(X_mff)), B4′ = B4 ⊙ G,
   and the segmentation head classifies B4′ — logits = ASPP(B4′). (Where B4 is coarser than B2, as
   on a stride-32 tiny CNN, G is resized to B4's size.)

:class:`DepthAwareSegmentor` is an :class:`~udaseg.models.segmentor.EncoderDecoder` whose
``extract_features`` returns (B1, B2, B3, B4′): ``forward(x)`` still returns the logits only, so
ADVENT-style methods, evaluation and inference work unchanged, and every consumer of the features
(BAFFT's prototypes, IDA) sees the modulated map as the reference's classifier does.
``forward(x, with_depth=True)`` — callable through a DDP wrapper — and ``forward_with_depth(x)``
return ``(logits, inverse_depth)``, the depth ``[B, 1, h, w]`` at ``internal_size`` (or stride 8).

Parameters live under ``depth_head.*``: the name carries ``head``, so the optimizer's parameter
groups give all of them — attention, up-projections, fusion conv and BN, regressor and the 1×1
gate — the ×10 head learning rate, as the reference does (B.4 "Parameter groups"). New convs start
N(0, 0.01) (biases at PyTorch's default), BN γ = 1, β = 0, all trainable.

Option keys (``model.depth``): ``up_channels`` (16), ``fusion_channels`` (64), ``kernel_size`` (5),
``se_reduction`` (16), ``internal_size`` ([228, 304] or null), ``fuse_index`` (1: the stage whose
size the up-projections are resized to).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from udaseg.models.segmentor import EncoderDecoder

DEPTH_OPTIONS = ("up_channels", "fusion_channels", "kernel_size", "se_reduction", "internal_size", "fuse_index")


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation with bias-free 1×1 convs: x ⊙ σ(W2·ReLU(W1·GAP(x)))."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = max(1, channels // reduction)  # the tiny CPU backbones have fewer than 16 channels
        self.squeeze = nn.Conv2d(channels, hidden, 1, bias=False)
        self.excite = nn.Conv2d(hidden, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.sigmoid(self.excite(F.relu(self.squeeze(x.mean(dim=(2, 3), keepdim=True)))))
        return x * a


def _conv_bn_relu(cin: int, cout: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class DepthHead(nn.Module):
    """B.4 steps 1–4 (``fuse``, ``regress``) and the gate of step 5 (``modulate``)."""

    def __init__(self, in_channels: Sequence[int], up_channels: int = 16, fusion_channels: int = 64,
                 kernel_size: int = 5, se_reduction: int = 16, internal_size: Sequence[int] | None = (228, 304),
                 fuse_index: int = 1):
        super().__init__()
        in_channels = tuple(in_channels)
        if not 0 <= fuse_index < len(in_channels):
            raise ValueError(f"depth.fuse_index {fuse_index} is not a stage index (0…{len(in_channels) - 1})")
        if internal_size is not None and len(internal_size) != 2:
            raise ValueError(f"depth.internal_size must be [h, w] or null, got {internal_size!r}")
        self.fuse_index = fuse_index
        self.internal_size = tuple(int(s) for s in internal_size) if internal_size is not None else None
        self.attention = nn.ModuleList(ChannelAttention(c, se_reduction) for c in in_channels)
        self.up = nn.ModuleList(_conv_bn_relu(c, up_channels, kernel_size) for c in in_channels)
        self.fusion = _conv_bn_relu(up_channels * len(in_channels), fusion_channels, kernel_size)
        self.regressor = nn.Sequential(_conv_bn_relu(fusion_channels, fusion_channels, kernel_size),
                                       nn.Conv2d(fusion_channels, 1, kernel_size, padding=kernel_size // 2))
        self.gate = nn.Conv2d(fusion_channels, in_channels[-1], 1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.01)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def fuse(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """X_mff: attended, up-projected stages at stage ``fuse_index``'s size, fused."""
        size = features[self.fuse_index].shape[-2:]
        maps = []
        for feat, attention, up in zip(features, self.attention, self.up):
            x = up(attention(feat))
            if x.shape[-2:] != size:
                x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            maps.append(x)
        return self.fusion(torch.cat(maps, dim=1))

    def regress(self, fused: torch.Tensor) -> torch.Tensor:
        """Inverse depth [B, 1, h, w] (at ``internal_size`` when set)."""
        depth = self.regressor(fused)
        if self.internal_size is not None:
            depth = F.interpolate(depth, size=self.internal_size, mode="bilinear", align_corners=False)
        return depth

    def modulate(self, last: torch.Tensor, fused: torch.Tensor) -> torch.Tensor:
        """B4′ = B4 ⊙ ReLU(Conv1×1(X_mff))."""
        gate = F.relu(self.gate(fused))
        if gate.shape[-2:] != last.shape[-2:]:
            gate = F.interpolate(gate, size=last.shape[-2:], mode="bilinear", align_corners=False)
        return last * gate


class DepthAwareSegmentor(EncoderDecoder):
    """DAF's network G: backbone → depth branch → depth-modulated last stage → decode head."""

    def __init__(self, backbone, decode_head, normalization, depth_head: DepthHead, align_corners: bool = False):
        super().__init__(backbone, decode_head, normalization, align_corners=align_corners)
        self.depth_head = depth_head

    def _features_and_fusion(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        features = list(self.backbone(x))
        fused = self.depth_head.fuse(features)
        features[-1] = self.depth_head.modulate(features[-1], fused)
        return features, fused

    def extract_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self._features_and_fusion(x)[0]

    def forward(self, x: torch.Tensor, return_features: bool = False, aux: bool = False, with_depth: bool = False):
        """Logits; then, when asked, the inverse depth (``with_depth``), the (modulated) backbone
        stages (``return_features``) and the auxiliary head's logits (``aux``), in that order."""
        features, fused = self._features_and_fusion(x)
        out: list[torch.Tensor | list[torch.Tensor]] = [self.decode(features)]
        if with_depth:
            out.append(self.depth_head.regress(fused))
        if return_features:
            out.append(features)
        if aux:
            out.append(self.require_aux_head()(features))
        return tuple(out) if len(out) > 1 else out[0]

    def forward_with_depth(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits, inverse_depth)`` of a normalised batch."""
        return self.forward(x, with_depth=True)


def build_depth_model(backbone, decode_head, normalization, options: dict | None,
                      align_corners: bool = False) -> DepthAwareSegmentor:
    """The depth-aware segmentor over ``backbone`` and ``decode_head``, ``options`` = ``model.depth``."""
    options = dict(options or {})
    unknown = sorted(set(options) - set(DEPTH_OPTIONS))
    if unknown:
        from udaseg.errors import ConfigError

        raise ConfigError(f"model.depth: unknown key(s) {', '.join(map(repr, unknown))}; "
                          f"allowed: {', '.join(DEPTH_OPTIONS)}")
    head = DepthHead(backbone.channels, **options)
    return DepthAwareSegmentor(backbone, decode_head, normalization, head, align_corners=align_corners)


__all__ = ["DEPTH_OPTIONS", "ChannelAttention", "DepthAwareSegmentor", "DepthHead", "build_depth_model"]
