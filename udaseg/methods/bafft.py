"""BAFFT (Yuan et al., "Birds of A Feather Flock Together: Category-Divergence Guidance for Domain
Adaptive Segmentation", IEEE TIP 31:2878–2892, 2022), from its released code;
docs/methods.md A. Step 1 is SIM (Wang et al., CVPR 2020) without self-training; step 2
adds the pseudo-label CE, AIM (self-weighted aggregation) and ISIA's inter-class separation.

A three-stage pipeline: ``method=bafft`` (step 1) → offline class-wise-median pseudo-labels of the
target training split (:func:`udaseg.methods.pseudo_labels.classwise_thresholds`, A.9: the
``pseudo_labels`` pipeline step with ``rule: classwise_median``) → ``method=bafft_step2``
initialised from step 1 (``model.init_from``), the target batches carrying ``pseudo_label``
(``benchmark.target.pseudo_labels``). The memory banks start empty in each step (A.6).
``experiment/minicity_bafft`` is the whole pipeline as one ``udaseg train`` on the CPU preset.

Features are the classifier's input: the backbone stage the DeepLab-v2 ASPP head reads (layer 4,
2048-d, stride 8 for ResNet-101), at the logits' resolution; labels come down to it by nearest
resizing, predictions are the arg-max of the logits there (no upsampling). One iteration, in the
reference's order (A.12):

1. **Source** (discriminator frozen): student on the source batch → (F_s, P_s). Source CE on P_s
   upsampled to the label size (``align_corners`` of the model; mean over non-ignored pixels).
   Bank filling, no gradient: the label at feature resolution, kept where it equals arg-max P_s
   (correct pixels; the rest 255); per image, the masked mean of F_s over each stuff class present
   and over each of the 10 largest 8-connected instances of each thing class present; a vector is
   pushed into its class's FIFO bank (50 per stuff class, 500 per thing class) only if the
   classifier on the 1×1 vector predicts its class. Backward.
2. **Target**: student on the target batch → (F_t, P_t), Ŷ_t = arg-max P_t. From iteration 1, for
   each class whose bank is warmed up (more than one full buffer written): the masked mean f_t^k of
   each stuff class k present in Ŷ_t that passes the classifier check, and of each of the 10
   largest instances of each thing class (no check). d = channel-mean L1 to the nearest bank entry.
   * step 1: L = λ_adv·L_adv + 0.01·Σ_k d_k + 0.01·Σ_k (1/n_k) Σ_i d_{k,i};
   * step 2: L = CE(P_t↑, Ỹ_t) + λ_adv·L_adv + 0.001·Σ_k w_k·d_k + 0.001·Σ_k (1/n_k) Σ_i w·d
     + 0.001·L_sep, with AIM w = d and L_sep = Σ_k Σ_c (1/n_c) Σ_i κ·½(1 + cos(f_t^k, f_t^{c,i})).
   L_adv = BCE(D(softmax(P_t↑)), source) with P_t upsampled to the input size. Backward.
3. **Discriminator** (unfrozen): ½·BCE(D(softmax(P_s↑)), source) + ½·BCE(D(softmax(P_t↑)), target)
   on detached maps (:class:`~udaseg.methods.advent.Advent`'s update, on softmax maps). Backward.
4. One SGD step of the student, one Adam step of the discriminator.

With a batch of B images per domain (the reference has B = 1) the banks take every image's vectors
in batch order, and the feature terms are averaged over the B target images. Under DDP every rank
pushes every rank's vectors, in rank order, so the banks stay identical (``sync_banks``).

Reference quirks and choices (switch — default):

* AIM weight (``aim_weight``): ``self`` — w = d, not detached (so the term is d², as released);
  ``self_detached`` — w = stopgrad(d); ``class_table`` — the static per-class coefficients that
  the released code defines but never uses (``aim_class_weights``, applied **by class** — the
  reference indexes the thing table by instance rank, a bug not reproduced); ``none``.
  ``aim_clamp`` (false) bounds the self weights to [0, 1] (the unused ``coff_min/max``).
* Separation pairs (``sep_pairs``): ``stuff_thing`` as released; ``all`` adds stuff×stuff and
  thing×thing pairs of different classes. κ (``sep_kappa``) = 500/2048, the constant of the
  reference's tiling (thing-bank size / feature width at the paper's size), kept fixed so that the
  term's weight does not change with the model's width.
* Released step-2 crash paths, not reproduced: the ``loss_cate2ins`` block (uninitialised sum,
  undefined coefficient list) and the stuff-vs-stuff ring block (index out of range) — neither
  feeds the final loss line, whose objective (A.10.4) is what is implemented.
* Absent stuff classes: the reference pools classes absent from Ŷ_t too (a zero vector that almost
  never passes the classifier check; if it does, a constant term with no gradient). Only classes
  present are used here — the same gradients, and the logged losses carry no constants.
* Discriminator input (``disc_input``): ``softmax`` (A.5; AdaptSegNet/SIM/BAFFT), ``entropy`` for
  ADVENT's entropy maps.
* CE normalisation (``loss_norm``): ``valid`` (PyTorch's mean over non-ignored pixels, as the
  reference); the DAFormer line's ``all`` is available.
* ``ent_lambda`` (0), inherited from ADVENT: MinEnt on the target, not part of BAFFT.
* ``adversarial: false`` is not offered (the discriminator is part of both steps); ``adv_lambda: 0``
  removes its gradient for an ablation. The ASPP two-branch quirk and BN in train mode are
  options of the model (``head_options.two_branch_quirk``, ``backbone_options.norm_mode``).
* Classifier check: the head's classifier on the pooled vector as a 1×1 map — with zero padding
  each dilated 3×3 conv reduces to its centre tap, as in the reference; in fp32 (the reference
  casts to fp16 under apex O2).
* Instance ties: components of equal size keep the raster order of their first pixel.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from udaseg import dist
from udaseg.data.catalog import IGNORE_INDEX
from udaseg.errors import ConfigError
from udaseg.methods import register_method
from udaseg.methods.advent import Advent, AdventConfig
from udaseg.methods.adversarial import entropy_map, minent_loss
from udaseg.methods.base import MethodContext
from udaseg.methods.feature_banks import (
    AIM_CLASS_WEIGHTS,
    AIM_MODES,
    SEPARATION_PAIRS,
    STUFF_CLASSES,
    THING_CLASSES,
    FeatureBank,
    aim_weights,
    category_loss,
    class_weight_table,
    image_regions,
    instance_loss,
    masked_average,
    nearest_l1_distance,
    resolve_class_split,
    separation_loss,
)
from udaseg.methods.losses import nearest_labels, seg_cross_entropy

# The step's weight of the aggregation terms when ``cls_lambda`` / ``ins_lambda`` are null (A.11).
AGGREGATION_LAMBDA = {1: 0.01, 2: 0.001}


@dataclass
class BafftConfig(AdventConfig):
    name: str = "bafft"
    step: int = 1  # 1: SIM's objective (A.8); 2: BAFFT's (A.10), needs target pseudo-labels
    loss_norm: str = "valid"
    disc_input: str = "softmax"  # softmax (A.5) | entropy (ADVENT)
    # Class split by name (A.3); names missing from the label space are skipped.
    stuff_classes: list[str] = field(default_factory=lambda: list(STUFF_CLASSES))
    thing_classes: list[str] = field(default_factory=lambda: list(THING_CLASSES))
    stuff_bank_size: int = 50
    thing_bank_size: int = 500
    max_instances: int = 10  # per thing class and image, largest first
    pool_eps: float = 1e-12
    # Aggregation weights; null = the step's value (0.01 in step 1, 0.001 in step 2).
    cls_lambda: float | None = None
    ins_lambda: float | None = None
    # Step 2 only.
    pseudo_lambda: float = 1.0  # target pseudo-label CE
    aim_weight: str = "self"  # self | self_detached | class_table | none
    aim_clamp: bool = False
    aim_class_weights: dict[str, float] = field(default_factory=lambda: dict(AIM_CLASS_WEIGHTS))
    sep_lambda: float = 0.001
    sep_kappa: float = 500 / 2048
    sep_pairs: str = "stuff_thing"  # stuff_thing | all
    sync_banks: bool = True  # DDP: every rank pushes every rank's vectors (identical banks)


@register_method("bafft")
class Bafft(Advent):
    Config = BafftConfig
    aim_table: torch.Tensor  # a buffer: aim_class_weights as a per-class table

    def __init__(self, cfg: BafftConfig, ctx: MethodContext):
        from udaseg.models.heads.deeplabv2 import DeepLabV2ASPPHead

        if cfg.step not in (1, 2):
            raise ConfigError(f"method.step must be 1 or 2, got {cfg.step!r}")
        if not cfg.adversarial:
            raise ConfigError("bafft: method.adversarial=false is not offered (both steps train the discriminator); "
                              "set method.adv_lambda=0 to drop its gradient")
        for key, value, choices in (("disc_input", cfg.disc_input, ("softmax", "entropy")),
                                    ("aim_weight", cfg.aim_weight, AIM_MODES),
                                    ("sep_pairs", cfg.sep_pairs, SEPARATION_PAIRS)):
            if value not in choices:
                raise ConfigError(f"method.{key} must be one of {', '.join(choices)}, got {value!r}")
        if cfg.multi_level:
            raise ConfigError("bafft is single-level (A.4): method.multi_level is ADVENT's option")
        if cfg.max_instances < 1:
            raise ConfigError(f"method.max_instances must be at least 1, got {cfg.max_instances}")
        super().__init__(cfg, ctx)
        head = getattr(self.student, "decode_head", None)
        if not isinstance(head, DeepLabV2ASPPHead):
            raise ConfigError("bafft needs model.head=deeplabv2_aspp (without HRDA): its prototypes are the features "
                              "the classifier reads, and the classifier check applies it to pooled vectors")
        self.feature_index = head.in_index
        dim = head.in_channels[head.in_index]
        classes = ctx.label_space.classes
        try:
            self.stuff_ids, self.thing_ids = resolve_class_split(classes, cfg.stuff_classes, cfg.thing_classes)
        except ValueError as err:
            raise ConfigError(f"method.stuff_classes / thing_classes: {err}") from None
        self.stuff_bank = FeatureBank(self.stuff_ids, cfg.stuff_bank_size, dim)
        self.thing_bank = FeatureBank(self.thing_ids, cfg.thing_bank_size, dim)
        # Classes the table does not name weigh 1; names the label space lacks are skipped.
        self.register_buffer("aim_table", class_weight_table(classes, cfg.aim_class_weights), persistent=False)
        default = AGGREGATION_LAMBDA[cfg.step]
        self.cls_lambda = default if cfg.cls_lambda is None else cfg.cls_lambda
        self.ins_lambda = default if cfg.ins_lambda is None else cfg.ins_lambda

    # -- pieces ----------------------------------------------------------------------------
    def student_pass(self, img: torch.Tensor, size) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(logits at feature resolution, logits upsampled to ``size``, features), fp32."""
        with self.autocast():
            logits, features = self.net("student")(img, return_features=True)
        logits, features = logits.float(), features[self.feature_index].float()
        if logits.shape[-2:] != features.shape[-2:]:
            raise RuntimeError(f"bafft: logits {tuple(logits.shape[-2:])} and features {tuple(features.shape[-2:])} "
                               "differ in resolution")
        up = F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=self.student.align_corners)
        return logits, up, features

    @torch.no_grad()
    def classifier_check(self, vectors: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """[N] bool: the classifier on each pooled vector (as a 1×1 map) predicts its class."""
        if vectors.shape[0] == 0:
            return torch.zeros(0, dtype=torch.bool, device=vectors.device)
        logits = self.student.decode_head.classify(vectors.detach()[:, :, None, None])
        return logits.flatten(1).argmax(dim=1) == classes

    def disc_map(self, logits_up: torch.Tensor) -> torch.Tensor:
        prob = logits_up.softmax(dim=1)
        return entropy_map(prob) if self.cfg.disc_input == "entropy" else prob

    @torch.no_grad()
    def fill_banks(self, features: torch.Tensor, logits: torch.Tensor, label: torch.Tensor) -> None:
        """Push the source batch's class means of correctly predicted pixels (A.6)."""
        label = nearest_labels(label, features.shape[-2:])
        correct = torch.where(label == logits.argmax(dim=1), label, torch.full_like(label, IGNORE_INDEX))
        class_parts: list[torch.Tensor] = []
        vector_parts: list[torch.Tensor] = []
        for b in range(features.shape[0]):
            regions = image_regions(correct[b], self.stuff_ids, self.thing_ids, self.cfg.max_instances)
            pooled = masked_average(features[b], regions.masks, self.cfg.pool_eps)
            passed = self.classifier_check(pooled, regions.classes)
            class_parts.append(regions.classes[passed])
            vector_parts.append(pooled[passed])
        classes, vectors = torch.cat(class_parts), torch.cat(vector_parts)
        if self.cfg.sync_banks and dist.is_dist():
            gathered = dist.all_gather_objects((classes.cpu(), vectors.cpu()))
            classes = torch.cat([c for c, _ in gathered]).to(features.device)
            vectors = torch.cat([v for _, v in gathered]).to(features.device)
        for k in torch.unique(classes).tolist():  # per class in push order (images, then instance rank)
            bank = self.stuff_bank if k in self.stuff_bank else self.thing_bank
            bank.push(k, vectors[classes == k])

    def target_terms(self, features: torch.Tensor, logits: torch.Tensor, active: bool = True
                     ) -> dict[str, torch.Tensor]:
        """Batch means of the raw (not yet λ-weighted) target feature terms: ``cls``, ``ins`` and,
        in step 2, ``sep`` (A.8, A.10); zeros for classes not warmed up, or all when not ``active``."""
        cfg = self.cfg
        ready_stuff = [k for k, ok in self.stuff_bank.ready().items() if ok]
        ready_thing = [k for k, ok in self.thing_bank.ready().items() if ok]
        pred = logits.detach().argmax(dim=1)
        zero = features.sum() * 0.0
        terms = {"cls": zero, "ins": zero}
        if cfg.step == 2:
            terms["sep"] = zero
        if not active or (not ready_stuff and not ready_thing):
            return terms
        batch = features.shape[0]
        for b in range(batch):
            regions = image_regions(pred[b], ready_stuff, ready_thing, cfg.max_instances)
            pooled = masked_average(features[b], regions.masks, cfg.pool_eps)
            keep = regions.is_thing | self.classifier_check(pooled, regions.classes)
            pooled, classes, is_thing = pooled[keep], regions.classes[keep], regions.is_thing[keep]
            distances = pooled.new_zeros(pooled.shape[0])
            for k in torch.unique(classes).tolist():
                sel = classes == k
                bank = self.thing_bank if k in self.thing_bank else self.stuff_bank
                distances = distances.index_put((sel.nonzero()[:, 0],), nearest_l1_distance(pooled[sel], bank.bank(k)))
            mode = cfg.aim_weight if cfg.step == 2 else "none"
            w = aim_weights(distances, classes, mode, self.aim_table, cfg.aim_clamp)
            stuff = ~is_thing
            terms["cls"] = terms["cls"] + category_loss(distances[stuff], w[stuff]) / batch
            terms["ins"] = terms["ins"] + instance_loss(distances[is_thing], classes[is_thing], w[is_thing]) / batch
            if cfg.step == 2:
                terms["sep"] = terms["sep"] + separation_loss(pooled, classes, is_thing, cfg.sep_kappa,
                                                              cfg.sep_pairs) / batch
        return terms

    # -- the algorithm ---------------------------------------------------------------------
    def train_step(self, source, target, it):
        cfg = self.cfg
        if cfg.step == 2 and "pseudo_label" not in target:
            raise ConfigError("bafft step 2 trains on target pseudo-labels, but the target batch has no "
                              "'pseudo_label': set benchmark.target.pseudo_labels to the pseudo-label folder "
                              "(the pipeline's pseudo_labels step with rule: classwise_median writes it)")
        src_img = self.student.normalize(source["img"])
        tgt_img = self.student.normalize(target["img"])
        losses = {}
        self.freeze_discriminators()

        with self.grad_sync(False):  # 1.
            src_logits, src_up, src_features = self.student_pass(src_img, source["label"].shape[-2:])
            self.fill_banks(src_features.detach(), src_logits.detach(), source["label"])
            losses["loss_seg"] = seg_cross_entropy(src_up, source["label"], norm=cfg.loss_norm)
            self.backward(losses["loss_seg"])

        tgt_logits, tgt_up, tgt_features = self.student_pass(tgt_img, tgt_img.shape[-2:])  # 2.
        tgt_map = self.disc_map(tgt_up)
        losses["loss_adv"] = self.fool([tgt_map], [cfg.adv_lambda])
        terms = self.target_terms(tgt_features, tgt_logits, active=it > 0)  # the reference starts at iteration 1
        losses["loss_cls"] = self.cls_lambda * terms["cls"]
        losses["loss_ins"] = self.ins_lambda * terms["ins"]
        if cfg.step == 2:
            losses["loss_sep"] = cfg.sep_lambda * terms["sep"]
            pseudo = target["pseudo_label"]
            pseudo_up = tgt_up if pseudo.shape[-2:] == tgt_up.shape[-2:] else F.interpolate(
                tgt_logits, size=tuple(pseudo.shape[-2:]), mode="bilinear", align_corners=self.student.align_corners)
            losses["loss_pseudo"] = cfg.pseudo_lambda * seg_cross_entropy(pseudo_up, pseudo.long(), norm=cfg.loss_norm)
        if cfg.ent_lambda > 0:
            losses["loss_ent"] = cfg.ent_lambda * minent_loss(tgt_up.softmax(dim=1))
        self.backward(sum(losses[k] for k in losses if k != "loss_seg"))

        losses["loss_disc"] = self.train_discriminators([self.disc_map(src_up.detach())], [tgt_map])  # 3.
        self.step_all()  # 4.
        return {k: v.detach() for k, v in losses.items()}

    def diagnostics_row(self) -> dict:
        """How many classes' banks are warmed up (the feature terms are off until they are)."""
        return {"bafft_ready_stuff": sum(self.stuff_bank.ready().values()),
                "bafft_ready_thing": sum(self.thing_bank.ready().values())}
