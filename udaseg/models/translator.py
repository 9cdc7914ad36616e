"""DiGA's image domain translator (from TridentAdapt, BMVC 2021; docs/methods.md G4.2, G5) and
FDA's Fourier amplitude swap, the cheap alternative target styling.

**Image space.** Every network here works on **RGB in [−1, 1]** (``to_signed(img01)``), the GAN
convention, whatever the segmentation model's normalisation; DiGA maps the segmentor's input to it
and back (:func:`to_signed` / :func:`from_signed`). The reference feeds the translator the
segmentor's own BGR/128 input, which is also roughly [−1, 1]; only the channel order differs.

**Networks** (widths for ``channels=64``, ``res_blocks=4``, the reference's):

* :class:`Encoder` — 7×7 conv 3→64 (stride 1, reflection padding) + InstanceNorm + ReLU; two
  4×4 stride-2 convs 64→128→256, each + IN + ReLU; four residual blocks at 256 (3×3 conv, IN,
  ReLU, 3×3 conv, IN, identity skip). A 256-channel latent at 1/4 resolution.
* :class:`Decoder` — four residual blocks at 256; twice ×2 nearest upsampling followed by a 5×5
  conv (256→128, 128→64) + IN + ReLU; a 7×7 conv 64→3 and tanh (no norm).
* :class:`MultiScaleDiscriminator` — at each of 3 scales (3×3 stride-2 average pooling between
  them) four 4×4 stride-2 convs (64, 128, 256, 512; zero padding 1, no bias; LeakyReLU 0.2; no
  norm), as the reference's ``Conv2dBlock(..., bias=False)``, and a 1×1 conv (with bias) to one
  channel (LSGAN scores, no sigmoid).
* :class:`ImageTranslator` — ``enc_s``, ``enc_t``, ``dec_s2t`` (renders target style) and
  ``dec_t2s`` (source style); ``forward(src, tgt)`` returns every image the losses need in one
  call (so that DDP sees one forward): translations s→t = dec_s2t(enc_s(s)), t→s =
  dec_t2s(enc_t(t)); self-reconstructions dec_t2s(enc_s(s)), dec_s2t(enc_t(t)); cycles
  dec_t2s(enc_t(s→t)), dec_s2t(enc_s(t→s)).
* :class:`SourceToTarget` — enc_s + dec_s2t only, what DiGA keeps and uses frozen; built from an
  :class:`ImageTranslator` state dict by :func:`source_to_target_from_state` (the widths are read
  from the tensors' shapes).

Inputs whose height or width is not a multiple of 4 are reflection-padded and the outputs cropped
back, so every output has its input's size (source and target batches may differ in size).

**Losses** (§5): :func:`lsgan_generator_loss`, :func:`lsgan_discriminator_loss`,
:func:`label_edge_mask` (|5×5 Laplacian of the label map| > 0.1 as the reference's
``kornia.laplacian(label, kernel_size=5)``: kernel 1 everywhere and −24 at the centre,
**normalised** by its absolute sum 48 (kornia's default), reflected borders — so the threshold is
a summed label difference of 4.8 in the window; ``normalized=False`` is the raw kernel, where any
label change within two pixels is an edge; the ignore value 255 is a label value like any other,
so ignore borders are edges too),
:class:`VGGPerceptual` (VGG19 relu1_1…relu5_1 L1 with weights 1/32, 1/16, 1/8, 1/4, 1,
pix2pixHD's; inputs mapped to ImageNet-normalised RGB, where the reference feeds its [−1, 1] input
as is; 2× average pooling while wider than 1024 px). The VGG19 ImageNet weights come only from a
local file, as tensors (:func:`vgg19_features_from_state`); nothing is downloaded.

**FDA** (Yang & Soatto, CVPR 2020): :func:`fourier_amplitude_swap` replaces the low-frequency
band of the source image's amplitude spectrum by the target's and keeps the source's phase. The
band is the square |k_y| ≤ b, |k_x| ≤ b of signed frequencies around DC with b = ⌊min(H, W)·L⌋
(L = 0.01 in FDA): a symmetric band, so the result is real; FDA's code takes the corners
[0, b) ∪ [H − b, H), which is the same square shifted by one frequency. b = 0 swaps DC only (the
mean colour).
"""

