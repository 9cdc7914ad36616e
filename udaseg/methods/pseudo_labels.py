"""Pseudo-labels of the self-training methods (docs/methods.md D1.2).

The teacher's logits are upsampled to the crop, soft-maxed; the pseudo-label is the arg-max. The
quality weight is **one scalar per batch** (the reference's choice): the fraction of all target
pixels of the batch whose confidence reaches τ (0.968). No pixel is dropped; confidence only sets
the scalar. ``threshold=None`` gives weight 1 (a MIC ablation).

Pseudo-label crop, DAFormer's "v1": the weight of the top and bottom rows of the target crop is
zeroed (15 and 120 rows of a 512 crop of 1024×512 Cityscapes: rectification artefacts and the ego
car's bonnet). HRDA/MIC's "v2" margins live in the data pipeline instead.
"""

from __future__ import annotations

import torch

from udaseg.data.catalog import IGNORE_INDEX
from udaseg.methods.losses import nearest_labels, upsample_to


@torch.no_grad()
def pseudo_label(teacher_logits: torch.Tensor, size: tuple[int, int], threshold: float | None = 0.968
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(label [B,H,W] int64, weight [B,H,W] float, confidence [B,H,W])`` for teacher logits
    [B,C,h,w] upsampled to ``size``. ``weight`` is the batch scalar q everywhere."""
    prob = torch.softmax(upsample_to(teacher_logits.float(), size), dim=1)
    confidence, label = prob.max(dim=1)
    if threshold is None:
        weight = torch.ones_like(confidence)
    else:
        q = (confidence >= threshold).float().mean()
        weight = q * torch.ones_like(confidence)
    return label, weight, confidence


def crop_pseudo_weight(weight: torch.Tensor, ignore_top: int = 0, ignore_bottom: int = 0) -> torch.Tensor:
    """Zero the weight of the top ``ignore_top`` and bottom ``ignore_bottom`` rows (v1 crop)."""
    if ignore_top < 0 or ignore_bottom < 0:
        raise ValueError("pseudo-label crop rows must be non-negative")
    if ignore_top + ignore_bottom >= weight.shape[1]:
        raise ValueError(f"the pseudo-label crop ({ignore_top} top + {ignore_bottom} bottom rows) leaves nothing "
                         f"of a {weight.shape[1]}-row crop; set method.pseudo_ignore_top/bottom for this crop size")
    weight = weight.clone()
    if ignore_top:
        weight[:, :ignore_top, :] = 0
    if ignore_bottom:
        weight[:, weight.shape[1] - ignore_bottom:, :] = 0
    return weight


# -- BAFFT / SIM class-wise thresholds (docs/methods.md A.9) -----------------------------
# The reference sorts the max-probabilities of every pixel predicted as c over the whole split and
# takes the one at index round(0.5·N_c); here the split is summarised by per-class histograms of
# those confidences, accumulated image by image, so the split's probabilities are never held.


def confidence_histogram(prob_max: torch.Tensor, pred: torch.Tensor, num_classes: int, bins: int = 1000
                         ) -> torch.Tensor:
    """[num_classes, bins] float64 counts (on the CPU, to add up over a split): pixel x with arg-max
    ``pred[x] = c`` and max-probability ``p = prob_max[x]`` counts in row c, bin floor(p·bins)
    (bins are [b/bins, (b+1)/bins); p = 1 falls in the last). Pixels with ``pred`` outside
    [0, num_classes) (e.g. 255) are skipped. Any shapes, as long as the two agree."""
    if prob_max.shape != pred.shape:
        raise ValueError(f"prob_max {tuple(prob_max.shape)} and pred {tuple(pred.shape)} differ in shape")
    pred = pred.reshape(-1).long()
    valid = (pred >= 0) & (pred < num_classes)
    b = (prob_max.reshape(-1).float() * bins).floor().long().clamp_(0, bins - 1)
    flat = pred[valid] * bins + b[valid]
    counts = torch.bincount(flat, minlength=num_classes * bins)
    return counts.view(num_classes, bins).to("cpu", torch.float64)


def classwise_thresholds(hist: torch.Tensor, cap: float = 0.9) -> torch.Tensor:
    """[C] thresholds τ_c = min(median_c, cap) from [C, bins] confidence histograms; 0 for a class
    with no pixels (never predicted). The median is the reference's element at sorted index
    round(0.5·N_c) (half to even, as ``np.round``), read as the **lower edge** of the bin that holds
    it: with ``bins`` bins τ_c lies in (median_c − 1/bins, median_c] (1000 bins: within 0.001 below
    the exact value, up to float rounding at bin edges), so every pixel the exact rule keeps is
    kept, plus at most those of the median's own bin."""
    if hist.ndim != 2:
        raise ValueError(f"hist must be [classes, bins], got shape {tuple(hist.shape)}")
    hist = hist.to(torch.float64)
    n_classes, bins = hist.shape
    total = hist.sum(dim=1)
    rank = torch.round(0.5 * total).clamp(max=(total - 1).clamp(min=0))  # 0-based index into the sorted list
    cumulative = hist.cumsum(dim=1)
    # the bin holding the element of index `rank`: the first bin whose cumulative count exceeds it
    median_bin = (cumulative <= rank[:, None]).sum(dim=1).clamp(max=bins - 1)
    tau = (median_bin.to(torch.float64) / bins).clamp(max=cap)
    return torch.where(total > 0, tau, torch.zeros_like(tau))


class PseudoLabelScore:
    """Diagnostics of an offline pseudo-label split against its (held-back) labels, for the
    report only — no stage reads them. Counts, per ground-truth class c, its pixels, those given any
    pseudo-label, those labelled c, and per pseudo-label class the pixels it was given; pixels whose
    label is ``ignore`` are not counted, unlabelled pseudo-label pixels carry ``ignore`` too."""

    def __init__(self, classes: list[str] | tuple[str, ...], ignore: int = IGNORE_INDEX):
        self.classes, self.ignore = list(classes), ignore
        n = len(self.classes)
        self.gt = torch.zeros(n, dtype=torch.int64)  # ground-truth pixels of c
        self.labelled = torch.zeros(n, dtype=torch.int64)  # ... given a pseudo-label
        self.correct = torch.zeros(n, dtype=torch.int64)  # ... labelled c
        self.given = torch.zeros(n, dtype=torch.int64)  # pixels (with a ground truth) labelled c

    def update(self, pseudo: torch.Tensor, gt: torch.Tensor) -> None:
        """One image: ``pseudo`` [H,W] (``ignore`` = no label) and its labels ``gt``, resized
        (nearest) to the pseudo-labels' size when they differ."""
        gt = nearest_labels(gt[None], pseudo.shape)[0]
        gt, pseudo = gt.flatten().cpu(), pseudo.flatten().cpu()
        n = len(self.classes)
        valid = gt != self.ignore
        kept = valid & (pseudo != self.ignore)
        self.gt += torch.bincount(gt[valid], minlength=n)
        self.labelled += torch.bincount(gt[kept], minlength=n)
        self.correct += torch.bincount(gt[kept & (pseudo == gt)], minlength=n)
        self.given += torch.bincount(pseudo[kept], minlength=n)

    def summary(self) -> dict:
        """``accuracy_vs_labels`` (correct / labelled pixels, over all classes) and ``per_class``:
        of each class's pixels the fraction ``labelled`` and ``correct`` (labelled as that class), and
        the ``precision`` of the pseudo-label class (None where it was never given / never occurs)."""
        scored = int(self.labelled.sum())
        if not scored:
            return {}

        def ratio(a: torch.Tensor, b: torch.Tensor) -> float | None:
            return round(int(a) / int(b), 4) if int(b) else None

        return {"accuracy_vs_labels": int(self.correct.sum()) / scored,
                "per_class": {c: {"labelled": ratio(self.labelled[i], self.gt[i]),
                                  "correct": ratio(self.correct[i], self.gt[i]),
                                  "precision": ratio(self.correct[i], self.given[i])}
                              for i, c in enumerate(self.classes)}}
