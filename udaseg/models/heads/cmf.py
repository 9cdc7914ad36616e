"""TigDA's cross-modal fusion (CMF) head (docs/methods.md T1.3, ``CMFHeadContext``).

A second decoder on the backbone stages, trained beside the segmentation head and dropped at
inference. For stages f1…f4 (a 512×512 crop, MiT-B5):

1. **Pixel features** F: DAFormer's decoder recipe at ``embed_dim = channels = 512`` — token-wise
   Linear per stage, bilinear to stride 4, concatenation, separable ASPP (1, 6, 12, 18) → 512.
2. **Image vector** v ∈ R^512: a conv whose kernel covers the whole last stage (16×16 for a
   512² crop: a fully connected layer over f4, ~67 M parameters) — ``image_vector="conv"``, the
   reference's layer, built for one crop size (``image_size``); or ``"pool"``: global average
   pooling + Linear (not in the reference). The reference's conv only runs on a last stage of
   exactly its kernel's size (its flatten breaks otherwise); here a last stage of another size
   (HRDA's context and detail views, other crops, MIC's batch of another shape) is first
   resampled onto the kernel's grid by adaptive average pooling — block means where the stage is
   larger (exact 2×2 means at twice the size), cell repetition where it is smaller — so the conv
   still sees one value per kernel cell, each the mean of the stage over that cell's share of
   the image. At the built size the pooling is the identity: the reference's layer, unchanged.
3. **Meta-net** (CoCoOp): π = W2·ReLU(W1·v), 512 → 32 → text width.
4. **Prompts**: 16 learnable context vectors ~ N(0, 0.02²), each shifted by π per image, then the
   class name and "." — "X X … X {name}." — with the reference's substitutions (person →
   pedestrian, rider → driver, bicycle → bike, motorcycle → scooter; "_" → " ").
5. **Text features** g_k: the frozen text tower (:mod:`udaseg.models.text_towers`) on every
   image × class prompt in one batch, then a new trainable projection P (width → 512,
   N(0, width^-1)). The tower is held *outside* the module tree: it has no entry in the state
   dict, the optimizer or the EMA teacher, and is shared (not copied) by ``deepcopy``.
6. **Score map** S_k(p) = cos(F(p), g_k) / τ, τ = 0.07 fixed.
7. **Spatial block** (LSeg, depth 2, shared): R(X)_k = w ⊛ X_k + max_j X_j with one 3×3 conv of
   one channel; S'' = R(tanh(R(S))).
8. **Fusion**: concat(F, S'') → Dropout2d(0.1) → 1×1 classifier (``classifier="1x1"``, the
   version the paper ran); ``"3x3proj"`` inserts a 3×3 conv (C + K → C, no norm/act) first, the
   later commit's variant.

**Gradient parity with the reference** (``tests/models/test_tigda_head.py``, a re-statement of
``CMFHeadContext.forward``/``cls_seg`` and mmseg's CE on this head's weights, fp32, CPU): every
parameter's gradient, ``embed_layers.0.proj.weight`` included, agrees to a few 1e-6 of its largest
entry, and no stop-gradient, ``.data`` or in-place op is on either side's path from the embed
layers to the loss. The two sides use formulas that differ but give the same gradients:
``F.normalize`` vs ``x / x.norm()`` (they differ only below a norm of 1e-12), one batched pass
vs the reference's loop over images, ``/ τ`` vs a scale built as exp(log(1/τ)) (the same fp32
value, 14.285714), and ``max(dim).values`` vs ``max(dim)[0]`` (ties routed to the same index).
The text branch and the image vector (the last stage only) carry no gradient into
``embed_layers.0`` in either version.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from udaseg.models.heads.base import ConvModule
from udaseg.models.heads.daformer import ASPPFusion, TokenEmbed, embed_and_fuse
from udaseg.models.text_towers import TextTower

# The reference's renaming of Cityscapes class names in the prompts.
NAME_SUBSTITUTIONS = {"person": "pedestrian", "rider": "driver", "bicycle": "bike", "motorcycle": "scooter"}
IMAGE_VECTORS = ("conv", "pool")
CLASSIFIERS = ("1x1", "3x3proj")


def prompt_names(class_names: list[str] | tuple[str, ...]) -> list[str]:
    """The class names as they appear in TigDA's prompts."""
    return [NAME_SUBSTITUTIONS.get(n, n).replace("_", " ") for n in class_names]


class SharedModule:
    """Holds a module outside its owner's module tree: not in ``state_dict()`` or
    ``parameters()``, not moved by ``.to()`` (moved on use), shared by ``copy.deepcopy``."""

    def __init__(self, module: TextTower):
        self.module = module

    def __deepcopy__(self, memo):
        return self

    def on(self, device: torch.device) -> TextTower:
        if next(self.module.buffers(), next(self.module.parameters(), torch.empty(0))).device != device:
            self.module.to(device)
        return self.module


