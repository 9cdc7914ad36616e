"""ADVENT (Vu et al., "ADVENT: Adversarial Entropy Minimization for Domain Adaptation in Semantic
Segmentation", CVPR 2019), the base of DAF and BAFFT; docs/methods.md B.12 (and A.5).

One iteration, in the reference's order (``multi_level`` adds a second output level, below):

1. **Segmentation** (discriminators frozen): student on the source crops, logits upsampled to the
   label size (``align_corners`` of the model family: True for DeepLab-v2), CE averaged over the
   non-ignored pixels (ADVENT's ``cross_entropy_2d``: ``loss_norm: valid``); backward.
2. **Adversarial** (``adv_lambda`` 0.001): student on the target crops, softmax of the upsampled
   logits, entropy map E (per channel), the discriminator's logits D(E_t) pushed to the *source*
   label with BCE; plus MinEnt ``ent_lambda``·mean Σ_c E_c (0 in AdvEnt, 0.001 for MinEnt);
   backward (into the student only). Both at once is joint training, an option here: the paper's
   "AdvEnt+MinEnt" is a test-time 0.5/0.5 ensemble of the two separately trained models.
3. **Discriminator** (unfrozen): ½·BCE(D(E_s.detach()), source) + ½·BCE(D(E_t.detach()), target)
   — the reference halves each term (DAF does not: ``disc_half=false``); backward.
4. One SGD step of the student (lr 2.5e-4, classifier ×10, poly 0.9: ``schedule=poly09_sgd``)
   and one Adam step of each discriminator (lr 1e-4, betas 0.9/0.99, the same poly decay).

``adversarial=false`` with ``ent_lambda>0`` is MinEnt alone. **Multi-level** (``multi_level``;
ADVENT's released default — ``experiment/advent_paper`` turns it on — off in the method's defaults
as in DAF/IntraDA's single-level use): a second DeepLab-v2
ASPP classifier on the penultimate backbone stage (ResNet layer3) is trained beside the main one,
with its own discriminator: CE weights 1 / ``seg_lambda_aux`` 0.1, adversarial 0.001 /
``adv_lambda_aux`` 0.0002, MinEnt ``ent_lambda`` / ``ent_lambda_aux`` 0.0002. Evaluation uses the
main output only (as ADVENT's test script); the auxiliary classifier is the student's training-only
``aux_head`` and is not part of the exported network. BatchNorm follows the model's ``norm_mode``
(frozen-affine, train-mode statistics for the DeepLab-v2 family).

The adversarial pieces — :meth:`Advent.fool` (step 2's generator term), :meth:`Advent.train_discriminators`
(step 3) and :meth:`Advent.step_all` (step 4) — are shared with DAF and BAFFT, whose discriminators
see other maps (depth-weighted entropy, softmax).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import cast

import torch
import torch.nn.functional as F

from udaseg.errors import ConfigError
from udaseg.methods import register_method
from udaseg.methods.adversarial import SOURCE_LABEL, TARGET_LABEL, FCDiscriminator, domain_bce, entropy_map, minent_loss
from udaseg.methods.base import Method, MethodConfig, MethodContext
from udaseg.methods.losses import seg_cross_entropy
from udaseg.models.schedule import ScheduledOptimizer


@dataclass
class AdventConfig(MethodConfig):
    name: str = "advent"
    loss_norm: str = "valid"  # ADVENT's CE: mean over non-ignored pixels (the family's convention)
    adversarial: bool = True
    adv_lambda: float = 0.001
    ent_lambda: float = 0.0  # MinEnt weight (0.001 in ADVENT's MinEnt)
    disc_lr: float = 1e-4
    disc_betas: list[float] = field(default_factory=lambda: [0.9, 0.99])
    disc_width: int = 64
    disc_half: bool = True  # ½ on each discriminator term (ADVENT/IntraDA; DAF: false)
    multi_level: bool = False  # + an auxiliary classifier on the penultimate stage, its own D
    seg_lambda_aux: float = 0.1
    adv_lambda_aux: float = 0.0002
    ent_lambda_aux: float = 0.0002


@register_method("advent")
class Advent(Method):
    Config = AdventConfig
    ddp_modules = ("student", "discriminator", "discriminator_aux")

    def __init__(self, cfg: AdventConfig, ctx: MethodContext):
        super().__init__(cfg, ctx)
        from udaseg.models import create_model

        if not cfg.adversarial and cfg.ent_lambda <= 0:
            raise ValueError("method.adversarial=false needs method.ent_lambda > 0 (MinEnt), or nothing adapts")
        self.student = create_model(ctx.model_cfg, num_classes=ctx.num_classes)
        if cfg.multi_level:
            self.student.aux_head = self.auxiliary_classifier()
        self.optimizers["main"] = self.build_student_optimizer()
        self.discriminator = self.discriminator_aux = None
        if cfg.adversarial:
            self.discriminator = self.build_discriminator("discriminator")
            if cfg.multi_level:
                self.discriminator_aux = self.build_discriminator("discriminator_aux")

    def auxiliary_classifier(self):
        from udaseg.models.heads.deeplabv2 import DeepLabV2ASPPHead

        head = getattr(self.student, "decode_head", None)
        if not isinstance(head, DeepLabV2ASPPHead):
            raise ConfigError("method.multi_level needs the DeepLab-v2 ASPP head (model.head=deeplabv2_aspp), "
                              "whose classifier it repeats on the penultimate stage")
        return DeepLabV2ASPPHead(head.in_channels, head.in_strides, head.num_classes, in_index=-2,
                                 two_branch_quirk=head.two_branch_quirk)

    def build_discriminator(self, name: str) -> FCDiscriminator:
        cfg, s = self.cfg, self.ctx.schedule
        disc = FCDiscriminator(self.ctx.num_classes, cfg.disc_width)
        adam = torch.optim.Adam(disc.parameters(), lr=cfg.disc_lr, betas=tuple(cfg.disc_betas))
        self.optimizers[name] = ScheduledOptimizer(adam, self.ctx.iters, power=s.power, min_lr=s.min_lr)
        return disc

    # -- the adversarial pieces, shared with DAF and BAFFT -----------------------------------
    @property
    def discriminators(self) -> list[str]:
        return [n for n in ("discriminator", "discriminator_aux") if getattr(self, n, None) is not None]

    def freeze_discriminators(self, frozen: bool = True) -> None:
        for name in self.discriminators:
            getattr(self, name).requires_grad_(not frozen)

    def fool(self, target_maps: list[torch.Tensor], weights: list[float]) -> torch.Tensor:
        """Step 2's generator term Σ_l λ_l·BCE(D_l(map_l), source), through the *unwrapped* (frozen)
        discriminators, so that the gradients reach the student only."""
        return cast(torch.Tensor, sum(w * domain_bce(getattr(self, name)(m), SOURCE_LABEL)
                                      for name, m, w in zip(self.discriminators, target_maps, weights)))

    def train_discriminators(self, source_maps: list[torch.Tensor], target_maps: list[torch.Tensor]) -> torch.Tensor:
        """Step 3: each discriminator on its level's detached maps, source → 0, target → 1 (½ each
        with ``disc_half``); a discriminator's source pass only accumulates, so that DDP
        all-reduces its gradients once, in its target pass."""
        self.freeze_discriminators(False)
        half = 0.5 if self.cfg.disc_half else 1.0
        total: torch.Tensor | float = 0.0
        for name, src, tgt in zip(self.discriminators, source_maps, target_maps):
            for m, label, sync in ((src, SOURCE_LABEL, False), (tgt, TARGET_LABEL, True)):
                with self.grad_sync(sync):
                    loss = half * domain_bce(self.net(name)(m.detach()), label)
                    self.backward(loss)
                total = total + loss.detach()
        return cast(torch.Tensor, total)  # every method has at least one discriminator

    def step_all(self) -> None:
        """Step 4: the student's optimizer, then each discriminator's."""
        self.step("main")
        for name in self.discriminators:
            self.step(name)

    # -- the algorithm ---------------------------------------------------------------------
    def levels(self, img: torch.Tensor, size) -> list[torch.Tensor]:
        """Logits of each output level (main; auxiliary with ``multi_level``), upsampled to ``size``, fp32."""
        with self.autocast():
            out = self.net("student")(img, aux=self.cfg.multi_level)
        out = list(out) if self.cfg.multi_level else [out]
        return [F.interpolate(x.float(), size=tuple(size), mode="bilinear", align_corners=self.student.align_corners)
                for x in out]

    def train_step(self, source, target, it):
        cfg = self.cfg
        seg_w, adv_w, ent_w = ([1.0, cfg.seg_lambda_aux], [cfg.adv_lambda, cfg.adv_lambda_aux],
                               [cfg.ent_lambda, cfg.ent_lambda_aux if cfg.ent_lambda > 0 else 0.0])
        src_img = self.student.normalize(source["img"])
        tgt_img = self.student.normalize(target["img"])
        losses = {}
        self.freeze_discriminators()

        with self.grad_sync(False):  # 1.
            src_logits = self.levels(src_img, source["label"].shape[-2:])
            losses["loss_seg"] = sum(w * seg_cross_entropy(x, source["label"], norm=cfg.loss_norm)
                                     for w, x in zip(seg_w, src_logits))
            self.backward(losses["loss_seg"])

        tgt_prob = [x.softmax(dim=1) for x in self.levels(tgt_img, tgt_img.shape[-2:])]  # 2.
        tgt_entropy = [entropy_map(p) for p in tgt_prob]
        loss = 0.0
        if self.discriminators:
            losses["loss_adv"] = self.fool(tgt_entropy, adv_w)
            loss = loss + losses["loss_adv"]
        if cfg.ent_lambda > 0:
            losses["loss_ent"] = sum(w * minent_loss(p) for w, p in zip(ent_w, tgt_prob))
            loss = loss + losses["loss_ent"]
        self.backward(loss)

        if self.discriminators:  # 3.
            src_entropy = [entropy_map(x.detach().softmax(dim=1)) for x in src_logits]
            losses["loss_disc"] = self.train_discriminators(src_entropy, tgt_entropy)
        self.step_all()  # 4.
        return {k: v.detach() for k, v in losses.items()}
