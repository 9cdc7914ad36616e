"""Offline pipeline steps shared by several methods (``udaseg.engine.pipeline``).

``pseudo_labels`` — run the previous training stage's network over a training split (the
target's by default), one image at a time at the split's full resolution, and write one 8-bit
train-id PNG per image into ``pseudo_labels/`` (never the whole split in memory). The rule:

=====================  ======================================================================
``argmax``             every pixel labelled (IntraDA / DAF ranking's easy split, docs/methods.md B.8.7)
``threshold``          label c where p_c ≥ ``threshold``, else 255 (ISL/CTRL: 0.9, docs/methods.md B.7)
``classwise_median``   label c where p_c ≥ τ_c, τ_c = min(median confidence of the pixels
                       predicted c over the split, ``cap``), 0 for a class never predicted
                       (BAFFT, docs/methods.md A.9); two passes: confidence histograms, then the labels
=====================  ======================================================================

Its ``summary.json`` gives the fraction of pixels labelled and, when the split has labels (as
MiniCity's do), the pseudo-labels' pixel accuracy on the labelled pixels and per class the fraction
labelled, labelled correctly, and the precision (``PseudoLabelScore``) — diagnostics for the report
only: no stage reads them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from udaseg.methods.pseudo_labels import PseudoLabelScore, classwise_thresholds, confidence_histogram
from udaseg.methods.steps import StepContext, register_step
from udaseg.models.inference import infer_logits, keep_ratio_size

RULES = ("argmax", "threshold", "classwise_median")


@dataclass
class PseudoLabelStepConfig:
    step: str = "pseudo_labels"
    rule: str = "threshold"
    threshold: float = 0.9  # rule=threshold
    cap: float = 0.9  # rule=classwise_median
    bins: int = 1000  # rule=classwise_median: confidence histogram bins on [0, 1]
    stream: str = "target"  # whose training split is labelled
    network: str | None = None  # None = the network the previous stage evaluated (student / teacher)
    test_scale: list[int] | None = None  # (long, short) keep-ratio resize before inference; None = as stored
    interpolation: str = "bilinear"  # of that resize: bilinear (mmcv) | bicubic (PIL, the DeepLab-v2 line)
    # Labels at the network's input size (the test_scale-resized image, as BAFFT and ISL write
    # them) instead of the stored image's; a later stage resizes them back with nearest neighbour.
    at_input_size: bool = False
    flip: bool = False
    # logits: upsample the logits, then softmax (IntraDA/CTRL); probabilities: softmax at the
    # network's output size, then upsample (BAFFT's generator, docs/methods.md A.9)
    upsample: str = "logits"


def _probabilities(model, batch, cfg: PseudoLabelStepConfig) -> torch.Tensor:
    height, width = batch["img"].shape[-2:]
    out_size = keep_ratio_size(height, width, cfg.test_scale) if cfg.at_input_size else None
    logits = infer_logits(model, batch["img"], test_scale=cfg.test_scale, flip=cfg.flip, out_size=out_size,
                          upsample=cfg.upsample, interpolation=cfg.interpolation)
    return logits.softmax(dim=1)[0]  # [C, H, W] at the image's (or the input's) size


@register_step("pseudo_labels", PseudoLabelStepConfig)
def pseudo_labels(ctx: StepContext, cfg: PseudoLabelStepConfig) -> dict:
    if cfg.rule not in RULES:
        raise ValueError(f"pseudo_labels: rule must be one of {', '.join(RULES)}, got {cfg.rule!r}")
    model = ctx.network(cfg.network)
    n = ctx.label_space.num_classes
    thresholds = torch.full((n,), cfg.threshold if cfg.rule == "threshold" else 0.0)
    if cfg.rule == "classwise_median":
        hist = torch.zeros(n, cfg.bins, dtype=torch.float64)
        for batch in ctx.batches(cfg.stream):
            conf, pred = _probabilities(model, batch, cfg).max(dim=0)
            hist += confidence_histogram(conf, pred, n, cfg.bins)
        thresholds = classwise_thresholds(hist, cap=cfg.cap).float()
    labelled = total = images = 0
    score = PseudoLabelScore(ctx.label_space.classes)
    for batch in ctx.batches(cfg.stream, labels=True):
        images += 1
        conf, pred = _probabilities(model, batch, cfg).max(dim=0)
        keep = conf >= thresholds.to(conf.device)[pred]
        label = torch.where(keep, pred, torch.full_like(pred, 255))
        ctx.write_label(batch["name"][0], label)
        labelled += int(keep.sum())
        total += keep.numel()
        if "label" in batch:  # diagnostics only (at the pseudo-labels' size)
            score.update(label, batch["label"][0])
    summary = {"images": images, "rule": cfg.rule, "labelled_fraction": labelled / max(total, 1),
               **score.summary()}
    if cfg.rule == "classwise_median":
        summary["thresholds"] = {c: round(float(t), 4) for c, t in zip(ctx.label_space.classes, thresholds)}
    return summary
