"""Any timm model as a backbone, through ``features_only`` (Wightman, pytorch-image-models).

Named ``timm:<model>`` (e.g. ``timm:resnet50``, ``timm:convnext_tiny``) — any timm architecture,
without registering each one. By default the stages at strides 4, 8, 16 and 32 are returned
(``out_indices`` picks others). Pretrained weights go through timm itself
(``load_pretrained("imagenet")`` for timm's default tag, or a local file, which timm filters and
remaps the way it does for its own checkpoints), then are copied into this module.
"""

from __future__ import annotations

from typing import Any

import torch

from udaseg.models.backbones.base import Backbone, timm_feature_info

TIMM_PREFIX = "timm:"


class TimmBackbone(Backbone):
    default_normalization = "imagenet"

    def __init__(self, model_name: str, out_indices: tuple[int, ...] | list[int] | None = None, **timm_kwargs):
        super().__init__()
        import timm

        self.model_name = model_name
        self._timm_kwargs = dict(timm_kwargs)
        if out_indices is None:
            probe = timm.create_model(model_name, pretrained=False, features_only=True, **timm_kwargs)
            reductions = timm_feature_info(probe)[1]
            out_indices = tuple(i for i, r in enumerate(reductions) if r >= 4)[-4:]
            del probe
        self.out_indices = tuple(out_indices)
        self.body = timm.create_model(model_name, pretrained=False, features_only=True,
                                      out_indices=self.out_indices, **timm_kwargs)
        self.channels, self.strides = timm_feature_info(self.body)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.body(x))

    def load_pretrained(self, source: str) -> dict:
        import timm

        kwargs: dict[str, Any] = ({} if source in ("imagenet", "timm")
                                  else {"pretrained_cfg_overlay": {"file": str(source)}})
        if source.startswith("hf-hub:"):
            kwargs = {"pretrained_cfg_overlay": {"hf_hub_id": source[len("hf-hub:"):]}}
        donor = timm.create_model(self.model_name, pretrained=True, features_only=True,
                                  out_indices=self.out_indices, **kwargs, **self._timm_kwargs)
        self.body.load_state_dict(donor.state_dict())
        return {"prefix": "", "loaded": len(donor.state_dict()), "missing": [], "unexpected": []}


def timm_backbone(name: str, **options) -> TimmBackbone:
    """Build ``timm:<model>``; options: ``out_indices`` and any timm ``create_model`` keyword."""
    return TimmBackbone(name[len(TIMM_PREFIX):], **options)
