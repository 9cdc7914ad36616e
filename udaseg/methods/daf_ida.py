"""DAF + IDA ("Depth Guidance and Intra-Domain Adaptation for Semantic Segmentation", repository
``3D-Vision-Lab-of-JUST/dg_ljw``); docs/methods.md B. This file holds stage 0
(DAF, the method ``daf_ida``) and stage 2a (the depth-aware ranking, the pipeline step
``depth_rank``). Stage 1 (ISL) is the shared ``pseudo_labels`` step (rule ``threshold``, 0.9) plus
a target-only CE stage; stage 2b (IDA) is plain ``advent`` from the easy to the hard split
(``disc_half`` true, no depth), initialised from ISL.

Network (B.4, :mod:`udaseg.models.depth`): DeepLab-v2 with a depth branch whose fusion features
gate layer 4 before the ASPP classifier; ``model=deeplabv2_r101_daf`` (paper) or
``minicity_deeplab_daf`` (CPU). The source stream must carry depth
(``benchmark.source.options.depth=true``).

One DAF iteration (B.5), in the reference's order:

1. **Source** (discriminator frozen): student on the SYNTHIA crops → logits P_s and inverse depth
   Ẑ_s, both upsampled to the label size (bilinear, the model's ``align_corners``: True for the
   DeepLab line); L_seg = CE(P_s, Y_s) over valid pixels (``loss_norm: valid``); L_depth = BerHu
   (Ẑ_s, 65536 / (raw_cm + 1)) with c = 0.2·max residual of the batch; backward of
   ``seg_lambda``·L_seg + ``depth_lambda``·L_depth (1.0, 0.001).
2. **Target**: student on the Cityscapes crops → P_t, Ẑ_t at the input size; the depth-aware map
   A_t = E(p_t) ⊙ Ẑ_t^``target_depth_power`` (E: ADVENT's per-channel entropy map); L_adv =
   BCE(D(A_t), source label 0); backward of ``adv_lambda``·L_adv (0.001) into the student only.
3. **Discriminator** (unfrozen): BCE(D(A_s.detach()), 0) + BCE(D(A_t.detach()), 1) with
   A_s = E(p_s) ⊙ Ẑ_s — *not* halved (``disc_half: false``); backward.
4. One SGD step of the student (2.5e-4, head and depth branch ×10, poly 0.9: ``schedule=poly09_sgd``)
   and one Adam step of D (1e-4, betas 0.9/0.99, poly 0.9).

Reference quirks and their switches (default first):

* ``target_depth_power: 2`` — the release multiplies the target map by Ẑ twice but the source map
  once (B.5, B.13.1); ``1`` is DADA's symmetric E ⊙ Ẑ. Release-faithful 2 is the default.
* ``disc_half: false`` — DAF sums the two D terms; ADVENT/IntraDA halve them.
* Depth gradients: A_t is not detached in the generator term, so L_adv also trains the depth
  branch, as released. No target depth supervision.
* ``depth_ignore_unknown: true`` — pixels whose depth is 0 (unknown: padding of our transforms)
  are left out of BerHu's max and mean. The reference has no mask and no such pixels (every
  SYNTHIA pixel has a depth, sky = 65535 cm), so on reference data both settings agree; ``false``
  counts them as raw 0 cm → inverse depth 65536, as the reference's transform would.
* The depth output's internal 228×304 resize (B.13.5) is the model option
  ``depth.internal_size``.

Depth-aware ranking (B.8, step ``depth_rank``), over the target train split with the previous
stage's network in eval mode:

1. for each image, P and Ẑ at the image's stored size (the network input unless ``test_scale``);
2. S(x) = ν(x) · mean_{c,h,w} E_c·Ẑ — no squaring here;
3. ν(x) = (11 − R(x))/11 + 0.5 with R(x) the number of distinct "rare" ids in the argmax map
   (``normalize: true``), else 1. The README's ``--normalize False`` parses as True (B.8.5), so
   the release ran with it ON: default ``normalize: true``; ``false`` is the apparent intent.
   ``rare_ids: faithful_19`` uses IntraDA's 19-class index list {3,4,5,6,7,9,12,14,15,16,17}
   as indices into the run's label space, whatever it is (the release's latent bug in a 16-class
   space: sky and car count as rare); ``by_name`` takes the same class *names* (wall, fence, pole,
   traffic light, traffic sign, terrain, rider, truck, bus, train, motorcycle) in the run's space.
   The 11 of ν stays 11 in both modes, as in the reference;
4. ascending sort; the first ⌊``easy_ratio``·N⌋ (0.66, the DAF value; IntraDA's default 0.67)
   are ``easy.txt``, the rest ``hard.txt``, one name per line in ranking order;
   ``ranking.tsv`` holds name, score and ν;
5. the easy images' plain argmax (no threshold) as 8-bit train-id PNGs in ``pseudo_labels/``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from udaseg.data.catalog import CITYSCAPES_CLASSES, IGNORE_INDEX, LabelSpace
from udaseg.errors import ConfigError
from udaseg.methods import register_method
from udaseg.methods.advent import Advent, AdventConfig
from udaseg.methods.adversarial import entropy_map, minent_loss
from udaseg.methods.base import MethodContext
from udaseg.methods.losses import nearest_labels, seg_cross_entropy
from udaseg.methods.steps import StepContext, register_step
from udaseg.models.depth import DepthAwareSegmentor
from udaseg.models.inference import keep_ratio_size, resize_image

# IntraDA's rare list, 19-class train ids (B.8.4), and the class names they denote there.
INTRADA_RARE_IDS_19: tuple[int, ...] = (3, 4, 5, 6, 7, 9, 12, 14, 15, 16, 17)
INTRADA_RARE_NAMES: tuple[str, ...] = tuple(CITYSCAPES_CLASSES[i] for i in INTRADA_RARE_IDS_19)
RARE_ID_MODES = ("faithful_19", "by_name")
# SYNTHIA's depth range: 16-bit centimetres; inverse depth = INVERSE_DEPTH_SCALE / (raw + 1).
INVERSE_DEPTH_SCALE = 65536.0


# ---------------------------------------------------------------------------------------------
# Pure functions
def inverse_depth_from_metres(depth_m: torch.Tensor) -> torch.Tensor:
    """docs/methods.md B.3.1: SYNTHIA inverse depth z = 65536 / (raw + 1) of the raw 16-bit centimetres.

    The loaders give depth in metres (float32, raw_cm / 100); ``raw_cm = round(metres · 100)``
    recovers the integer file values exactly. 65535 cm (sky, the maximum) → 1.0; 100 cm → ≈ 649.
    """
    raw_cm = torch.round(depth_m.float() * 100.0)
    return INVERSE_DEPTH_SCALE / (raw_cm + 1.0)


def berhu_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """docs/methods.md B.5: reverse Huber on |pred − target| with the batch threshold c = 0.2 · max residual.

    As DADA's ``loss_berHu``: c is a constant (no gradient through the max); ℓ = r where r ≤ c,
    (r² + c²)/(2c) where r > c; the mean over all pixels — or, with ``mask`` (True = keep), over
    the kept pixels only, which also set the max. ``pred`` and ``target`` have the same shape.
    Returns 0 when nothing is kept; c = 0 (a perfect prediction) gives 0, not NaN.
    """
    if pred.shape != target.shape:
        raise ValueError(f"berhu_loss: prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    residual = (pred.float() - target.float()).abs()
    if mask is not None:
        residual = residual[mask]
    if residual.numel() == 0:
        return pred.sum() * 0.0
    c = 0.2 * residual.detach().max()
    c_safe = c.clamp_min(torch.finfo(residual.dtype).tiny)
    squared = (residual * residual + c * c) / (2.0 * c_safe)
    return torch.where(residual <= c, residual, squared).mean()


def depth_aware_map(entropy: torch.Tensor, inverse_depth: torch.Tensor, power: int = 1) -> torch.Tensor:
    """docs/methods.md B.5: E ⊙ Ẑ^power, the inverse depth [B, 1, H, W] (or [B, H, W]) broadcast over the C
    entropy channels [B, C, H, W]. DAF's release: power 1 on the source map, 2 on the target map."""
    if power not in (1, 2):
        raise ValueError(f"depth power must be 1 or 2, got {power}")
    if inverse_depth.dim() == 3:
        inverse_depth = inverse_depth.unsqueeze(1)
    out = entropy * inverse_depth
    return out * inverse_depth if power == 2 else out