class SpatialBlock(nn.Module):
    """LSeg's bottleneck block (arch option 1): R(X)_k = w ⊛ X_k + max_j X_j, one 3×3 conv with
    one input and one output channel shared by every class map."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, k, h, w = x.shape
        per_class = self.conv(x.reshape(b * k, 1, h, w)).reshape(b, k, h, w)
        return per_class + x.max(dim=1, keepdim=True).values


class CMFHead(nn.Module):
    prompt_prefix: torch.Tensor  # a buffer
    prompt_suffix: torch.Tensor  # a buffer
    prompt_ids: torch.Tensor  # a buffer

    def __init__(self, in_channels, in_strides, class_names, tower, *, embed_dim: int = 512, channels: int = 512,
                 fusion: str = "aspp", dilations=(1, 6, 12, 18), n_ctx: int = 16, image_vector: str = "conv",
                 image_size=(512, 512), tau: float = 0.07, classifier: str = "1x1", dropout: float = 0.1,
                 align_corners: bool = False):
        super().__init__()
        if image_vector not in IMAGE_VECTORS:
            raise ValueError(f"CMF image_vector must be one of {IMAGE_VECTORS}, got {image_vector!r}")
        if classifier not in CLASSIFIERS:
            raise ValueError(f"CMF classifier must be one of {CLASSIFIERS}, got {classifier!r}")
        self.num_classes = len(class_names)
        self.output_stride = min(in_strides)
        self.align_corners, self.tau, self.n_ctx = align_corners, tau, n_ctx
        self.embed_layers = nn.ModuleList(TokenEmbed(c, embed_dim) for c in in_channels)
        fused_in = embed_dim * len(in_channels)
        self.fuse_layer = (ASPPFusion(fused_in, channels, tuple(dilations), separable=True) if fusion == "aspp"
                           else ConvModule(fused_in, channels, 1))
        self.image_vector: nn.Conv2d | nn.Linear
        if image_vector == "conv":
            kernel = (int(image_size[0]) // int(in_strides[-1]), int(image_size[1]) // int(in_strides[-1]))
            self.image_vector = nn.Conv2d(in_channels[-1], channels, kernel)
        else:
            self.image_vector = nn.Linear(in_channels[-1], channels)
        width = tower.width
        self.meta_net = nn.Sequential(nn.Linear(channels, max(1, channels // 16)), nn.ReLU(inplace=True),
                                      nn.Linear(max(1, channels // 16), width))
        self.ctx = nn.Parameter(torch.randn(n_ctx, width) * 0.02)
        self.text_projection = nn.Parameter(torch.randn(width, channels) * width ** -0.5)
        self.spatial = SpatialBlock()
        k = self.num_classes
        self.project = nn.Conv2d(channels + k, channels, 3, padding=1) if classifier == "3x3proj" else nn.Identity()
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Conv2d(channels if classifier == "3x3proj" else channels + k, k, 1)
        nn.init.normal_(self.classifier.weight, 0.0, 0.01)  # mmseg's decode-head init (conv_seg), as the reference
        nn.init.zeros_(self.classifier.bias)  # type: ignore[arg-type]  # Conv2d built with bias=True
        # What does not depend on the image, computed once (not persistent: it comes from the tower).
        prompts = tower.prompt_parts(prompt_names(class_names), n_ctx)
        self.register_buffer("prompt_prefix", prompts["prefix"], persistent=False)  # [K, P, width]
        self.register_buffer("prompt_suffix", prompts["suffix"], persistent=False)  # [K, S, width]
        self.register_buffer("prompt_ids", prompts["ids"], persistent=False)  # [K, L]
        self.tower = SharedModule(tower)

    def pixel_features(self, features: list[torch.Tensor]) -> torch.Tensor:
        return embed_and_fuse(self.embed_layers, self.fuse_layer, features, self.align_corners)

    def image_vectors(self, last: torch.Tensor) -> torch.Tensor:
        if isinstance(self.image_vector, nn.Linear):  # image_vector="pool"
            return self.image_vector(last.mean(dim=(2, 3)))
        kernel = (self.image_vector.kernel_size[0], self.image_vector.kernel_size[1])
        if tuple(last.shape[-2:]) != kernel:  # another input size: onto the kernel's grid
            last = F.adaptive_avg_pool2d(last, kernel)
        return self.image_vector(last).flatten(1)

    def text_features(self, v: torch.Tensor) -> torch.Tensor:
        """[B, K, channels]: every class prompt of every image through the tower in one batch."""
        b, k = v.shape[0], self.num_classes
        ctx = self.ctx[None] + self.meta_net(v)[:, None]  # [B, n_ctx, width]
        tokens = torch.cat([self.prompt_prefix[None].expand(b, -1, -1, -1),
                            ctx[:, None].expand(-1, k, -1, -1),
                            self.prompt_suffix[None].expand(b, -1, -1, -1)], dim=2)
        tower = self.tower.on(v.device)
        ids = self.prompt_ids.repeat(b, 1)
        encoded = tower.encode(tokens.flatten(0, 1).to(next(tower.parameters()).dtype), ids)  # [B·K, width]
        return (encoded.to(self.text_projection.dtype) @ self.text_projection).reshape(b, k, -1)

    def score_map(self, pixels: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """S_k(p) = cos(F(p), g_k) / τ (norms in fp32)."""
        f = F.normalize(pixels.float(), dim=1)
        g = F.normalize(text.float(), dim=2)
        return torch.einsum("bchw,bkc->bkhw", f, g) / self.tau

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        pixels = self.pixel_features(features)
        scores = self.score_map(pixels, self.text_features(self.image_vectors(features[-1])))
        scores = self.spatial(torch.tanh(self.spatial(scores)))
        fused = torch.cat([pixels, scores.to(pixels.dtype)], dim=1)
        return self.classifier(self.dropout(self.project(fused)))
