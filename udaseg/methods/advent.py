"""ADVENT (Vu et al., "ADVENT: Adversarial Entropy Minimization for Domain Adaptation in Semantic
Segmentation", CVPR 2019), the base of DAF and BAFFT; spec ``bafft_daf_ida.md`` B.12 (and A.5).

One iteration, in the reference's order:

1. **Segmentation** (discriminator frozen): student on the source crops, logits upsampled to the
   label size (``align_corners`` of the model family: True for DeepLab-v2), CE; backward.
2. **Adversarial** (``adv_lambda`` 0.001): student on the target crops, softmax of the upsampled
   logits, entropy map E (per channel), the discriminator's logits D(E_t) pushed to the *source*
   label with BCE; plus MinEnt ``ent_lambda``·mean Σ_c E_c (0 in AdvEnt, 0.001 for MinEnt, both
   for AdvEnt+MinEnt); backward (into the student only).
3. **Discriminator** (unfrozen): ½·BCE(D(E_s.detach()), source) + ½·BCE(D(E_t.detach()), target)
   — the reference halves each term (DAF does not: ``disc_half=false``); backward.
4. One SGD step of the student (lr 2.5e-4, classifier ×10, poly 0.9: ``schedule=poly09_sgd``)
   and one Adam step of the discriminator (lr 1e-4, betas 0.9/0.99, the same poly decay).

``adversarial=false`` with ``ent_lambda>0`` is MinEnt alone. The multi-level variant (an
auxiliary layer-3 classifier with λ_adv,aux 0.0002) is not implemented yet. BatchNorm follows
the model's ``norm_mode`` (frozen-affine, train-mode statistics for the DeepLab-v2 family).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from udaseg.engine.schedule import ScheduledOptimizer
from udaseg.methods import register_method
from udaseg.methods.adversarial import (SOURCE_LABEL, TARGET_LABEL, FCDiscriminator, domain_bce, entropy_map,
                                        minent_loss)
from udaseg.methods.base import Method, MethodConfig, MethodContext
from udaseg.methods.losses import seg_cross_entropy


@dataclass
class AdventConfig(MethodConfig):
    name: str = "advent"
    adversarial: bool = True
    adv_lambda: float = 0.001
    ent_lambda: float = 0.0  # MinEnt weight (0.001 in ADVENT's MinEnt)
    disc_lr: float = 1e-4
    disc_betas: list[float] = field(default_factory=lambda: [0.9, 0.99])
    disc_width: int = 64
    disc_half: bool = True  # ½ on each discriminator term (ADVENT/IntraDA; DAF: false)


@register_method("advent")
class Advent(Method):
    Config = AdventConfig
    ddp_modules = ("student", "discriminator")

    def __init__(self, cfg: AdventConfig, ctx: MethodContext):
        super().__init__(cfg, ctx)
        from udaseg.models import create_model

        if not cfg.adversarial and cfg.ent_lambda <= 0:
            raise ValueError("method.adversarial=false needs method.ent_lambda > 0 (MinEnt), or nothing adapts")
        self.student = create_model(ctx.model_cfg, num_classes=ctx.num_classes)
        self.optimizers["main"] = self.build_student_optimizer()
        self.discriminator = None
        if cfg.adversarial:
            self.discriminator = FCDiscriminator(ctx.num_classes, cfg.disc_width)
            adam = torch.optim.Adam(self.discriminator.parameters(), lr=cfg.disc_lr, betas=tuple(cfg.disc_betas))
            self.optimizers["discriminator"] = ScheduledOptimizer(adam, ctx.iters, power=ctx.schedule.power,
                                                                  min_lr=ctx.schedule.min_lr)

    def predict_prob(self, img, size):
        with self.autocast():
            logits = self.net("student")(img)
        logits = F.interpolate(logits.float(), size=tuple(size), mode="bilinear",
                               align_corners=self.student.align_corners)
        return logits

    def train_step(self, source, target, it):
        cfg = self.cfg
        src_img = self.student.normalize(source["img"])
        tgt_img = self.student.normalize(target["img"])
        losses = {}
        if self.discriminator is not None:
            self.discriminator.requires_grad_(False)

        with self.grad_sync(False):  # 1.
            src_logits = self.predict_prob(src_img, source["label"].shape[-2:])
            losses["loss_seg"] = seg_cross_entropy(src_logits, source["label"], norm=cfg.loss_norm)
            self.backward(losses["loss_seg"])

        tgt_prob = self.predict_prob(tgt_img, tgt_img.shape[-2:]).softmax(dim=1)  # 2.
        tgt_entropy = entropy_map(tgt_prob)
        loss = 0.0
        if self.discriminator is not None:  # the unwrapped D: gradients reach the student only
            losses["loss_adv"] = cfg.adv_lambda * domain_bce(self.discriminator(tgt_entropy), SOURCE_LABEL)
            loss = loss + losses["loss_adv"]
        if cfg.ent_lambda > 0:
            losses["loss_ent"] = cfg.ent_lambda * minent_loss(tgt_prob)
            loss = loss + losses["loss_ent"]
        self.backward(loss)

        if self.discriminator is not None:  # 3.
            self.discriminator.requires_grad_(True)
            disc = self.net("discriminator")
            src_entropy = entropy_map(src_logits.detach().softmax(dim=1))
            half = 0.5 if cfg.disc_half else 1.0
            with self.grad_sync(False):  # two passes (source and target maps may differ in size), one all-reduce
                loss_d_src = half * domain_bce(disc(src_entropy), SOURCE_LABEL)
                self.backward(loss_d_src)
            loss_d_tgt = half * domain_bce(disc(tgt_entropy.detach()), TARGET_LABEL)
            self.backward(loss_d_tgt)
            losses["loss_disc"] = loss_d_src + loss_d_tgt
        self.step("main")  # 4.
        if self.discriminator is not None:
            self.step("discriminator")
        return {k: v.detach() for k, v in losses.items()}