def rare_class_ids(label_space: LabelSpace, mode: str = "faithful_19") -> tuple[int, ...]:
    """docs/methods.md B.8.4: the ids counted by the rare-class normaliser in ``label_space``.

    ``faithful_19``: IntraDA's 19-class list as it is, whatever the space (ids beyond the space
    never occur); ``by_name``: the ids in this space of the classes that list names."""
    if mode == "faithful_19":
        return INTRADA_RARE_IDS_19
    if mode == "by_name":
        return tuple(i for i, name in enumerate(label_space.classes) if name in INTRADA_RARE_NAMES)
    raise ValueError(f"rare_ids must be one of {', '.join(RARE_ID_MODES)}, got {mode!r}")


def rare_class_normaliser(pred: torch.Tensor, rare_ids: Sequence[int]) -> torch.Tensor:
    """docs/methods.md B.8.4: ν = (11 − R)/11 + 0.5 per image, R = number of distinct ``rare_ids`` present in
    the argmax map ``pred`` [B, H, W] (or [H, W]). The 11 is the reference's constant."""
    if pred.dim() == 2:
        pred = pred.unsqueeze(0)
    ids = torch.as_tensor(list(rare_ids), dtype=pred.dtype, device=pred.device)
    present = (pred.flatten(1).unsqueeze(-1) == ids).any(dim=1)  # [B, len(ids)]
    count = present.sum(dim=1).to(torch.float32)
    return (11.0 - count) / 11.0 + 0.5


