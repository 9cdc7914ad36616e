"""DiGA (Shen, Gurram, Liu, Wang and Knoll, "DiGA: Distil to Generalize and then Adapt for Domain
Adaptive Semantic Segmentation", CVPR 2023), written from the official code ``fy-vision/DiGA``;
docs/methods.md G. A pipeline of stages (``configs/experiment/minicity_diga.yaml``):

    translator (or FDA, no stage) → warm-up → diga_pseudo_labels → diga_centroids
                                  → self-training round 1 → diga_pseudo_labels → round 2

**Stage 0, ``diga_translator``** (§4.2, §5; networks in :mod:`udaseg.models.translator`). One
iteration, in the reference's order: the translator's one forward on the source and target crops
(RGB in [−1, 1]) gives the translations, self-reconstructions and cycles; first the
discriminators' LSGAN loss on real vs the detached translations and their Adam step; then, with
the *updated* discriminators frozen, the generator loss λ_adv·LSGAN (s→t judged by D_t, t→s by
D_s) + λ_cyc·L1 cycles + λ_edge·L1(s→t, s) on the source label's edges (kornia's normalised 5×5
Laplacian > 0.1, ``edge_normalized``) + λ_perc·VGG19 perceptual (both directions) +
λ_self·L1 self-reconstructions and the Adam step of the four generator networks (Adam 1e-4,
betas 0.5/0.999, poly 0.9 over the run, method keys). It trains no
segmentation network (``eval_network()`` is None). **Without VGG19 weights** (``inputs.vgg19``, a
local torchvision ``vgg19`` file: never downloaded) the perceptual term is dropped: one warning,
no ``loss_perceptual``, and ``perceptual_weight: 0.0`` in every log row (else its λ).

**Stage 1, warm-up, ``diga`` with ``phase: warmup``** (§6). One iteration:

1. **EMA teacher** update (θ_T ← α_t θ_T + (1 − α_t) θ_S, α_t = min(1 − 1/(t+1), 0.999), a copy
   at t = 0; :mod:`udaseg.methods.teacher`).
2. **Photometric view** x̃_p = β·N(A(x)) + (1 − β)·x (β 0.4): A = kornia colour jitter
   (0.4, 0.4, 0.2, 0.1; p 0.5), grayscale (p 0.3), 3×3 Gaussian blur σ 2 (p 0.8), sharpness 0.5
   (p 0.3), each sample drawn on its own.
3. **CrDoMix** x̂ = M ⊙ x̃_p + (1 − M) ⊙ T(x): T the frozen source→target translator on the clean
   crop (``styling: translator``; ``fda``: FDA's amplitude swap with the paired target crop;
   ``none``: x̂ = x̃_p, the DG / semi-supervised view); M is 1 on ⌊|U|/2⌋ values drawn from the
   crop's label values U (255 counted) plus 255 always (:func:`class_mix_masks`). Labels unchanged.
4. Student and teacher on [x, x̂] (one batch each).
5. **Loss** λ_seg·CE(S(x), y) on the clean view only + λ_distil·L_distil, the **symmetric
   cross-view distillation** (:func:`symmetric_distillation`): teacher-clean → student-CrDoMix
   plus w_rev × teacher-CrDoMix → student-clean, soft cross-entropy at temperature 1 over every
   pixel (λ 0.5, w_rev 0.5 GTA; SYNTHIA 0.25 / 0.25 and OHEM CE). One backward, one SGD step.

**Between stages** (§7), offline steps registered here: ``diga_pseudo_labels`` (arg-max of the
element-wise max of the logits at scales 1 and 0.5, both upsampled to full resolution; no
threshold; one PNG per image, written at once) and ``diga_centroids`` (ProDA's initial class
centroids: per image the mean 256-d feature over pixels *predicted* c, ≥ 5 pixels, a running
mean with the count capped at 3000; ``centroids.pt`` = {"centroids": [C, D]}).

**Stage 2, self-training, ``diga`` with ``phase: selftrain``** (§8). Target batches carry the
offline labels ŷ⁰ (``benchmark.target.pseudo_labels``); the centroids come from
``inputs.centroids``. One iteration:

1. EMA teacher update (the ramp restarts: the teacher starts as a copy of the student).
2. Photometric views x̃_p (source) and t̃_p (target), β 0.3.
3. CrDoMix x̂ of the source, as in the warm-up.
4. Teacher on [x, x̂] (logits, 256-d features).
5. **Bilateral consensus**: the teacher on the clean target t; prototype label
   ŷᵖ = arg-max_c softmax_c(−‖f − v_c‖₂) (upsampled to the crop); ŷ = ŷ⁰ where ŷ⁰ = ŷᵖ, else 255.
6. **Cross-domain ClassMix**: m = M ⊙ x + (1 − M) ⊙ t̃_p, y_m = M ⊙ y + (1 − M) ⊙ ŷ (a fresh mask
   of the same rule; source i onto target i).
7. **Prototype EMA** v_c ← (1 − 1e-4)·v_c + 1e-4·mean, once per image and class with ≥ 5 pixels in
   {label = c} ∩ {teacher arg-max = c} at the feature grid: target features with ŷ, CrDoMix source
   features with y (:class:`PrototypeBank`).
8. Student on [x, x̂] — λ_seg·CE(S(x), y) + λ_distil·L_distil (λ 0.25, w_rev 0.5) — backward;
   student on m — λ_seg·CE(S(m), y_m) — backward; one SGD step.

Round 2 is the same stage with pseudo-labels regenerated from round 1 and, as the reference's
README does, the warm-up's centroid file.

**Modes.** ``diga_dg`` (domain generalisation): the warm-up with x̂ = x̃_p, no sharpness, no target
data at all (unless ``target_bn_update``: the reference's DG model is AdaBN-adapted that way).
``diga_semisup``: a labelled fraction of the target's train split is the "source" stream and the rest
the unlabelled "target" stream (both Cityscapes, chosen with the stream option ``subset``;
:func:`semisup_split` draws the 186/372/744/1,488-image splits of 1/16…1/2); no translator (x̂ = x̃_p),
warm-up and self-training as above; λ_distil 0.5.

**Reference quirks and leaks, as switches** (defaults in brackets):

* ``augment_space`` [``rgb``]: de-normalise to RGB [0, 1], apply A, re-normalise, then blend;
  ``normalized`` is the reference's: A straight on the network-normalised BGR tensor (≈ [−1, 1]),
  N(z) = (z − 0.5)/0.5 after it (kornia clamps to [0, 1], grayscale/hue see swapped channels);
  it reproduces the reference only with its input, ``model.normalization: caffe_bgr128``.
* ``target_bn_update`` [off]: the reference's warm-up passes target crops through the student
  "for visualisation", which in BN train mode updates its running statistics with target
  statistics (an AdaBN-like leak of the "source-only" and DG models). On: a no-grad student
  forward of the target crops after each warm-up step (``diga_dg`` then reads the benchmark's
  target training split, which its default never does).
* ``teacher_bn`` [``train``] and ``teacher_dropout`` [on]: the reference never puts the teacher
  in eval mode, so its BN uses batch statistics and its Dropout2d is active (stochastic targets
  and features); ``teacher_bn: eval`` / ``teacher_dropout: false`` are the ablations.
* ``loss_norm`` [``all``]: CE summed over valid pixels ÷ all pixels (an implicit confidence weight
  on the mixed image); ``seg_loss: ohem`` (SYNTHIA): OHEM CE (0.7, 100,000 kept), mean over kept.
* ``distil_mask_ignore`` [off]: every pixel counts in L_distil, source-ignore included (the
  reference's masked variant is commented out).
* ``consensus`` [on]; off: every offline pseudo-label is used (the validation ladder's step 4).
* ``prototype_skip_zero_sum`` [off]: which class means the prototype EMA skips. The reference
  (``Class_Features.update_objective_SingleVector`` in ``calc_centroids.py``) returns early when
  ``vector.sum().item() == 0``, i.e. for any mean whose entries sum to zero, such as
  [1, −1, 0, …]; on reproduces that. The default skips only the all-zero mean, which is what the
  check is there for (a class with no pixels gives the zero vector): a genuine mean whose entries
  happen to cancel carries information and is folded in. With continuous (GroupNorm, signed)
  features an exact zero sum is practically never met, so the two settings give the same
  prototypes in ordinary runs; the default is the one that is right by construction.
* Best-on-val checkpoint selection: the trainer's ``select_on_val`` [off] (the last network is
  the result by default; on, every evaluation's first val set picks ``best.pt``, which starts
  the next stage, and ``eval.json``/the report name the selection).
* Not reproduced: the 18,111-image GTA5 list (a data choice), the SYNTHIA warm-up
  LR ramp (reproduce with ``schedule.power=0 schedule.warmup_iters=<iters>
  schedule.warmup_ratio=0``), the stale-tensor reuse when a crop is all ignore (here M is all ones:
  x̂ = x̃_p), the semi-supervised auxiliary-head terms (our models have no OCR head), the
  reference's fixed semi-supervised list files (a seeded draw here; ``subset`` takes any list),
  and its two resolution streams per batch (one low-resolution crop beside full-resolution ones;
  here a stream has one resolution). The geometry itself is available as stream options:
  ``size_jitter: [0.7, 1.0]`` (random size: H and W scaled independently) and ``crop_rule: diga``
  (the crop re-drawn up to 5 times until two non-ignore classes each cover > 2 %); see
  ``configs/experiment/diga_paper.yaml``, the paper's protocol on real data.

Logits are upsampled to the crop with the model family's ``align_corners`` (True for the DeepLab-v2
presets, as the reference) before every softmax and loss.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from udaseg.data.catalog import IGNORE_INDEX
from udaseg.methods import register_method
from udaseg.methods.base import Method, MethodConfig, MethodContext
from udaseg.methods.losses import nearest_labels, seg_cross_entropy, upsample_to
from udaseg.methods.mixing import mix
from udaseg.methods.pseudo_labels import PseudoLabelScore
from udaseg.methods.steps import StepContext, register_step
from udaseg.methods.teacher import BN_MODES, EMATeacher
from udaseg.models.inference import infer_logits, resize_image
from udaseg.models.schedule import ScheduledOptimizer
from udaseg.models.segmentor import EncoderDecoder

log = logging.getLogger(__name__)

PHASES = ("warmup", "selftrain")
STYLINGS = ("translator", "fda", "none")
AUGMENT_SPACES = ("rgb", "normalized")
SEG_LOSSES = ("ce", "ohem")


# =============================================================================================
# Pieces
def upsample(logits: torch.Tensor, size, align_corners: bool) -> torch.Tensor:
    """Bilinear resize of [B, C, h, w] to ``size`` in float32 (:func:`~udaseg.methods.losses.upsample_to`
    with the network's ``align_corners``)."""
    return upsample_to(logits.float(), size, align_corners)


def class_mix_masks(label: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """DiGA's ClassMix / CrDoMix masks, float [B, H, W] from labels [B, H, W]: per image, U = the
    label values present (255 counted when present); ⌊|U|/2⌋ of them drawn uniformly without
    replacement, plus 255 always; M = 1 where the label is one of those."""
    masks = []
    for lab in label:
        values = torch.unique(lab)
        order = torch.randperm(values.numel(), generator=generator, device="cpu").to(values.device)
        chosen = values[order[: values.numel() // 2]]
        chosen = torch.cat([chosen, chosen.new_tensor([IGNORE_INDEX])])
        masks.append(torch.isin(lab, chosen).float())
    return torch.stack(masks)


def soft_cross_entropy(teacher_logits: torch.Tensor, student_logits: torch.Tensor,
                       valid: torch.Tensor | None = None) -> torch.Tensor:
    """mean over pixels of −Σ_c softmax(teacher)_c · log_softmax(student)_c (the teacher detached);
    ``valid`` [B, H, W] restricts the mean to those pixels."""
    per_pixel = -(teacher_logits.detach().softmax(1) * student_logits.log_softmax(1)).sum(1)
    if valid is None:
        return per_pixel.mean()
    return (per_pixel * valid).sum() / valid.sum().clamp(min=1)


def symmetric_distillation(student_clean: torch.Tensor, student_aug: torch.Tensor, teacher_clean: torch.Tensor,
                           teacher_aug: torch.Tensor, reverse_weight: float, size=None, align_corners: bool = True,
                           valid: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """DiGA's cross-view distillation (§6.1): ``(L, forward, reverse)`` with
    forward = CE(p_T(x) → S(x̂)), reverse = CE(p_T(x̂) → S(x)), L = forward + w_rev·reverse; no
    same-view pairs, temperature 1. Logits are upsampled to ``size`` (default: as they are)
    before the softmax."""
    size = size if size is not None else student_clean.shape[-2:]
    sc, sa, tc, ta = (upsample(x, size, align_corners)
                      for x in (student_clean, student_aug, teacher_clean, teacher_aug))
    forward = soft_cross_entropy(tc, sa, valid)
    reverse = soft_cross_entropy(ta, sc, valid)
    return forward + reverse_weight * reverse, forward, reverse


def ohem_cross_entropy(logits: torch.Tensor, label: torch.Tensor, threshold: float = 0.7,
                       min_kept: int = 100_000) -> torch.Tensor:
    """OHEM CE (OCR's OhemCrossEntropy, DiGA's SYNTHIA loss): the valid pixels sorted by the
    predicted probability of their true class; kept those below max(threshold, the probability at
    sorted index min(min_kept, n − 1)); the mean CE over the kept pixels. ``logits`` at the label
    size."""
    logits = logits.float()
    pixel_loss = F.cross_entropy(logits, label, ignore_index=IGNORE_INDEX, reduction="none")
    valid = label != IGNORE_INDEX
    if not bool(valid.any()):
        return logits.sum() * 0.0
    prob = logits.detach().softmax(1).gather(1, label.clamp(max=logits.shape[1] - 1)[:, None])[:, 0][valid]
    ordered = prob.sort().values
    cut = max(float(ordered[min(min_kept, ordered.numel() - 1)]), threshold)
    kept = prob < cut
    if not bool(kept.any()):
        return logits.sum() * 0.0
    return pixel_loss[valid][kept].mean()


class PhotometricAugment:
    """DiGA's pipeline A on a batch (kornia, every sample drawn on its own): colour jitter
    (kornia-0.5 ColorJitter semantics, i.e. ``ColorJiggle``), random grayscale, random Gaussian
    blur, random sharpness, in this order; an op with p = 0 is left out."""

    def __init__(self, jitter=(0.4, 0.4, 0.2, 0.1), jitter_p=0.5, grayscale_p=0.3, blur_p=0.8, blur_kernel=3,
                 blur_sigma=2.0, sharpness=0.5, sharpness_p=0.3):
        import kornia.augmentation as K

        ops = [(jitter_p, lambda p: K.ColorJiggle(*jitter, p=p)), (grayscale_p, lambda p: K.RandomGrayscale(p=p)),
               (blur_p, lambda p: K.RandomGaussianBlur((blur_kernel, blur_kernel), (blur_sigma, blur_sigma), p=p)),
               (sharpness_p, lambda p: K.RandomSharpness(sharpness, p=p))]
        self.ops = [make(p) for p, make in ops if p > 0]

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        for op in self.ops:
            img = op(img)
        return img


def bilateral_consensus(offline_label: torch.Tensor, prototype_label: torch.Tensor) -> torch.Tensor:
    """ŷ = ŷ⁰ where it equals the prototype label, else 255 (§8.2)."""
    return torch.where(offline_label == prototype_label, offline_label, torch.full_like(offline_label, IGNORE_INDEX))


def class_means(features: torch.Tensor, label: torch.Tensor, pred: torch.Tensor, num_classes: int,
                min_pixels: int = 5, skip_zero_sum: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class mean feature of one image over {label = c} ∩ {pred = c}: ``(means [C, D], ok [C])``
    from ``features`` [D, h, w] and int maps [h, w]; ``ok`` where the set has ≥ ``min_pixels``
    pixels and the mean is not the zero vector (ProDA skips those). ``skip_zero_sum``: the
    reference's literal test instead, which skips every mean whose entries *sum* to 0 (the zero
    vector, but also e.g. [1, −1, 0, …]); see ``DiGAConfig.prototype_skip_zero_sum``."""
    d = features.shape[0]
    keep = (label == pred) & (label >= 0) & (label < num_classes)
    cls = label[keep]
    onehot = F.one_hot(cls, num_classes).float()  # [N, C]
    counts = onehot.sum(0)
    sums = onehot.t() @ features.float().reshape(d, -1)[:, keep.reshape(-1)].t()  # [C, D]
    means = sums / counts.clamp(min=1)[:, None]
    nonzero = means.sum(dim=1) != 0 if skip_zero_sum else (means != 0).any(dim=1)
    ok = (counts >= min_pixels) & nonzero
    return means, ok


class PrototypeBank(nn.Module):
    """Class prototypes [C, D] (fp32 buffer: saved in checkpoints for resuming, not an artefact),
    updated by EMA with ``momentum`` (§8.3). A class mean that is the zero vector is never folded
    in; with ``skip_zero_sum`` (the reference's test) neither is one whose entries sum to 0."""

    centroids: torch.Tensor  # a buffer

    def __init__(self, centroids: torch.Tensor, momentum: float = 1e-4, min_pixels: int = 5,
                 skip_zero_sum: bool = False):
        super().__init__()
        self.register_buffer("centroids", centroids.detach().clone().float())
        self.momentum, self.min_pixels, self.skip_zero_sum = momentum, min_pixels, skip_zero_sum

    @property
    def num_classes(self) -> int:
        return self.centroids.shape[0]

    def weights(self, features: torch.Tensor) -> torch.Tensor:
        """softmax_c(−‖f − v_c‖₂) [B, C, h, w] for features [B, D, h, w]."""
        b, d, h, w = features.shape
        flat = features.float().permute(0, 2, 3, 1).reshape(b, h * w, d)
        dist = torch.cdist(flat, self.centroids[None].expand(b, -1, -1))  # [B, hw, C]
        return (-dist).softmax(dim=-1).permute(0, 2, 1).reshape(b, -1, h, w)

    def nearest_label(self, features: torch.Tensor, size=None, align_corners: bool = True) -> torch.Tensor:
        """ŷᵖ [B, H, W]: arg-max of the weight maps upsampled (bilinear) to ``size``."""
        w = self.weights(features)
        if size is not None:
            w = upsample(w, size, align_corners)
        return w.argmax(dim=1)

    @torch.no_grad()
    def update(self, features: torch.Tensor, label: torch.Tensor, pred: torch.Tensor) -> int:
        """One EMA step per image and class with ≥ ``min_pixels`` pixels in {label = c} ∩ {pred = c}
        (``label`` at the crop or the feature grid, downsampled nearest; ``pred`` at the grid).
        Returns the number of class updates."""
        label = nearest_labels(label, features.shape[-2:])
        updates = 0
        for f, lab, p in zip(features, label, pred):
            means, ok = class_means(f, lab, p, self.num_classes, self.min_pixels, self.skip_zero_sum)
            self.centroids[ok] = (1 - self.momentum) * self.centroids[ok] + self.momentum * means[ok]
            updates += int(ok.sum())
        return updates


class CentroidAccumulator:
    """ProDA's initial centroids (``calc_prototype``, mean mode): per image and class c the mean
    feature over pixels predicted c (≥ ``min_pixels``), folded in as v_c ← (v_c·n_c + f)/(n_c + 1),
    n_c ← min(n_c + 1, ``cap``); zero means skipped as in :class:`PrototypeBank` (``skip_zero_sum``)."""

    def __init__(self, num_classes: int, dim: int, min_pixels: int = 5, cap: int = 3000, skip_zero_sum: bool = False):
        self.centroids = torch.zeros(num_classes, dim, dtype=torch.float64)
        self.counts = torch.zeros(num_classes, dtype=torch.float64)
        self.min_pixels, self.cap, self.skip_zero_sum = min_pixels, cap, skip_zero_sum

    def add(self, features: torch.Tensor, pred: torch.Tensor) -> None:
        """``features`` [D, h, w], ``pred`` [h, w] at the same grid."""
        means, ok = class_means(features, pred, pred, self.centroids.shape[0], self.min_pixels, self.skip_zero_sum)
        means = means.double().cpu()
        for c in torch.nonzero(ok.cpu()).flatten().tolist():
            n = self.counts[c]
            self.centroids[c] = (self.centroids[c] * n + means[c]) / (n + 1)
            self.counts[c] = min(float(n) + 1, self.cap)


@torch.no_grad()
def multi_scale_logits(model: nn.Module, img: torch.Tensor, scales=(1.0, 0.5)) -> torch.Tensor:
    """The element-wise max over ``scales`` of the logits of ``img`` (uint8 [B, 3, H, W]) resized
    by each scale, every one upsampled to (H, W) first (DiGA's two-scale fusion, §7.1, §9): the
    same computation as two-scale evaluation, :func:`~udaseg.models.inference.infer_logits`."""
    return infer_logits(model, img, scales=tuple(scales))


def embed_and_logits(model: EncoderDecoder, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, the head's ``embed`` features) of a segmentor on a normalised batch."""
    head = model.decode_head
    features = head.embed(model.extract_features(x))
    return head.classify(features), features


def semisup_split(names: list[str], fraction: float, seed: int = 0) -> tuple[list[str], list[str]]:
    """(labelled, unlabelled) sample names: ⌊N·fraction + ½⌋ drawn at random with ``seed`` (2,975
    Cityscapes train images: 186 / 372 / 744 / 1,488 for 1/16 … 1/2), both lists sorted. For the
    ``subset`` stream option of ``diga_semisup``'s source (labelled) and target (unlabelled)."""
    import numpy as np

    if not 0 < fraction < 1:
        raise ValueError(f"labelled fraction must be in (0, 1), got {fraction}")
    names = sorted(names)
    n = int(math.floor(len(names) * fraction + 0.5))
    order = np.random.default_rng(seed).permutation(len(names))
    labelled = {names[i] for i in order[:n]}
    return sorted(labelled), [x for x in names if x not in labelled]


# =============================================================================================
# Stage 0: the image translator
@dataclass
class DiGATranslatorConfig(MethodConfig):
    name: str = "diga_translator"
    channels: int = 64  # encoder/decoder base width (latent: 4×)
    res_blocks: int = 4
    disc_channels: int = 64
    disc_scales: int = 3
    lr: float = 1e-4  # Adam for all networks (the schedule group is not used)
    betas: list[float] = field(default_factory=lambda: [0.5, 0.999])
    power: float = 0.9  # poly decay over the run
    adv_lambda: float = 0.5
    cycle_lambda: float = 10.0
    edge_lambda: float = 20.0
    edge_threshold: float = 0.1
    edge_normalized: bool = True  # kornia.laplacian's default (kernel ÷ 48), as the reference calls it
    perceptual_lambda: float = 0.1  # needs inputs.vgg19; dropped (logged as 0) without it
    perceptual_max_width: int = 1024
    self_lambda: float = 0.001  # SYNTHIA 0.025


def _signed(img: torch.Tensor) -> torch.Tensor:
    """uint8 RGB → [−1, 1]."""
    return img.float() / 127.5 - 1.0


@register_method("diga_translator")
class DiGATranslator(Method):
    Config = DiGATranslatorConfig
    ddp_modules = ("translator", "discriminators")
    eval_network_name = "translator"

    def __init__(self, cfg: DiGATranslatorConfig, ctx: MethodContext):
        super().__init__(cfg, ctx)
        from udaseg.models.translator import (
            ImageTranslator,
            TranslatorDiscriminators,
            VGGPerceptual,
            vgg19_features_from_state,
        )

        self.translator = ImageTranslator(cfg.channels, cfg.res_blocks)
        self.discriminators = TranslatorDiscriminators(cfg.disc_channels, cfg.disc_scales)
        betas = (float(cfg.betas[0]), float(cfg.betas[1]))
        self.optimizers["main"] = ScheduledOptimizer(
            torch.optim.Adam(self.translator.parameters(), lr=cfg.lr, betas=betas), ctx.iters, power=cfg.power)
        self.optimizers["discriminator"] = ScheduledOptimizer(
            torch.optim.Adam(self.discriminators.parameters(), lr=cfg.lr, betas=betas), ctx.iters, power=cfg.power)
        # The frozen VGG19 lives outside the module tree: no checkpoint entry, no optimizer.
        self._vgg: list[VGGPerceptual] = []
        if cfg.perceptual_lambda > 0:
            if "vgg19" in ctx.inputs:
                self._vgg.append(VGGPerceptual(vgg19_features_from_state(ctx.inputs["vgg19"]),
                                               cfg.perceptual_max_width).to(ctx.device))
            else:
                log.warning("diga_translator: no VGG19 weights (inputs.vgg19: a local torchvision vgg19 file); "
                            "the perceptual term (λ %.3g) is dropped and logged as perceptual_weight 0",
                            cfg.perceptual_lambda)
        self.perceptual_weight = cfg.perceptual_lambda if self._vgg else 0.0

    def eval_network(self):
        return None  # no segmentation network: the trainer skips evaluation

    def train_step(self, source, target, it):
        from udaseg.models.translator import label_edge_mask, lsgan_generator_loss

        cfg = self.cfg
        s, t = _signed(source["img"]), _signed(target["img"])
        losses = {}
        with self.autocast():  # translations, reconstructions and cycles in one forward
            out = self.net("translator")(s, t)

        # Discriminators first (the reference's order): real vs the detached translations.
        self.discriminators.requires_grad_(True)
        with self.autocast():
            loss_disc = self.net("discriminators")(s, t, out["t2s"].detach(), out["s2t"].detach())
        self.backward(loss_disc)
        self.step("discriminator")

        # Generator, judged by the just-updated discriminators (frozen).
        self.discriminators.requires_grad_(False)
        with self.autocast():
            adv = lsgan_generator_loss(self.discriminators.target(out["s2t"])) + \
                lsgan_generator_loss(self.discriminators.source(out["t2s"]))
        out = {k: v.float() for k, v in out.items()}
        losses["loss_adv"] = cfg.adv_lambda * adv
        losses["loss_cycle"] = cfg.cycle_lambda * ((out["cyc_s"] - s).abs().mean() + (out["cyc_t"] - t).abs().mean())
        edges = label_edge_mask(source["label"], cfg.edge_threshold, cfg.edge_normalized)
        losses["loss_edge"] = cfg.edge_lambda * ((out["s2t"] - s).abs() * edges).mean()
        if self._vgg:
            vgg = self._vgg[0]
            losses["loss_perceptual"] = self.perceptual_weight * (vgg(out["s2t"], s) + vgg(out["t2s"], t))
        losses["loss_self"] = cfg.self_lambda * ((out["rec_s"] - s).abs().mean() + (out["rec_t"] - t).abs().mean())
        self.backward(sum(losses.values()))
        self.step("main")
        losses["loss_disc"] = loss_disc.float()
        return {k: v.detach() for k, v in losses.items()}

    def diagnostics_row(self) -> dict:
        return {"perceptual_weight": self.perceptual_weight}


# =============================================================================================
# Stages 1 and 2: warm-up and self-training
@dataclass
class DiGAConfig(MethodConfig):
    name: str = "diga"
    phase: str = "warmup"  # warmup | selftrain
    styling: str = "translator"  # translator (inputs.translator) | fda | none (x̂ = x̃_p)
    fda_ratio: float = 0.01  # FDA's L: band half-width ⌊min(H, W)·L⌋
    ema_alpha: float = 0.999
    teacher_bn: str = "train"  # train (reference) | eval
    teacher_dropout: bool = True  # reference: Dropout2d active in the teacher
    seg_lambda: float = 1.0
    distil_lambda: float = 0.5  # warm-up GTA 0.5 / SYNTHIA 0.25; self-training 0.25
    distil_reverse_weight: float = 0.5  # w_rev: GTA, DG, semi-sup 0.5; SYNTHIA 0.25
    distil_mask_ignore: bool = False  # reference: every pixel counts
    photometric_beta: float = 0.4  # warm-up / DG 0.4; self-training 0.3
    augment_space: str = "rgb"  # rgb (clean) | normalized (reference quirk)
    jitter: list[float] = field(default_factory=lambda: [0.4, 0.4, 0.2, 0.1])  # brightness, contrast, saturation, hue
    jitter_p: float = 0.5  # SYNTHIA warm-up 0.7
    grayscale_p: float = 0.3  # SYNTHIA warm-up 0.1
    blur_p: float = 0.8
    blur_kernel: int = 3
    blur_sigma: float = 2.0
    sharpness: float = 0.5
    sharpness_p: float = 0.3  # DG: 0 (absent)
    seg_loss: str = "ce"  # ce | ohem (SYNTHIA)
    ohem_threshold: float = 0.7
    ohem_min_kept: int = 100_000
    target_bn_update: bool = False  # the reference's leak: target forwards update BN statistics (warm-up)
    # self-training
    consensus: bool = True  # bilateral consensus; off = every offline pseudo-label
    prototype_momentum: float = 1e-4
    prototype_min_pixels: int = 5
    prototype_skip_zero_sum: bool = False  # reference quirk: skip a class mean whose entries sum to 0


def _choice(value, choices, key):
    if value not in choices:
        raise ValueError(f"method.{key} must be one of {', '.join(choices)}, got {value!r}")


@register_method("diga")
class DiGA(Method):
    Config = DiGAConfig

    def __init__(self, cfg: DiGAConfig, ctx: MethodContext):
        super().__init__(cfg, ctx)
        from udaseg.models import create_model

        _choice(cfg.phase, PHASES, "phase")
        _choice(cfg.styling, STYLINGS, "styling")
        _choice(cfg.augment_space, AUGMENT_SPACES, "augment_space")
        _choice(cfg.seg_loss, SEG_LOSSES, "seg_loss")
        _choice(cfg.teacher_bn, BN_MODES, "teacher_bn")
        if cfg.target_bn_update and (cfg.phase != "warmup" or not self.reads_target(cfg)):
            raise ValueError(f"method.target_bn_update is the warm-up's target-statistics leak: it needs "
                             f"phase=warmup and a method with target data ({cfg.name} phase {cfg.phase})")
        if cfg.styling == "fda" and not self.reads_target(cfg):
            raise ValueError(f"method.styling=fda needs target images; {cfg.name} has none (use styling=none)")
        if ctx.model_cfg.get("hrda") or ctx.model_cfg.get("depth") is not None:
            raise ValueError(f"{cfg.name} trains a plain encoder-decoder segmentor (its head's embed features are "
                             "the prototypes): model.hrda and model.depth must be null")
        self.student = create_model(ctx.model_cfg, num_classes=ctx.num_classes)
        self.align_corners = bool(self.student.align_corners)
        self.teacher = EMATeacher(self.student, alpha=cfg.ema_alpha, bn_mode=cfg.teacher_bn)
        self.augment = PhotometricAugment(tuple(cfg.jitter), cfg.jitter_p, cfg.grayscale_p, cfg.blur_p, cfg.blur_kernel,
                                          cfg.blur_sigma, cfg.sharpness, cfg.sharpness_p)
        self.translator: nn.Module | None = None
        if cfg.styling == "translator":
            from udaseg.models.translator import source_to_target_from_state

            if "translator" not in ctx.inputs:
                raise ValueError("method.styling=translator needs the frozen translator as inputs.translator: the "
                                 "run directory of a diga_translator stage and its network, RUN_DIR:translator "
                                 "(in a pipeline 'stage://translator/:translator'); or styling=fda")
            self.translator = source_to_target_from_state(ctx.inputs["translator"])
            self.translator.requires_grad_(False).eval()
        self.prototypes = None
        if cfg.phase == "selftrain":
            self.prototypes = PrototypeBank(self._centroids(ctx), cfg.prototype_momentum, cfg.prototype_min_pixels,
                                            cfg.prototype_skip_zero_sum)
        self.optimizers["main"] = self.build_student_optimizer()
        self._last_labels: tuple | None = None
        self._kept: list[float] = []
        self._diag = torch.zeros(4, dtype=torch.int64)  # correct kept, kept, correct offline, labelled

    def _centroids(self, ctx: MethodContext) -> torch.Tensor:
        if "centroids" not in ctx.inputs:
            raise ValueError("method.phase=selftrain needs the class centroids as inputs.centroids (the "
                             "centroids.pt of a diga_centroids step, e.g. 'stage://centroids/centroids.pt')")
        value = ctx.inputs["centroids"]
        centroids = value["centroids"] if isinstance(value, dict) else value
        dim = self.student.decode_head.embed_channels
        if not torch.is_tensor(centroids) or tuple(centroids.shape) != (ctx.num_classes, dim):
            shape = tuple(centroids.shape) if torch.is_tensor(centroids) else type(centroids).__name__
            raise ValueError(f"inputs.centroids: expected [{ctx.num_classes}, {dim}] (classes of "
                             f"{ctx.label_space.name} × the head's feature width), got {shape}")
        return centroids

    def train(self, mode: bool = True):
        super().train(mode)
        if self.translator is not None:
            self.translator.eval()  # frozen, always
        return self

    # -- views ---------------------------------------------------------------------------------
    def photometric_view(self, x: torch.Tensor) -> torch.Tensor:
        """x̃_p = β·N(A(x)) + (1 − β)·x on a normalised batch."""
        beta = self.cfg.photometric_beta
        if self.cfg.augment_space == "rgb":
            augmented = self.student.normalize(self.augment(self.student.denormalize(x).clamp(0, 1)))
        else:  # the reference: A on the normalised BGR tensor, then [0, 1] → [−1, 1]
            augmented = (self.augment(x) - 0.5) / 0.5
        return beta * augmented + (1 - beta) * x

    @torch.no_grad()
    def target_styled(self, x: torch.Tensor, target_img: torch.Tensor | None) -> torch.Tensor:
        """T(x): the frozen translator's target-style copy of the clean crops (or FDA's)."""
        from udaseg.models.translator import fourier_amplitude_swap, from_signed, to_signed

        rgb = self.student.denormalize(x).clamp(0, 1)
        if self.cfg.styling == "translator":
            assert self.translator is not None  # built in __init__ for this styling
            styled = from_signed(self.translator(to_signed(rgb)).float())
        else:
            if target_img is None:
                raise ValueError("DiGA's FDA styling needs the target batch (its amplitudes style the source)")
            tgt = self.student.denormalize(target_img).clamp(0, 1)
            tgt = tgt[torch.arange(rgb.shape[0], device=tgt.device) % tgt.shape[0]]  # source i ↔ target i
            if tgt.shape[-2:] != rgb.shape[-2:]:
                tgt = F.interpolate(tgt, size=rgb.shape[-2:], mode="bilinear", align_corners=False)
            styled = fourier_amplitude_swap(rgb, tgt, self.cfg.fda_ratio)
        return self.student.normalize(styled.clamp(0, 1))

    def second_view(self, x, x_p, label, target_img):
        """x̂: CrDoMix of the photometric and target-styled copies, or x̃_p without styling."""
        if self.cfg.styling == "none":
            return x_p
        return mix(class_mix_masks(label), x_p, self.target_styled(x, target_img))

    # -- networks ------------------------------------------------------------------------------
    def student_logits(self, x):
        with self.autocast():
            return self.net("student")(x)

    @torch.no_grad()
    def teacher_forward(self, x, features: bool = False):
        """Teacher logits (and its head's features): BN per ``teacher_bn``, Dropout2d per
        ``teacher_dropout`` (the reference runs it in train mode: both on)."""
        with self.autocast():
            out = self.teacher.predict(x, call=embed_and_logits if features else None,
                                       dropout=self.cfg.teacher_dropout)
        if features:
            logits, feats = out
            return logits.float(), feats.float()
        return out.float()

    def seg_loss(self, logits, label):
        logits = upsample(logits, label.shape[-2:], self.align_corners)
        if self.cfg.seg_loss == "ohem":
            return ohem_cross_entropy(logits, label, self.cfg.ohem_threshold, self.cfg.ohem_min_kept)
        return seg_cross_entropy(logits, label, norm=self.cfg.loss_norm)

    def distillation(self, student_logits, teacher_logits, label):
        """λ_distil·L_distil on the [clean; augmented] halves of a batch."""
        sc, sa = student_logits.chunk(2)
        tc, ta = teacher_logits.chunk(2)
        valid = (label != IGNORE_INDEX).float() if self.cfg.distil_mask_ignore else None
        loss, _, _ = symmetric_distillation(sc, sa, tc, ta, self.cfg.distil_reverse_weight, size=label.shape[-2:],
                                            align_corners=self.align_corners, valid=valid)
        return self.cfg.distil_lambda * loss

    # -- the algorithm -------------------------------------------------------------------------
    def train_step(self, source, target, it):
        if self.cfg.phase == "warmup":
            return self.warmup_step(source, target, it)
        return self.self_training_step(source, target, it)

    def warmup_step(self, source, target, it):
        cfg = self.cfg
        self.teacher.update(self.student, it)  # 1.
        x, y = self.student.normalize(source["img"]), source["label"]
        target_img = self.student.normalize(target["img"]) if target is not None else None
        x_p = self.photometric_view(x)  # 2.
        x_hat = self.second_view(x, x_p, y, target_img)  # 3.
        views = torch.cat([x, x_hat])
        student_logits = self.student_logits(views)  # 4.
        teacher_logits = self.teacher_forward(views)
        loss_seg = cfg.seg_lambda * self.seg_loss(student_logits[: x.shape[0]], y)  # 5.
        loss_distil = self.distillation(student_logits, teacher_logits, y)
        self.backward(loss_seg + loss_distil)
        self.step("main")
        if cfg.target_bn_update and target_img is not None:  # the reference's "visualisation" forward
            with torch.no_grad(), self.autocast():
                self.student(target_img)
        return {"loss_seg": loss_seg.detach(), "loss_distil": loss_distil.detach()}

    def self_training_step(self, source, target, it):
        cfg = self.cfg
        if target is None or "pseudo_label" not in target:
            raise ValueError("diga self-training needs the offline pseudo-labels in the target batch: set "
                             "benchmark.target.pseudo_labels (e.g. stage://pseudo_labels/pseudo_labels)")
        self.teacher.update(self.student, it)  # 1.
        x, y = self.student.normalize(source["img"]), source["label"]
        t, offline = self.student.normalize(target["img"]), target["pseudo_label"]
        if x.shape != t.shape:
            raise ValueError(f"diga ClassMix pastes source crop i onto target crop i: the batches must have one "
                             f"shape, got source {tuple(x.shape)} and target {tuple(t.shape)}")
        x_p, t_p = self.photometric_view(x), self.photometric_view(t)  # 2.
        x_hat = self.second_view(x, x_p, y, t)  # 3.
        views = torch.cat([x, x_hat])
        teacher_src_logits, teacher_src_feats = self.teacher_forward(views, features=True)  # 4.

        teacher_tgt_logits, teacher_tgt_feats = self.teacher_forward(t, features=True)  # 5.
        prototype_label = self.prototypes.nearest_label(teacher_tgt_feats, t.shape[-2:], self.align_corners)
        pseudo = bilateral_consensus(offline, prototype_label) if cfg.consensus else offline

        mask = class_mix_masks(y)  # 6.
        mixed_img, mixed_label = mix(mask, x, t_p), mix(mask, y, pseudo)

        b = x.shape[0]  # 7.
        self.prototypes.update(teacher_tgt_feats, pseudo, teacher_tgt_logits.argmax(1))
        self.prototypes.update(teacher_src_feats[b:], y, teacher_src_logits[b:].argmax(1))

        with self.grad_sync(False):  # 8.
            student_logits = self.student_logits(views)
            loss_seg = cfg.seg_lambda * self.seg_loss(student_logits[:b], y)
            loss_distil = self.distillation(student_logits, teacher_src_logits, y)
            self.backward(loss_seg + loss_distil)
        loss_mix = cfg.seg_lambda * self.seg_loss(self.student_logits(mixed_img), mixed_label)
        self.backward(loss_mix)
        self.step("main")

        labelled = offline != IGNORE_INDEX
        self._kept.append(float(((pseudo != IGNORE_INDEX) & labelled).sum() / labelled.sum().clamp(min=1)))
        self._last_labels = (offline, pseudo)
        return {"loss_seg": loss_seg.detach(), "loss_mix": loss_mix.detach(), "loss_distil": loss_distil.detach()}

    # -- diagnostics (plots only) --------------------------------------------------------------
    def observe_target_labels(self, label: torch.Tensor) -> None:
        """Offline and consensus-filtered pseudo-labels against the target's true labels."""
        if self._last_labels is None:
            return
        offline, pseudo = self._last_labels
        valid = label != IGNORE_INDEX
        kept = valid & (pseudo != IGNORE_INDEX)
        self._diag += torch.tensor([int((pseudo[kept] == label[kept]).sum()), int(kept.sum()),
                                    int((offline[valid] == label[valid]).sum()), int(valid.sum())])

    def diagnostics_row(self) -> dict:
        row = {}
        if self._kept:
            row["consensus_kept"] = sum(self._kept) / len(self._kept)
            self._kept = []
        correct, kept, offline_correct, labelled = self._diag.tolist()
        if kept:
            row["pl_acc"] = correct / kept  # of the consensus-kept pseudo-labels
        if labelled:
            row["pl_acc_offline"] = offline_correct / labelled  # of every offline pseudo-label
        self._diag.zero_()
        return row


@dataclass
class DiGADGConfig(DiGAConfig):
    name: str = "diga_dg"
    styling: str = "none"
    sharpness_p: float = 0.0  # absent in the DG pipeline


@register_method("diga_dg")
class DiGADG(DiGA):
    """DiGA's domain-generalisation warm-up: clean + photometric views, no target data."""

    Config = DiGADGConfig
    uses_target = False

    @classmethod
    def reads_target(cls, cfg) -> bool:
        """Never, unless the reference's leak is asked for: ``target_bn_update`` passes the target's
        training crops through the student (no loss), so that its BN statistics adapt to them."""
        return bool(getattr(cfg, "target_bn_update", False))

    def __init__(self, cfg: DiGADGConfig, ctx: MethodContext):
        if cfg.phase != "warmup" or cfg.styling != "none":
            raise ValueError("diga_dg is the warm-up with the photometric view only: phase=warmup, styling=none "
                             f"(got phase={cfg.phase}, styling={cfg.styling})")
        super().__init__(cfg, ctx)


@dataclass
class DiGASemiSupConfig(DiGAConfig):
    name: str = "diga_semisup"
    styling: str = "none"


@register_method("diga_semisup")
class DiGASemiSup(DiGA):
    """Semi-supervised DiGA: the labelled subset of the target train split is the "source"
    stream, the rest the unlabelled "target" stream; no translator (x̂ = x̃_p)."""

    Config = DiGASemiSupConfig

    def __init__(self, cfg: DiGASemiSupConfig, ctx: MethodContext):
        if cfg.styling != "none":
            raise ValueError(f"diga_semisup has no translator: styling must be none, got {cfg.styling}")
        super().__init__(cfg, ctx)


# =============================================================================================
# Offline steps between the stages (udaseg.engine.pipeline)
@dataclass
class DiGAPseudoLabelStepConfig:
    step: str = "diga_pseudo_labels"
    scales: list[float] = field(default_factory=lambda: [1.0, 0.5])  # of the stored image; max-fused
    stream: str = "target"
    network: str | None = None  # None = the network the previous stage evaluated


@register_step("diga_pseudo_labels", DiGAPseudoLabelStepConfig)
def diga_pseudo_labels(ctx: StepContext, cfg: DiGAPseudoLabelStepConfig) -> dict:
    """Hard pseudo-labels, no threshold: arg-max of the max over scales of the logits, one PNG
    per image written at once (§7.1)."""
    model = ctx.network(cfg.network)
    n = ctx.label_space.num_classes
    images = 0
    counts = torch.zeros(n, dtype=torch.int64)
    score = PseudoLabelScore(ctx.label_space.classes)
    for batch in ctx.batches(cfg.stream, labels=True):
        label = multi_scale_logits(model, batch["img"], tuple(cfg.scales)).argmax(1)[0]
        ctx.write_label(batch["name"][0], label)
        counts += torch.bincount(label.flatten().cpu(), minlength=n)
        images += 1
        if "label" in batch:  # diagnostics only
            score.update(label, batch["label"][0])
    return {"images": images, "scales": list(cfg.scales),
            "class_fraction": {c: round(float(k) / max(int(counts.sum()), 1), 5)
                               for c, k in zip(ctx.label_space.classes, counts)}, **score.summary()}


@dataclass
class DiGACentroidStepConfig:
    step: str = "diga_centroids"
    resize_to: list[int] | None = None  # (h, w) before inference; reference: 512×1024 of Cityscapes
    interpolation: str = "bicubic"  # of that resize: PIL bicubic, the reference's loader | bilinear
    passes: int = 5  # over the split (reference 5; changes the result only once a count reaches the cap)
    min_pixels: int = 5
    count_cap: int = 3000
    skip_zero_sum: bool = False  # the reference's test, as DiGAConfig.prototype_skip_zero_sum
    stream: str = "target"
    network: str | None = None


@register_step("diga_centroids", DiGACentroidStepConfig)
def diga_centroids(ctx: StepContext, cfg: DiGACentroidStepConfig) -> dict:
    """ProDA's initial centroids from the previous stage's network (eval mode, no labels):
    ``centroids.pt`` = {"centroids": float32 [C, D]} (§7.2). A class never predicted on ≥
    ``min_pixels`` pixels of an image keeps the zero vector and is listed in the summary."""
    if cfg.passes < 1:
        raise ValueError(f"diga_centroids: passes must be ≥ 1, got {cfg.passes}")
    model = ctx.network(cfg.network)
    n = ctx.label_space.num_classes
    acc = CentroidAccumulator(n, model.decode_head.embed_channels, cfg.min_pixels, cfg.count_cap, cfg.skip_zero_sum)
    images = 0
    with torch.no_grad():
        for _ in range(cfg.passes):
            for batch in ctx.batches(cfg.stream):
                img = batch["img"]
                if cfg.resize_to is not None:
                    img = resize_image(img, (int(cfg.resize_to[0]), int(cfg.resize_to[1])), cfg.interpolation)
                logits, feats = embed_and_logits(model, model.normalize(img, value_range=255.0))
                acc.add(feats[0], logits[0].argmax(0))
                images += 1
    torch.save({"centroids": acc.centroids.float()}, ctx.out_dir / "centroids.pt")
    missing = [c for c, k in zip(ctx.label_space.classes, acc.counts) if k == 0]
    return {"images": images, "passes": cfg.passes, "classes": n, "dim": int(acc.centroids.shape[1]),
            "classes_without_centroid": missing}


@dataclass
class SemiSupSplitStepConfig:
    step: str = "semisup_split"
    fraction: float = 0.125  # the labelled share: 1/16, 1/8, 1/4, 1/2 in the paper
    seed: int = 0
    stream: str = "target"


@register_step("semisup_split", SemiSupSplitStepConfig, needs_network=False)
def semisup_split_step(ctx: StepContext, cfg: SemiSupSplitStepConfig) -> dict:
    """``labelled.txt`` / ``unlabelled.txt``: :func:`semisup_split` of the stream's training split
    (a step before any training stage: it needs no network). Later stages read them through the
    ``subset`` stream option (``stage://split/labelled.txt``)."""
    names = [s.name for s in ctx.dataset(cfg.stream).samples]
    labelled, unlabelled = semisup_split(names, cfg.fraction, cfg.seed)
    for fname, part in (("labelled.txt", labelled), ("unlabelled.txt", unlabelled)):
        (ctx.out_dir / fname).write_text("".join(f"{n}\n" for n in part))
    return {"images": len(names), "labelled": len(labelled), "unlabelled": len(unlabelled), "fraction": cfg.fraction}
