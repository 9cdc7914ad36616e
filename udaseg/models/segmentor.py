"""The segmentor: input normalisation, backbone and decode head in one module.

``EncoderDecoder`` keeps three steps apart so that methods can reach each one:

* ``normalize(img)`` — raw images → network input. Accepts ``uint8`` in [0, 255] or floating
  point in [0, 1] (``value_range`` overrides, e.g. 255.0 for float images in [0, 255]);
  ``denormalize(x)`` is the exact inverse and returns **RGB floats in [0, 1]** (what photometric
  augmentation wants). The transform is per model family:

  ==============  ============================================  =====================================
  name            transform of 0–255 RGB                         families (specs)
  ==============  ============================================  =====================================
  ``imagenet``    RGB, (x − (123.675, 116.28, 103.53)) / (58.395,  MiT / SegFormer / timm / tiny CNN
                  57.12, 57.375)                                  (DAFormer §1.5)
  ``caffe_bgr``   channels → BGR, x − (104.008, 116.669,          DeepLab-v2 ResNet (ADVENT, BAFFT,
                  122.679) (BGR order), no std                    DAF: §A.3, §B.3.1)
  ``inception``   RGB, (x − 127.5) / 127.5 (input in [−1, 1])     TF-trained nets: EfficientNet-Lite0
  ==============  ============================================  =====================================

  ``caffe_bgr128`` is ``caffe_bgr`` divided by 128 (input ≈ [−1, 1]), DiGA's (diga.md §3.3).

* ``extract_features(x)`` — backbone stages (FD, depth heads, prototypes);
  ``decode(features)`` — logits at the head's stride;
* ``forward(x) = decode(extract_features(x))`` on a **normalised** batch.

``align_corners`` records how this family's reference code upsamples logits (False for the
mmseg line, True for the ADVENT/DeepLab-v2 line); inference and losses read it from the model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from udaseg.models.backbones.base import Backbone
from udaseg.models.heads.base import DecodeHead


@dataclass(frozen=True)
class Normalization:
    """Per-channel ``(x·255 − mean) / std`` in the model's channel order (``bgr``: flipped)."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    bgr: bool = False


NORMALIZATIONS: dict[str, Normalization] = {
    "imagenet": Normalization((123.675, 116.28, 103.53), (58.395, 57.12, 57.375), bgr=False),
    # Caffe mean in BGR order; the DeepLab ResNet checkpoints were trained on BGR 0–255 input.
    "caffe_bgr": Normalization((104.008, 116.669, 122.679), (1.0, 1.0, 1.0), bgr=True),
    # DiGA / TridentAdapt (docs/methods.md G3.3): the Caffe BGR mean, then ÷128 (input ≈ [−1, 1]).
    "caffe_bgr128": Normalization((104.008, 116.669, 122.679), (128.0, 128.0, 128.0), bgr=True),
    # TensorFlow's Inception preprocessing (timm: mean = std = 0.5), e.g. the TF-Lite EfficientNet-Lite.
    "inception": Normalization((127.5, 127.5, 127.5), (127.5, 127.5, 127.5), bgr=False),
}


def get_normalization(spec: str | Normalization | dict) -> Normalization:
    if isinstance(spec, Normalization):
        return spec
    if isinstance(spec, str):
        try:
            return NORMALIZATIONS[spec]
        except KeyError:
            raise KeyError(f"unknown normalization {spec!r}; expected one of {sorted(NORMALIZATIONS)} "
                           "or a mapping with mean, std (0-255 scale) and bgr") from None
    spec = dict(spec)
    return Normalization(tuple(spec["mean"]), tuple(spec.get("std", (1.0, 1.0, 1.0))), bool(spec.get("bgr", False)))


class InputNormalizer(nn.Module):
    mean: torch.Tensor  # a buffer
    std: torch.Tensor  # a buffer

    def __init__(self, norm: Normalization):
        super().__init__()
        self.spec = norm
        # Not persistent: the transform is configuration, and state dicts stay those of the reference.
        self.register_buffer("mean", torch.tensor(norm.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(norm.std).view(1, 3, 1, 1), persistent=False)

    def normalize(self, img: torch.Tensor, value_range: float | None = None) -> torch.Tensor:
        if value_range is None:
            value_range = 255.0 if not img.is_floating_point() else 1.0
        x = img.to(self.mean.dtype) * (255.0 / value_range)
        if self.spec.bgr:
            x = x.flip(1)
        return (x - self.mean) / self.std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        img = x * self.std + self.mean
        if self.spec.bgr:
            img = img.flip(1)
        return img / 255.0


class EncoderDecoder(nn.Module):
    pretrained_weights: str | None = None  # the file the backbone's weights came from (set by build_model)

    def __init__(self, backbone: Backbone, decode_head: DecodeHead, normalization: Normalization,
                 align_corners: bool = False):
        super().__init__()
        self.backbone = backbone
        self.decode_head = decode_head
        self.preprocess = InputNormalizer(normalization)
        self.align_corners = align_corners
        # A training-only second head on the same features (TigDA's CMF head), attached by the
        # method that trains it; never part of the exported network.
        self.aux_head: nn.Module | None = None

    def require_aux_head(self) -> nn.Module:
        if self.aux_head is None:
            raise RuntimeError(f"{type(self).__name__} has no auxiliary head: the method that trains one attaches it")
        return self.aux_head

    @property
    def num_classes(self) -> int:
        return self.decode_head.num_classes

    @property
    def output_stride(self) -> int:
        return self.decode_head.output_stride

    def normalize(self, img: torch.Tensor, value_range: float | None = None) -> torch.Tensor:
        return self.preprocess.normalize(img, value_range)

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        return self.preprocess.denormalize(x)

    def extract_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.backbone(x)

    def decode(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.decode_head(features)

    def forward(self, x: torch.Tensor, return_features: bool = False, aux: bool = False):
        """Logits at the head's stride; with ``return_features`` also the backbone stages (for
        losses on features, e.g. DAFormer's feature distance, through a DDP wrapper); with
        ``aux`` also the auxiliary head's logits, last."""
        features = self.extract_features(x)
        out: list[torch.Tensor | list[torch.Tensor]] = [self.decode(features)]
        if return_features:
            out.append(features)
        if aux:
            out.append(self.require_aux_head()(features))
        return tuple(out) if len(out) > 1 else out[0]

    def auxiliary_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The auxiliary head alone on ``x`` (e.g. TigDA's pseudo-labels from the teacher's CMF head)."""
        return self.require_aux_head()(self.extract_features(x))