def ranking_score(prob: torch.Tensor, inverse_depth: torch.Tensor, *, normalize: bool = True,
                  rare_ids: Sequence[int] = INTRADA_RARE_IDS_19) -> tuple[torch.Tensor, torch.Tensor]:
    """docs/methods.md B.8.3: S(x) = ν(x) · mean_{c,h,w} E_c(h,w)·Ẑ(h,w) per image (no squaring), from
    probabilities [B, C, H, W] and inverse depth [B, 1, H, W] at the same size. Returns
    ``(scores [B], ν [B])``; ν = 1 without ``normalize``."""
    base = depth_aware_map(entropy_map(prob.float()), inverse_depth.float(), 1).mean(dim=(1, 2, 3))
    if normalize:
        nu = rare_class_normaliser(prob.argmax(dim=1), rare_ids)
    else:
        nu = torch.ones_like(base)
    return base * nu, nu


def split_easy_hard(names: Sequence[str], scores: Sequence[float],
                    easy_ratio: float = 0.66) -> tuple[list[str], list[str]]:
    """docs/methods.md B.8.6: ascending sort by score (stable); easy = the first ⌊easy_ratio·N⌋, hard = the
    rest, both in ranking order. ``int(N · ratio)`` as the reference (0.66 · 2975 → 1963)."""
    if len(names) != len(scores):
        raise ValueError(f"{len(names)} names but {len(scores)} scores")
    if not 0.0 <= easy_ratio <= 1.0:
        raise ValueError(f"easy_ratio must be in [0, 1], got {easy_ratio}")
    order = sorted(range(len(names)), key=lambda i: float(scores[i]))
    n_easy = int(len(names) * easy_ratio)
    ranked = [names[i] for i in order]
    return ranked[:n_easy], ranked[n_easy:]


# ---------------------------------------------------------------------------------------------
# Stage 0: DAF
@dataclass
class DafIdaConfig(AdventConfig):
    name: str = "daf_ida"
    loss_norm: str = "valid"  # L_seg averaged over valid pixels (B.5)
    seg_lambda: float = 1.0
    depth_lambda: float = 0.001
    adv_lambda: float = 0.001
    disc_half: bool = False  # DAF sums the two D terms (B.5)
    target_depth_power: int = 2  # release: E·Ẑ² on the target, E·Ẑ on the source; 1 = DADA's symmetric form
    depth_ignore_unknown: bool = True  # depth 0 (padding) left out of BerHu; no effect on full SYNTHIA frames


