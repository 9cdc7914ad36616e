"""Mix Transformer (MiT-B0…B5), the SegFormer encoder used by DAFormer, HRDA and MIC.

Xie et al., "SegFormer: Simple and Efficient Design for Semantic Segmentation with Transformers",
NeurIPS 2021. The implementation is segmentation-models-pytorch's port of NVIDIA's code (NVIDIA
Source Code License, non-commercial; see the smp source file). We subclass smp's
``MixVisionTransformer`` directly instead of its ``MixVisionTransformerEncoder`` so that

* the output is exactly the four stages at strides 4/8/16/32 — the smp encoder prepends the
  input and a dummy 0-channel stride-2 map for its U-Net-style decoders;
* parameter names are those of the original ``mit_b*.pth`` files and of mmseg/DAFormer
  checkpoints (``block1.0.attn.q.weight``, ``norm1.weight`` …), so those load without renaming,
  and the DAFormer parameter-group rule ("norm" → no weight decay) sees the same names.

Architecture (docs/methods.md D4, MiT-B5): depths (3, 6, 40, 3), dims (64, 128, 320, 512), heads
(1, 2, 5, 8), SR ratios (8, 4, 2, 1), MLP ratio 4, qkv bias, block LayerNorm eps 1e-6 (the patch
embedding and spatial-reduction LayerNorms keep eps 1e-5, as in the original), overlapping patch
embeddings 7×7/s4 then 3×3/s2, stochastic depth 0.1 rising linearly over all blocks. smp uses
drop-path 0.1 for every size, as do the SegFormer/DAFormer configs; ``drop_path_rate`` overrides it.
"""

from __future__ import annotations

import copy

import torch
from segmentation_models_pytorch.encoders.mix_transformer import MixVisionTransformer, mix_transformer_encoders

from udaseg.models.backbones.base import Backbone
from udaseg.models.registry import BACKBONES
from udaseg.models.weights import load_pretrained

MIT_VARIANTS = ("mit_b0", "mit_b1", "mit_b2", "mit_b3", "mit_b4", "mit_b5")


class MiT(MixVisionTransformer, Backbone):
    """MiT encoder returning the four stage outputs (strides 4, 8, 16, 32)."""

    strides = (4, 8, 16, 32)
    default_normalization = "imagenet"
    default_align_corners = False

    def __init__(self, variant: str, drop_path_rate: float | None = None, drop_rate: float | None = None,
                 attn_drop_rate: float = 0.0):
        params = copy.deepcopy(mix_transformer_encoders[variant]["params"])
        params.pop("out_channels")
        if drop_path_rate is not None:
            params["drop_path_rate"] = drop_path_rate
        if drop_rate is not None:
            params["drop_rate"] = drop_rate
        params["attn_drop_rate"] = attn_drop_rate
        super().__init__(**params)
        self.variant = variant
        self.channels = tuple(params["embed_dims"])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return super().forward_features(x)

    def load_pretrained(self, source: str) -> dict:
        """``source``: a weight file/URL/hub id, or "imagenet" for smp's re-hosted ImageNet-1k
        weights of the original SegFormer release (downloaded from the HF hub when not cached)."""
        if source == "imagenet":
            from huggingface_hub import hf_hub_download

            settings = mix_transformer_encoders[self.variant]["pretrained_settings"]["imagenet"]
            source = hf_hub_download(settings["repo_id"], filename="model.safetensors",
                                     revision=settings["revision"])
        return load_pretrained(self, source, what=f"backbone {self.variant}")


def _register(variant: str) -> None:
    @BACKBONES.register(variant)
    def factory(**options) -> MiT:
        return MiT(variant, **options)

    factory.__doc__ = f"{variant.upper().replace('_', '-')} (options: drop_path_rate, drop_rate, attn_drop_rate)."


for _variant in MIT_VARIANTS:
    _register(_variant)
