"""DAFormer's self-training (Hoyer et al., "DAFormer: Improving Network Architectures and Training
Strategies for Domain-Adaptive Semantic Segmentation", CVPR 2022), on DACS (Tranheden et al.,
WACV 2021). Notes: docs/methods.md D0–D4.

One iteration ``t``:

1. **EMA teacher** update from the student of step t − 1 (a copy at t = 0), before any forward:
   θ_T ← α_t θ_T + (1 − α_t) θ_S, α_t = min(1 − 1/(t+1), 0.999), parameters only.
2. **Source loss**: student on the source crops, cross-entropy against their labels; plus the
   add-ons' source terms — the thing-class **ImageNet feature distance** λ_FD·L_FD on the last
   backbone stage against a frozen copy of the initial backbone (``method.fd``, λ_FD = 0.005;
   skipped where no feature cell is a thing class). One backward for both (the reference retains
   the graph and calls backward twice: the same gradient). Under DDP this pass only accumulates
   (``grad_sync(False)``).
3. **Pseudo-labels**: the teacher on the *un-augmented* target crops (dropout/drop-path off,
   BatchNorm in train mode as in the reference) — or an add-on's source of them (TigDA: the
   teacher's CMF head); arg-max of the softmax; one weight per batch, the fraction of pixels with
   confidence ≥ 0.968; the top 15 and bottom 120 rows of the crop weigh 0 ("v1" pseudo-label crop).
4. **ClassMix**: half of the source classes (⌈n/2⌉, drawn per sample from the classes of the
   *whole batch* — the reference's choice, ``mix_classes=per_image`` for DACS's) pasted onto the
   target; mixed label and weight (1 on source pixels).
5. **Strong augmentation** of the mixed images: colour jitter (p 0.8, kornia-0.5 semantics) and
   Gaussian blur (p 0.5), batch-wide draws, per-sample parameters.
6. **Mixed loss**: the student on the augmented mixed images, pixel-weighted cross-entropy, plus
   the add-ons' terms on its logits (EBDA in ``reuse`` mode); backward (all-reduces the
   accumulated gradients under DDP unless an add-on's own pass follows).
   6'. The add-ons' **own student passes**, one backward each, the last all-reducing: EBDA's
   separate pass, then MIC's masked images.
7. One optimizer step (AdamW, head lr ×10, warmup + poly; the schedule group).

The add-ons (:mod:`udaseg.methods.addons`; config ``method.<key>.*``, ``method.mic=true`` short for
``method.mic.enabled=true``) join the step at those named places:

* **ImageNet feature distance** (``fd``; :mod:`udaseg.methods.feature_distance`): step 2.
* **MIC** (``mic``; Hoyer et al., CVPR 2023; :mod:`udaseg.methods.masking`): step 6',
  the student on block-masked (32-px blocks, ratio 0.7) colour-augmented target images learns the
  teacher's pseudo-labels of the unmasked ones with their weight, λ = 1 (``mic.mode=separate`` for
  clear→adverse: the first source and first target image, not augmented).
* **EBDA** (``ebda``; :mod:`udaseg.methods.entropy_balance`):
  λ·mean (H − H*)² of the entropy of the student's prediction on the augmented mixed image,
  every pixel, λ 0.1, H* 0.4 nats; step 6' in its own pass (``ebda.mode=separate``, the
  reference) or step 6 (``reuse``); optionally a dynamic H*.
* **TigDA** (``tigda``; :mod:`udaseg.methods.tigda`): the cross-modal
  fusion head on the student (before the teacher is copied, so the EMA teacher has its own), its
  λ·CE on every student pass, the pseudo-labels of step 3 from the teacher's CMF head.

**HRDA** (``model.hrda``, Hoyer et al., ECCV 2022, docs/methods.md D6) changes every student pass of 2, 6 and
6' into the multi-resolution one (context at ×0.5, a random detail crop, learned scale attention;
loss 0.9·fused + 0.1·detail), the teacher's pseudo-labels into sliding detail windows over the
whole crop fused with the attention, and the feature distance onto the context branch. Its
pseudo-label crop is "v2": ``benchmark.target.pseudo_margins`` (30/240/30/30 px of full-resolution
Cityscapes) zero the weight of the original image's margins, moved with the crop by the data
pipeline (a ``valid_pseudo`` map in the target batch); set the v1 rows to 0 then. Every subset of
the add-ons composes with either model (``tests/methods/test_addon_compositions.py``).

Reference quirks as switches (defaults = reference): ``loss_norm`` ("all": CE averaged over every
pixel, ignored ones included), ``teacher_bn`` ("train"), ``mix_classes`` ("batch"). The student
is evaluated (DAFormer #23). Rare class sampling is a property of the source stream
(``benchmark.source.rcs``); the shipped DAFormer experiments switch it on.

With ``diagnostics`` on (the trainer's ``diagnostics=true``, only where the target training split
has labels), the trainer shows the method the target labels **after** ``train_step`` so that it
can log the pseudo-labels' accuracy and per-class precision; they never reach a loss.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from udaseg.methods import register_method
from udaseg.methods.addons import AddOn, StepState, flat_key_table, upgrade_flat_keys
from udaseg.methods.augment import photometric_augment
from udaseg.methods.base import Method, MethodConfig, MethodContext
from udaseg.methods.entropy_balance import EntropyBalance, EntropyBalanceConfig
from udaseg.methods.feature_distance import (
    FeatureDistance,
    FeatureDistanceConfig,
    imagenet_backbone,  # noqa: F401  (its former home)
)
from udaseg.methods.losses import hrda_loss, seg_cross_entropy
from udaseg.methods.masking import MaskedImageConsistency, MICConfig
from udaseg.methods.mixing import MIX_CLASS_MODES, class_masks, mix
from udaseg.methods.pseudo_labels import crop_pseudo_weight, pseudo_label
from udaseg.methods.teacher import EMATeacher
from udaseg.methods.tigda import TigDA, TigDAConfig
from udaseg.models.hrda import HRDASegmentor

ADDONS = {"fd": FeatureDistanceConfig, "tigda": TigDAConfig, "ebda": EntropyBalanceConfig, "mic": MICConfig}


@dataclass
class DAFormerConfig(MethodConfig):
    name: str = "daformer"
    ema_alpha: float = 0.999
    teacher_bn: str = "train"  # train (reference) | eval
    pseudo_threshold: float | None = 0.968  # None: weight 1
    pseudo_ignore_top: int = 15  # rows of the target crop with weight 0 (v1 crop)
    pseudo_ignore_bottom: int = 120
    mix_classes: str = "batch"  # batch (reference) | per_image (DACS)
    color_jitter_p: float = 0.8
    color_jitter_strength: float = 0.2
    blur: bool = True
    # HRDA (an option of the model: model.hrda): the detail crop's share of the loss.
    hr_loss_weight: float = 0.1
    # The add-ons (udaseg.methods.addons), each its own mapping: method.fd.*, method.tigda.* …
    fd: FeatureDistanceConfig = field(default_factory=FeatureDistanceConfig)  # on unless fd.weight = 0
    tigda: TigDAConfig = field(default_factory=TigDAConfig)
    ebda: EntropyBalanceConfig = field(default_factory=EntropyBalanceConfig)
    mic: MICConfig = field(default_factory=MICConfig)

    @classmethod
    def upgrade_keys(cls, method: dict, source: str) -> dict:
        """The flat add-on keys of earlier versions (``mic_block_size`` …), read with a
        deprecation message; ``mic: true`` is ``mic: {enabled: true}``."""
        return upgrade_flat_keys(method, flat_key_table(ADDONS), source)


def build_addons(cfg: DAFormerConfig) -> list[AddOn]:
    """The add-ons a config switches on, in the order they act within a step (feature distance,
    TigDA, EBDA, MIC: EBDA's separate pass comes before MIC's)."""
    addons: list[AddOn] = []
    if cfg.fd.weight > 0:
        addons.append(FeatureDistance(cfg.fd))
    if cfg.tigda.enabled:
        addons.append(TigDA(cfg.tigda))
    if cfg.ebda.enabled:
        addons.append(EntropyBalance(cfg.ebda))
    if cfg.mic.enabled:
        addons.append(MaskedImageConsistency(cfg.mic))
    return addons


@register_method("daformer")
class DAFormer(Method):
    Config = DAFormerConfig

    def __init__(self, cfg: DAFormerConfig, ctx: MethodContext):
        super().__init__(cfg, ctx)
        from udaseg.models import create_model

        if cfg.mix_classes not in MIX_CLASS_MODES:
            raise ValueError(f"method.mix_classes must be one of {MIX_CLASS_MODES}, got {cfg.mix_classes!r}")
        self.addons = build_addons(cfg)  # (their configs are checked here, before anything is built)
        self.aux_addon = next((a for a in self.addons if a.aux_head_weight is not None), None)
        self.student = create_model(ctx.model_cfg, num_classes=ctx.num_classes)
        self.hrda = isinstance(self.student, HRDASegmentor)
        for addon in self.addons:  # before the teacher copies the student: the teacher gets their heads
            addon.attach(self.student, ctx)
        self.teacher = EMATeacher(self.student, alpha=cfg.ema_alpha, bn_mode=cfg.teacher_bn)
        self._frozen: list[str] = []
        for addon in self.addons:
            for name, module in addon.build(self).items():
                setattr(self, name, module)
                if not any(p.requires_grad for p in module.parameters()):
                    self._frozen.append(name)
        self.optimizers["main"] = self.build_student_optimizer()
        self._diag_confusion = torch.zeros(ctx.num_classes, ctx.num_classes, dtype=torch.int64)
        self._last_pseudo: tuple | None = None
        self._weights: list[float] = []

    def train(self, mode: bool = True):
        super().train(mode)
        for name in self._frozen:  # the add-ons' frozen modules (the ImageNet backbone, BatchNorm included)
            getattr(self, name).eval()
        return self

    # -- the algorithm ---------------------------------------------------------------------
    def train_step(self, source, target, it):
        cfg = self.cfg
        self.teacher.update(self.student, it)  # 1.
        s = StepState(src_img=self.student.normalize(source["img"]), src_label=source["label"],
                      tgt_img=self.student.normalize(target["img"]))
        losses = {}
        # Under DDP every student pass but the iteration's last only accumulates gradients.
        passes = [a for a in self.addons if a.own_pass]

        with self.grad_sync(False):  # 2.
            loss, s.src_feats, _ = self.supervised_loss(s.src_img, s.src_label)
            losses["loss_src"] = loss
            loss = self.add_terms(loss, "source_losses", s, losses)  # (the ImageNet feature distance)
            self.backward(loss)

        with self.autocast():  # 3.
            tgt_logits = self.pseudo_logits(s.tgt_img)  # (TigDA: the teacher's CMF head)
        s.pl_label, pl_weight, confidence = pseudo_label(tgt_logits, s.tgt_img.shape[-2:], cfg.pseudo_threshold)
        pl_weight = crop_pseudo_weight(pl_weight, cfg.pseudo_ignore_top, cfg.pseudo_ignore_bottom)
        if "valid_pseudo" in target:  # v2 margins, moved with the crop by the data pipeline
            pl_weight = pl_weight * target["valid_pseudo"]
        s.pl_weight = pl_weight

        masks = class_masks(s.src_label, cfg.mix_classes)  # 4.
        s.mixed_img = mix(masks, s.src_img, s.tgt_img)
        s.mixed_label = mix(masks, s.src_label, s.pl_label)
        s.mixed_weight = mix(masks, torch.ones_like(pl_weight), pl_weight)
        s.mixed_img = photometric_augment(s.mixed_img, self.student.normalize, self.student.denormalize,  # 5.
                                          jitter_p=cfg.color_jitter_p, jitter_strength=cfg.color_jitter_strength,
                                          blur=cfg.blur)

        with self.grad_sync(not passes):  # 6.
            loss_mix, _, s.mixed_logits = self.supervised_loss(s.mixed_img, s.mixed_label, s.mixed_weight)
            losses["loss_mix"] = loss_mix
            loss_mix = self.add_terms(loss_mix, "mixed_losses", s, losses)  # (EBDA in reuse mode)
            self.backward(loss_mix)

        for addon in passes:  # 6'. the add-ons' own student passes (EBDA's separate pass, MIC)
            last = addon is passes[-1]
            with self.grad_sync(last):
                loss = self.add_terms(None, "pass_losses", s, losses, addon)
                self.backward(loss + self._unused_heads(last and not addon.pass_uses_aux_head))
        self.step("main")  # 7.

        self._last_pseudo = (s.pl_label, confidence)
        self._weights.append(float(pl_weight.max()))
        return {k: v.detach() for k, v in losses.items()}

    def add_terms(self, loss, hook: str, s: StepState, losses: dict, addon: AddOn | None = None):
        """``loss`` plus the terms the add-ons' ``hook`` gives (all add-ons, or ``addon``'s), each
        logged in ``losses``."""
        for a in [addon] if addon is not None else self.addons:
            for name, term in getattr(a, hook)(self, s).items():
                losses[name] = term
                loss = term if loss is None else loss + term
        return loss

    def pseudo_logits(self, tgt_img):
        """The teacher's logits of the target: an add-on's source (TigDA's CMF head) or its prediction."""
        for addon in self.addons:
            logits = addon.pseudo_logits(self, tgt_img)
            if logits is not None:
                return logits
        return self.teacher.predict(tgt_img)

    def student_pass(self, img, aux: bool | None = None):
        """The student's training forward: (prediction logits, backbone features, HRDA's
        (detail logits, detail box) or None, the auxiliary (CMF) head's (logits, detail) alike or
        None). With an HRDA model the prediction is the fused one on a fresh detail box, the
        features are the context branch's and the auxiliary head runs on both branches (its
        "prediction" is the context one). ``aux`` defaults to whether an add-on has a head."""
        aux = self.aux_addon is not None if aux is None else aux
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
        cross-entropy, or with an HRDA model 0.9·CE(fused) + 0.1·CE(detail crop); with an
        auxiliary head (TigDA's CMF head) plus its weight times the same loss of that head (HRDA:
        of its context and detail logits)."""
        logits, features, detail, aux = self.student_pass(img)
        loss = self._seg_loss(logits, detail, label, weight)
        if aux is not None:
            loss = loss + self.aux_addon.aux_head_weight * self._seg_loss(*aux, label, weight)
        return loss, features, logits

    def _seg_loss(self, logits, detail, label, weight):
        if detail is not None:
            return hrda_loss(logits, *detail, label, weight, hr_weight=self.cfg.hr_loss_weight, norm=self.cfg.loss_norm)
        return seg_cross_entropy(logits, label, weight, norm=self.cfg.loss_norm)

    def _unused_heads(self, synchronising: bool):
        """0·Σθ over the auxiliary head's parameters for a synchronising DDP pass that does not
        use it (DDP all-reduces only when every parameter took part); 0 otherwise."""
        if not (synchronising and self._ddp and self.aux_addon is not None):
            return 0.0
        return 0.0 * sum(p.sum() for p in self.student.require_aux_head().parameters())

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
        row: dict[str, Any] = {}
        if self._weights:
            row["pseudo_weight"] = sum(self._weights) / len(self._weights)
            self._weights = []
        for addon in self.addons:  # EBDA: the mixed prediction's mean entropy (nats) and the target
            row.update(addon.diagnostics())
        conf = self._diag_confusion
        if int(conf.sum()):
            row["pl_acc"] = float(conf.diag().sum() / conf.sum())
            predicted = conf.sum(dim=0)
            row["pl_precision"] = {name: (float(conf[i, i] / predicted[i]) if predicted[i] else None)
                                   for i, name in enumerate(self.ctx.label_space.classes)}
            self._diag_confusion = torch.zeros_like(conf)
        return row