@register_method("daf_ida")
class DafIda(Advent):
    Config = DafIdaConfig

    def __init__(self, cfg: DafIdaConfig, ctx: MethodContext):
        if cfg.multi_level:
            raise ConfigError("daf_ida is single-level (B.4): method.multi_level is ADVENT's option")
        if cfg.target_depth_power not in (1, 2):
            raise ConfigError(f"method.target_depth_power must be 1 or 2, got {cfg.target_depth_power}")
        super().__init__(cfg, ctx)
        if not isinstance(self.student, DepthAwareSegmentor):
            raise ConfigError("method daf_ida needs a model with a depth branch (model.depth), e.g. "
                              "model=deeplabv2_r101_daf or model=minicity_deeplab_daf")

    def observe_depth(self, pred: torch.Tensor, target: torch.Tensor, known: torch.Tensor | None) -> None:
        """Source depth error for the logs (the logged loss is BerHu's, scaled by 0.001): the mean
        absolute relative error |Ẑ − Z| / Z of the inverse depth over the known pixels."""
        mask = torch.ones_like(target, dtype=torch.bool) if known is None else known
        if mask.any():
            rel = ((pred - target).abs() / target.clamp_min(1e-6))[mask]
            self._depth_err = getattr(self, "_depth_err", []) + [float(rel.mean())]

    def diagnostics_row(self) -> dict:
        errors, self._depth_err = getattr(self, "_depth_err", []), []
        return {"depth_abs_rel": sum(errors) / len(errors)} if errors else {}

    def forward_with_depth(self, img: torch.Tensor, size) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and inverse depth of a normalised batch, both upsampled to ``size``."""
        with self.autocast():
            logits, depth = self.net("student")(img, with_depth=True)
        up: dict[str, Any] = dict(size=tuple(size), mode="bilinear", align_corners=self.student.align_corners)
        return F.interpolate(logits.float(), **up), F.interpolate(depth.float(), **up)

    def train_step(self, source, target, it):
        cfg = self.cfg
        if "depth" not in source:
            raise ValueError("daf_ida needs source depth: set benchmark.source.options.depth=true (SYNTHIA)")
        src_img = self.student.normalize(source["img"])
        tgt_img = self.student.normalize(target["img"])
        losses = {}
        self.freeze_discriminators()

        with self.grad_sync(False):  # 1.
            src_logits, src_depth = self.forward_with_depth(src_img, source["label"].shape[-2:])
            losses["loss_seg"] = cfg.seg_lambda * seg_cross_entropy(src_logits, source["label"], norm=cfg.loss_norm)
            known = source["depth"] > 0 if cfg.depth_ignore_unknown else None
            depth_target = inverse_depth_from_metres(source["depth"])
            losses["loss_depth"] = cfg.depth_lambda * berhu_loss(src_depth[:, 0], depth_target, known)
            self.backward(losses["loss_seg"] + losses["loss_depth"])
            self.observe_depth(src_depth[:, 0].detach(), depth_target, known)

        tgt_logits, tgt_depth = self.forward_with_depth(tgt_img, tgt_img.shape[-2:])  # 2.
        tgt_prob = tgt_logits.softmax(dim=1)
        tgt_map = depth_aware_map(entropy_map(tgt_prob), tgt_depth, cfg.target_depth_power)
        loss = 0.0
        if self.discriminators:
            losses["loss_adv"] = self.fool([tgt_map], [cfg.adv_lambda])
            loss = loss + losses["loss_adv"]
        if cfg.ent_lambda > 0:
            losses["loss_ent"] = cfg.ent_lambda * minent_loss(tgt_prob)
            loss = loss + losses["loss_ent"]
        self.backward(loss)

        if self.discriminators:  # 3.
            src_map = depth_aware_map(entropy_map(src_logits.detach().softmax(dim=1)), src_depth.detach(), 1)
            losses["loss_disc"] = self.train_discriminators([src_map], [tgt_map])
        self.step_all()  # 4.
        return {k: v.detach() for k, v in losses.items()}


# ---------------------------------------------------------------------------------------------
# Stage 2a: depth-aware ranking
@dataclass
class DepthRankConfig:
    step: str = "depth_rank"
    easy_ratio: float = 0.66  # λ₁ (B.8.6); IntraDA's default 0.67
    normalize: bool = True  # release-faithful ON (the README's "--normalize False" parses as True, B.8.5)
    rare_ids: str = "faithful_19"  # faithful_19 (IntraDA's 19-class ids as they are) | by_name
    stream: str = "target"  # whose training split is ranked
    network: str | None = None  # None = the network the previous stage evaluated
    test_scale: list[int] | None = None  # (long, short) keep-ratio resize before inference; None = as stored
    interpolation: str = "bicubic"  # of that resize: PIL bicubic as IntraDA's loader | bilinear
    at_input_size: bool = False  # score and label at the network's input size (B.8: 512×1024), not the stored one


@torch.no_grad()
def predict_with_depth(model, img: torch.Tensor, test_scale=None, at_input_size: bool = False,
                       interpolation: str = "bicubic") -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and inverse depth of ``img`` uint8 [B, 3, H, W], upsampled to (H, W) — or, with
    ``at_input_size``, to the network's input size — with the model's ``align_corners`` (the image
    resized first to ``test_scale`` as in inference)."""
    height, width = img.shape[-2:]
    size = keep_ratio_size(height, width, test_scale)
    x = resize_image(img, size, interpolation)
    logits, depth = model.forward_with_depth(model.normalize(x, value_range=255.0))
    up: dict[str, Any] = dict(size=size if at_input_size else (height, width), mode="bilinear",
                              align_corners=bool(model.align_corners))
    return F.interpolate(logits.float(), **up), F.interpolate(depth.float(), **up)