from __future__ import annotations

import math
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn


# -- image space ---------------------------------------------------------------------------------
def to_signed(img01: torch.Tensor) -> torch.Tensor:
    """RGB [0, 1] → [−1, 1]."""
    return img01 * 2.0 - 1.0


def from_signed(x: torch.Tensor) -> torch.Tensor:
    """[−1, 1] → RGB [0, 1]."""
    return (x + 1.0) / 2.0


# -- networks ------------------------------------------------------------------------------------
def _conv(cin: int, cout: int, kernel: int, stride: int = 1, norm: bool = True, act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.ReflectionPad2d((kernel - 1) // 2 if stride == 1 else 1),
                               nn.Conv2d(cin, cout, kernel, stride=stride)]
    if norm:
        layers.append(nn.InstanceNorm2d(cout))
    if act:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(_conv(channels, channels, 3), _conv(channels, channels, 3, act=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class Encoder(nn.Module):
    def __init__(self, channels: int = 64, res_blocks: int = 4):
        super().__init__()
        self.stem = _conv(3, channels, 7)
        self.down = nn.Sequential(_conv(channels, 2 * channels, 4, stride=2),
                                  _conv(2 * channels, 4 * channels, 4, stride=2))
        self.res = nn.Sequential(*[ResidualBlock(4 * channels) for _ in range(res_blocks)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res(self.down(self.stem(x)))


class Decoder(nn.Module):
    def __init__(self, channels: int = 64, res_blocks: int = 4):
        super().__init__()
        self.res = nn.Sequential(*[ResidualBlock(4 * channels) for _ in range(res_blocks)])
        self.up = nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), _conv(4 * channels, 2 * channels, 5),
                                nn.Upsample(scale_factor=2, mode="nearest"), _conv(2 * channels, channels, 5))
        self.out = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(channels, 3, 7), nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.out(self.up(self.res(z)))


def _pad4(x: torch.Tensor) -> torch.Tensor:
    """Reflection padding (bottom, right) to a multiple of 4 in height and width."""
    h, w = x.shape[-2:]
    pad = (0, (-w) % 4, 0, (-h) % 4)
    return F.pad(x, pad, mode="reflect") if any(pad) else x


class SourceToTarget(nn.Module):
    """T(x) = dec_s2t(enc_s(x)) on RGB [−1, 1]: the frozen part DiGA uses."""

    def __init__(self, channels: int = 64, res_blocks: int = 4):
        super().__init__()
        self.enc_s = Encoder(channels, res_blocks)
        self.dec_s2t = Decoder(channels, res_blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        return self.dec_s2t(self.enc_s(_pad4(x)))[..., :h, :w]


class ImageTranslator(nn.Module):
    def __init__(self, channels: int = 64, res_blocks: int = 4):
        super().__init__()
        self.enc_s, self.enc_t = Encoder(channels, res_blocks), Encoder(channels, res_blocks)
        self.dec_s2t, self.dec_t2s = Decoder(channels, res_blocks), Decoder(channels, res_blocks)

    def source_to_target(self, s: torch.Tensor) -> torch.Tensor:
        h, w = s.shape[-2:]
        return self.dec_s2t(self.enc_s(_pad4(s)))[..., :h, :w]

    def forward(self, s: torch.Tensor, t: torch.Tensor) -> dict[str, torch.Tensor]:
        (hs, ws), (ht, wt) = s.shape[-2:], t.shape[-2:]
        s, t = _pad4(s), _pad4(t)
        zs, zt = self.enc_s(s), self.enc_t(t)
        s2t, t2s = self.dec_s2t(zs), self.dec_t2s(zt)
        source_side = {"s2t": s2t, "rec_s": self.dec_t2s(zs), "cyc_s": self.dec_t2s(self.enc_t(s2t))}
        target_side = {"t2s": t2s, "rec_t": self.dec_s2t(zt), "cyc_t": self.dec_s2t(self.enc_s(t2s))}
        return {**{k: v[..., :hs, :ws] for k, v in source_side.items()},
                **{k: v[..., :ht, :wt] for k, v in target_side.items()}}


def source_to_target_from_state(state: dict[str, torch.Tensor]) -> SourceToTarget:
    """A :class:`SourceToTarget` holding ``enc_s.*`` and ``dec_s2t.*`` of an :class:`ImageTranslator`
    (or :class:`SourceToTarget`) state dict, strictly; widths read from the shapes."""
    keys = [k for k in state if k.startswith(("enc_s.", "dec_s2t."))]
    if "enc_s.stem.1.weight" not in state:
        raise ValueError("not a DiGA translator state dict: no enc_s.stem.1.weight "
                         f"(keys start with: {sorted({k.split('.', 1)[0] for k in state})})")
    channels = state["enc_s.stem.1.weight"].shape[0]
    res_blocks = len({k.split(".")[2] for k in keys if k.startswith("enc_s.res.")})
    model = SourceToTarget(channels, res_blocks)
    model.load_state_dict({k: state[k] for k in keys}, strict=True)
    return model


class PatchDiscriminator(nn.Module):
    def __init__(self, channels: int = 64, layers: int = 4):
        super().__init__()
        mods: list[nn.Module] = []
        cin = 3
        for i in range(layers):
            cout = channels * 2 ** i
            mods += [nn.Conv2d(cin, cout, 4, stride=2, padding=1, bias=False), nn.LeakyReLU(0.2, inplace=True)]
            cin = cout
        mods.append(nn.Conv2d(cin, 1, 1))
        self.net = nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class MultiScaleDiscriminator(nn.Module):
    def __init__(self, channels: int = 64, scales: int = 3):
        super().__init__()
        self.scales = nn.ModuleList(PatchDiscriminator(channels) for _ in range(scales))
        self.down = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for i, disc in enumerate(self.scales):
            if i:
                x = self.down(x)
            out.append(disc(x))
        return out


class TranslatorDiscriminators(nn.Module):
    """D_t (judges target style: real target vs s→t) and D_s (real source vs t→s). ``forward``
    is the discriminators' LSGAN loss on both, one call for DDP."""

    def __init__(self, channels: int = 64, scales: int = 3):
        super().__init__()
        self.target = MultiScaleDiscriminator(channels, scales)
        self.source = MultiScaleDiscriminator(channels, scales)

    def forward(self, real_s, real_t, fake_s, fake_t) -> torch.Tensor:
        return (lsgan_discriminator_loss(self.target(real_t), self.target(fake_t))
                + lsgan_discriminator_loss(self.source(real_s), self.source(fake_s)))


# -- losses --------------------------------------------------------------------------------------
def lsgan_generator_loss(scores: list[torch.Tensor]) -> torch.Tensor:
    """Σ_scales mean((D(fake) − 1)²)."""
    return cast(torch.Tensor, sum(((s.float() - 1.0) ** 2).mean() for s in scores))


def lsgan_discriminator_loss(real: list[torch.Tensor], fake: list[torch.Tensor]) -> torch.Tensor:
    """Σ_scales [mean((D(real) − 1)²) + mean(D(fake)²)]."""
    return cast(torch.Tensor, sum(((r.float() - 1.0) ** 2).mean() + (f.float() ** 2).mean()
                                  for r, f in zip(real, fake)))


def label_edge_mask(label: torch.Tensor, threshold: float = 0.1, normalized: bool = True) -> torch.Tensor:
    """Float [B, 1, H, W]: 1 where |5×5 Laplacian of the label map| > ``threshold``, the Laplacian
    as ``kornia.laplacian(label, 5, border_type="reflect", normalized=normalized)`` (kernel 1,
    centre −24; ÷ 48 when ``normalized``, the reference's default)."""
    kernel = torch.ones(1, 1, 5, 5, device=label.device)
    kernel[0, 0, 2, 2] = -24.0
    if normalized:
        kernel = kernel / kernel.abs().sum()
    response = F.conv2d(F.pad(label[:, None].float(), (2, 2, 2, 2), mode="reflect"), kernel)
    return (response.abs() > threshold).float()


VGG19_RELU_X_1 = (1, 6, 11, 20, 29)  # indices of relu1_1 … relu5_1 in torchvision's vgg19().features
PERCEPTUAL_WEIGHTS = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0)


def vgg19_features_from_state(state: dict[str, torch.Tensor]) -> nn.Sequential:
    """torchvision VGG19 ``features`` up to relu5_1 with the given weights: a full torchvision
    ``vgg19`` state dict (``features.N.*``, e.g. the ImageNet file ``vgg19-dcbb9e9d.pth``) or one
    of ``features`` alone. The method receives it through the config's ``inputs.vgg19`` (a local
    file the trainer loads); nothing is ever downloaded."""
    from torchvision.models.vgg import cfgs, make_layers

    if any(k.startswith("features.") for k in state):
        state = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
    features = make_layers(cfgs["E"], batch_norm=False)  # VGG19's feature layers, as torchvision names them
    features.load_state_dict(state, strict=True)
    return features[: VGG19_RELU_X_1[-1] + 1].eval()


class VGGPerceptual(nn.Module):
    """Σ_k w_k · mean|φ_k(a) − φ_k(b)| over relu1_1 … relu5_1 of a frozen VGG19, on RGB [−1, 1]
    images mapped to ImageNet normalisation; both images 2× average-pooled while wider than
    ``max_width``. The target side (``b``) is detached, as pix2pixHD's VGGLoss."""

    mean: torch.Tensor  # a buffer
    std: torch.Tensor  # a buffer

    def __init__(self, features: nn.Sequential, max_width: int = 1024):
        super().__init__()
        self.features = features.eval()
        for p in self.features.parameters():
            p.requires_grad_(False)
        self.max_width = max_width
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True):
        super().train(mode)
        self.features.eval()
        return self

    def _taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = (from_signed(x) - self.mean) / self.std
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in VGG19_RELU_X_1:
                out.append(x)
        return out

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        while a.shape[-1] > self.max_width:
            a, b = F.avg_pool2d(a, 2), F.avg_pool2d(b, 2)
        fa, fb = self._taps(a), self._taps(b)
        return cast(torch.Tensor, sum(w * (x - y.detach()).abs().mean() for w, x, y in zip(PERCEPTUAL_WEIGHTS, fa, fb)))


# -- FDA -----------------------------------------------------------------------------------------
def fda_band(height: int, width: int, ratio: float) -> int:
    """b = ⌊min(H, W)·L⌋ (FDA's low-frequency half-width)."""
    return int(math.floor(min(height, width) * ratio))


def low_frequency_mask(height: int, width: int, b: int, device=None) -> torch.Tensor:
    """Bool [H, W] over ``fft2``'s frequency layout: |k_y| ≤ b and |k_x| ≤ b (signed)."""
    ky = torch.fft.fftfreq(height, d=1.0 / height, device=device).abs()
    kx = torch.fft.fftfreq(width, d=1.0 / width, device=device).abs()
    return (ky[:, None] <= b) & (kx[None, :] <= b)


def fourier_amplitude_swap(src: torch.Tensor, tgt: torch.Tensor, ratio: float = 0.01) -> torch.Tensor:
    """Source images [B, C, H, W] (any range) with the low-frequency amplitude of ``tgt`` (same
    shape) and their own phase; not clamped."""
    if src.shape != tgt.shape:
        raise ValueError(f"FDA: source {tuple(src.shape)} and target {tuple(tgt.shape)} must have one shape")
    h, w = src.shape[-2:]
    fs, ft = torch.fft.fft2(src.float()), torch.fft.fft2(tgt.float())
    mask = low_frequency_mask(h, w, fda_band(h, w, ratio), device=src.device)
    amplitude = torch.where(mask, ft.abs(), fs.abs())
    return torch.fft.ifft2(torch.polar(amplitude, fs.angle())).real.to(src.dtype)


__all__ = ["Decoder", "Encoder", "ImageTranslator", "MultiScaleDiscriminator", "PERCEPTUAL_WEIGHTS", "SourceToTarget",
           "TranslatorDiscriminators", "VGGPerceptual", "fda_band", "fourier_amplitude_swap", "from_signed",
           "label_edge_mask", "low_frequency_mask", "lsgan_discriminator_loss",
           "lsgan_generator_loss", "source_to_target_from_state", "to_signed", "vgg19_features_from_state"]
