"""HRDA: multi-resolution training with learned scale attention (Hoyer et al., "HRDA:
Context-Aware High-Resolution Domain-Adaptive Semantic Segmentation", ECCV 2022;
docs/methods.md D6).

:class:`HRDASegmentor` wraps an :class:`~udaseg.models.segmentor.EncoderDecoder`; the encoder and
the decode head are **shared** by both scales. On a training crop x (full resolution, e.g. 1024²):

* **context**: x downscaled by ``context_scale`` (0.5) → LR logits; a separate **scale-attention
  head** (SegFormer-style, 1×1 fusion, class-wise output) on the LR features, a = σ(h_att(f_LR));
* **detail**: a random ``hr_crop_size`` window of x (offsets multiples of ``crop_divisible`` = 8,
  drawn as randint(0, (margin + 1) // 8)·8, a fresh box per forward) → HR logits;
* **fusion**: a is zeroed outside the detail box (in LR logit coordinates), lr′ = (1 − a)·lr; a and
  lr′ are upsampled to the fused grid (stride 4 of x), the HR logits pasted into a zero canvas at
  the box; fused = a·hr + lr′ (outside the box: the upsampled LR prediction).

``forward_train`` returns ``(fused, hr, box, lr_features)``; the methods apply 0.9·CE(fused, y) +
0.1·CE(hr, crop(y)) (:func:`udaseg.methods.losses.hrda_loss`). ``forward`` (pseudo-labels and
test) has no box: the HR logits cover the whole input by overlapping ``hr_crop_size`` windows at
``hr_slide_stride`` (256 for 512 windows: 3×3 on a 1024 crop), batched, averaged on the stride-4
grid, and fused with the attention everywhere (the reference's ``HRDAHead.decode_hr``: HR logits summed on
the stride-4 grid, box ÷ 4 rounded down, divided by the window count). At test time the model itself slides
``test_window`` (1024²) windows with ``test_stride`` (512) over larger inputs (mmseg's grid, the
last window flush with the border), each window fused as above — HRDA's test protocol, so the
benchmark's evaluation stays "whole" image and the same for every method.

How overlapping test windows are averaged (``test_merge``):

* ``"input"`` (the default, the reference's): each window's fused stride-4 logits are first
  upsampled bilinearly (the model's ``align_corners``) to the window's own input size — HRDA's
  ``encode_decode`` ends so — then summed into a canvas of the input's size and divided by the
  per-pixel window count (mmseg ``EncoderDecoder.slide_inference``). ``forward`` then returns
  logits at the **input resolution**; callers upsample to the label size as for any output.
* ``"logits"`` (udaseg's earlier behaviour, kept for comparing old runs and to save memory): the
  stride-4 logits are averaged on the stride-4 grid and returned at stride 4. Upsampled afterwards,
  it differs from the reference in the few pixels next to each window edge, where the bilinear
  upsampling mixes averaged and single-window logits (up to 0.076 on a trained model).

Inputs no larger than ``test_window`` (training crops, pseudo-labels) are one window and return
stride-4 logits in both modes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from udaseg.models.heads.base import DecodeHead
from udaseg.models.inference import slide_windows
from udaseg.models.segmentor import EncoderDecoder


def random_box(size: tuple[int, int], crop: tuple[int, int], divisible: int = 8) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1) of a ``crop`` window inside ``size`` whose offsets are multiples of
    ``divisible``: offset = randint(0, (margin + 1) // divisible) · divisible, as the reference
    (a 512 window in 1024: offsets 0 … 504). Drawn from torch's global RNG, which checkpoints keep."""
    (h, w), (ch, cw) = size, crop
    if ch > h or cw > w:
        raise ValueError(f"HRDA detail crop {ch}x{cw} is larger than the input {h}x{w}")
    y0 = int(torch.randint(0, max(1, (h - ch + 1) // divisible), ())) * divisible
    x0 = int(torch.randint(0, max(1, (w - cw + 1) // divisible), ())) * divisible
    return y0, y0 + ch, x0, x0 + cw


# How overlapping test windows are averaged: at the input resolution (the reference) or on the
# stride-4 logit grid (udaseg's earlier behaviour). See the module docstring.
TEST_MERGES = ("input", "logits")


def _pair(name: str, value: Sequence[int]) -> tuple[int, int]:
    if len(value) != 2:
        raise ValueError(f"HRDA {name} must be (height, width), got {list(value)}")
    return int(value[0]), int(value[1])


def _resize(x: torch.Tensor, size, align_corners: bool) -> torch.Tensor:
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=align_corners)


class HRDASegmentor(EncoderDecoder):
    def __init__(self, base: EncoderDecoder, attention_head: DecodeHead | None,
                 hr_crop_size: Sequence[int] = (512, 512),
                 context_scale: float = 0.5, crop_divisible: int = 8, hr_slide_stride: Sequence[int] = (256, 256),
                 fixed_attention: float | None = None, test_window: Sequence[int] | None = (1024, 1024),
                 test_stride: Sequence[int] | None = (512, 512), test_merge: str = "input"):
        # The base's encoder, decode head and input normalisation, shared by both scales (parameter
        # names stay "backbone.*" / "decode_head.*").
        super().__init__(base.backbone, base.decode_head, base.preprocess.spec, align_corners=base.align_corners)
        if attention_head is None and fixed_attention is None:
            raise ValueError("HRDA needs a scale attention head or a fixed attention value")
        self.attention_head = attention_head  # "head" in the name: lr ×10 like the reference's
        self.hr_crop_size = _pair("hr_crop_size", hr_crop_size)
        self.context_scale = float(context_scale)
        self.crop_divisible = int(crop_divisible)
        self.hr_slide_stride = _pair("hr_slide_stride", hr_slide_stride)
        self.fixed_attention = fixed_attention  # HRDA ablation "fixedatt": a = const
        self.test_window = _pair("test_window", test_window) if test_window else None
        self.test_stride = _pair("test_stride", test_stride or test_window) if test_window else None
        if test_merge not in TEST_MERGES:
            raise ValueError(f"HRDA test_merge must be one of {TEST_MERGES}, got {test_merge!r}")
        self.test_merge = test_merge

    # -- the parts ------------------------------------------------------------------------
    def context_view(self, x: torch.Tensor) -> torch.Tensor:
        """The input at ``context_scale`` (HRDA's low-resolution context)."""
        lr_size = [max(1, int(round(s * self.context_scale))) for s in x.shape[-2:]]
        return _resize(x, lr_size, self.align_corners)

    def _context(self, x: torch.Tensor):
        lr_features = self.backbone(self.context_view(x))
        lr_logits = self.decode_head(lr_features)
        if self.fixed_attention is not None:
            attention = torch.full_like(lr_logits, float(self.fixed_attention))
        else:
            assert self.attention_head is not None  # checked in __init__
            attention = torch.sigmoid(self.attention_head(lr_features))
        return lr_logits, attention, lr_features

    def _fuse(self, lr_logits, attention, hr_canvas, fused_size, box_mask=None):
        if box_mask is not None:
            attention = attention * box_mask
        lr_logits = (1 - attention) * lr_logits
        attention = _resize(attention, fused_size, self.align_corners)
        lr_logits = _resize(lr_logits, fused_size, self.align_corners)
        return attention * hr_canvas + lr_logits

    def forward_train(self, x: torch.Tensor, box: tuple[int, int, int, int] | None = None, aux: bool = False):
        """(fused logits at stride 4 of x, HR logits of the detail crop, the box, LR features);
        with ``aux`` also the auxiliary head's (context, detail) logits, last."""
        box = box or random_box((x.shape[-2], x.shape[-1]), self.hr_crop_size, self.crop_divisible)
        y0, y1, x0, x1 = box
        lr_logits, attention, lr_features = self._context(x)
        hr_features = self.backbone(x[:, :, y0:y1, x0:x1])
        hr_logits = self.decode_head(hr_features)
        stride = (y1 - y0) / hr_logits.shape[-2]  # of the HR logits (4): the fused grid
        fused_size = (round(x.shape[-2] / stride), round(x.shape[-1] / stride))
        lr_stride = x.shape[-2] / lr_logits.shape[-2]  # of the LR logits in input pixels (8)
        box_mask = torch.zeros_like(attention[:, :1])
        box_mask[:, :, round(y0 / lr_stride):round(y1 / lr_stride), round(x0 / lr_stride):round(x1 / lr_stride)] = 1
        canvas = hr_logits.new_zeros((*hr_logits.shape[:2], *fused_size))
        fy0, fx0 = round(y0 / stride), round(x0 / stride)
        canvas[:, :, fy0:fy0 + hr_logits.shape[-2], fx0:fx0 + hr_logits.shape[-1]] = hr_logits
        fused = self._fuse(lr_logits, attention, canvas, fused_size, box_mask)
        if aux:
            aux_head = self.require_aux_head()
            return fused, hr_logits, box, lr_features, (aux_head(lr_features), aux_head(hr_features))
        return fused, hr_logits, box, lr_features

    def auxiliary_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The auxiliary head on the context view (the whole input at ``context_scale``)."""
        return self.require_aux_head()(self.backbone(self.context_view(x)))

    @staticmethod
    def _average(parts: torch.Tensor, windows, batch: int, scale: float) -> torch.Tensor:
        """Per-window outputs ``parts`` (window-major: [n·B, C, h, w]) summed into a canvas at
        ``1 / scale`` of the windows' input coordinates (each box divided by ``scale`` and rounded
        down, as the reference maps boxes) and divided by the per-pixel window count."""
        boxes = [tuple(int(v / scale) for v in box) for box in windows]
        size = (max(b[1] for b in boxes), max(b[3] for b in boxes))
        total = parts.new_zeros((batch, parts.shape[1], *size), dtype=torch.float32)
        count = parts.new_zeros((1, 1, *size), dtype=torch.float32)
        for i, (y0, _, x0, _) in enumerate(boxes):
            part = parts[i * batch:(i + 1) * batch]
            total[:, :, y0:y0 + part.shape[-2], x0:x0 + part.shape[-1]] += part
            count[:, :, y0:y0 + part.shape[-2], x0:x0 + part.shape[-1]] += 1
        if bool((count == 0).any()):
            raise RuntimeError("HRDA: the sliding windows leave part of the input uncovered")
        return (total / count).to(parts.dtype)

    def _hr_slide(self, x: torch.Tensor) -> torch.Tensor:
        """HR logits over the whole of ``x``: ``hr_crop_size`` windows at ``hr_slide_stride``,
        batched, averaged on the stride-4 grid (the reference's ``decode_hr``)."""
        windows = slide_windows(x.shape[-2], x.shape[-1], self.hr_crop_size, self.hr_slide_stride)
        logits = self.decode_head(self.backbone(torch.cat([x[:, :, y0:y1, x0:x1] for (y0, y1, x0, x1) in windows])))
        scale = (windows[0][1] - windows[0][0]) / logits.shape[-2]  # the head's output stride (4)
        return self._average(logits, windows, x.shape[0], scale)

    def _forward_crop(self, x: torch.Tensor) -> torch.Tensor:
        """One training-crop-sized input without a box: HR windows everywhere, fused (stride 4)."""
        lr_logits, attention, _ = self._context(x)
        hr = self._hr_slide(x)
        return self._fuse(lr_logits, attention, hr, tuple(hr.shape[-2:]))

    def _test_slide(self, x: torch.Tensor) -> torch.Tensor:
        """HRDA's test-time slide over an input larger than ``test_window``: the windows fused by
        :meth:`_forward_crop` in one batch, then averaged as ``test_merge`` says."""
        assert self.test_window is not None and self.test_stride is not None  # set together in __init__
        windows = slide_windows(x.shape[-2], x.shape[-1], self.test_window, self.test_stride)
        logits = self._forward_crop(torch.cat([x[:, :, y0:y1, x0:x1] for (y0, y1, x0, x1) in windows]))
        window_size = (windows[0][1] - windows[0][0], windows[0][3] - windows[0][2])
        if self.test_merge == "input":
            # The reference: every window's logits at its own input size, averaged there.
            return self._average(_resize(logits, window_size, self.align_corners), windows, x.shape[0], 1.0)
        return self._average(logits, windows, x.shape[0], window_size[0] / logits.shape[-2])

    def forward(self, x: torch.Tensor, return_features: bool = False, aux: bool = False, train_crop: bool = False):
        """``train_crop=True``: :meth:`forward_train` (so that it runs through a DDP wrapper).
        Otherwise (pseudo-labels, test) no box: inputs larger than ``test_window`` are covered by
        overlapping ``test_window`` windows at ``test_stride`` (HRDA's test-time slide), each
        window fused from its context and HR windows; the result is then at the input resolution
        (``test_merge="input"``, the default) or at stride 4 (``"logits"``). Smaller inputs:
        stride-4 fused logits."""
        if train_crop:
            return self.forward_train(x, aux=aux)
        if aux:  # which view would the auxiliary head see? Only a training crop says (context and detail)
            raise ValueError("HRDA gives the auxiliary head's logits with train_crop=True only; "
                             "use auxiliary_logits() for the context view")
        h, w = x.shape[-2:]
        if self.test_window is not None and (h > self.test_window[0] or w > self.test_window[1]):
            fused = self._test_slide(x)
        else:
            fused = self._forward_crop(x)
        if return_features:
            return fused, self._context(x)[2]
        return fused

    def extract_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self._context(x)[2]


def crop_box(t: torch.Tensor, box: tuple[int, int, int, int]) -> torch.Tensor:
    y0, y1, x0, x1 = box
    return t[..., y0:y1, x0:x1]


def build_hrda(base: EncoderDecoder, num_classes: int, options: dict) -> HRDASegmentor:
    """``model.hrda`` options: hr_crop_size (512²), context_scale (0.5), crop_divisible (8),
    hr_slide_stride (256²), test_window (1024²), test_stride (512²), test_merge ("input"; see the
    module docstring), attention_embed_dim (256), attention_classwise (true; false: one attention
    map for every class, HRDA's ablation), fixed_attention (null)."""
    from udaseg.models.heads.daformer import DAFormerHead

    options = dict(options)
    embed = int(options.pop("attention_embed_dim", 256))
    # HRDA's attention is class-wise (one map per class); its ablation with one map shared by all
    # classes (attention_classwise: false) broadcasts a single channel over the classes.
    attention_maps = num_classes if options.pop("attention_classwise", True) else 1
    # A fixed attention (HRDA's "fixedatt" ablation) learns no attention head, as in the reference,
    # so that its checkpoints load strictly.
    head = None if options.get("fixed_attention") is not None else DAFormerHead(
        base.backbone.channels, base.backbone.strides, attention_maps, embed_dim=embed, fusion="conv1x1",
        dropout=0.1, align_corners=base.align_corners)
    allowed = {"hr_crop_size", "context_scale", "crop_divisible", "hr_slide_stride", "fixed_attention", "test_window",
               "test_stride", "test_merge"}
    unknown = sorted(set(options) - allowed)
    if unknown:
        from udaseg.errors import ConfigError

        raise ConfigError(f"model.hrda: unknown key(s) {', '.join(unknown)}; allowed: "
                          f"{', '.join(sorted(allowed | {'attention_embed_dim', 'attention_classwise'}))}")
    return HRDASegmentor(base, head, **options)