@register_step("depth_rank", DepthRankConfig)
def depth_rank(ctx: StepContext, cfg: DepthRankConfig) -> dict:
    """docs/methods.md B.8: rank the target train images by depth-aware entropy, split easy/hard, and write
    the easy images' argmax pseudo-labels."""
    model = ctx.network(cfg.network)
    if not hasattr(model, "forward_with_depth"):
        raise ValueError("depth_rank needs a network with a depth branch (model.depth): the previous "
                         "training stage trained one without")
    rare = rare_class_ids(ctx.label_space, cfg.rare_ids)
    names, scores, normalisers, accuracy = [], [], [], {}
    for batch in ctx.batches(cfg.stream, labels=True):
        logits, depth = predict_with_depth(model, batch["img"], cfg.test_scale, cfg.at_input_size,
                                           cfg.interpolation)
        score, nu = ranking_score(logits.softmax(dim=1), depth, normalize=cfg.normalize, rare_ids=rare)
        name = batch["name"][0]
        if "label" in batch:  # diagnostics only: how right each image's argmax is (MiniCity has labels)
            gt = nearest_labels(batch["label"], logits.shape[-2:])
            valid = gt != IGNORE_INDEX
            accuracy[name] = float((logits.argmax(dim=1)[valid] == gt[valid]).float().mean()) if valid.any() else None
        # Every image's argmax is written now and the hard ones removed after the split: one pass.
        ctx.write_label(name, logits.argmax(dim=1)[0].to(torch.uint8))
        names.append(name)
        scores.append(float(score[0]))
        normalisers.append(float(nu[0]))
    easy, hard = split_easy_hard(names, scores, cfg.easy_ratio)
    for name in hard:
        (ctx.out_dir / "pseudo_labels" / f"{name}.png").unlink()
    (ctx.out_dir / "easy.txt").write_text("".join(f"{n}\n" for n in easy))
    (ctx.out_dir / "hard.txt").write_text("".join(f"{n}\n" for n in hard))
    by_name = {n: (s, v) for n, s, v in zip(names, scores, normalisers)}
    (ctx.out_dir / "ranking.tsv").write_text("name\tscore\tnormaliser\n" + "".join(
        f"{n}\t{by_name[n][0]:.8g}\t{by_name[n][1]:.6g}\n" for n in easy + hard))
    summary = {"images": len(names), "easy": len(easy), "hard": len(hard), "easy_ratio": cfg.easy_ratio,
               "normalize": cfg.normalize, "rare_ids": cfg.rare_ids,
               "score_min": min(scores, default=None), "score_max": max(scores, default=None)}
    for part, members in (("easy", easy), ("hard", hard)):  # does the ranking separate easy from hard?
        values = [v for n in members if (v := accuracy.get(n)) is not None]
        if values:
            summary[f"{part}_pixel_accuracy"] = sum(values) / len(values)
    return summary
