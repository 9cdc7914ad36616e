"""BAFFT's (and SIM's) class-feature pieces, as small pure functions (docs/methods.md
A.6–A.8, A.10): the source memory banks, stuff regions and thing instances, masked average
pooling, the L1-to-nearest aggregation distance, AIM weights and the inter-class separation.

Everything works on one image at feature resolution: ``features`` [D, h, w], a label map [h, w]
(int64, 255 = ignore) — on source the correctly predicted ground truth, on target the arg-max.

* :func:`resolve_class_split` — the stuff / thing class ids of a label space, from class *names*
  (A.3), so the same config works in the 19-, 16- or any other label space.
* :func:`connected_instances` — 8-connected components of a binary mask, the ``max_instances``
  largest first (A.7; OpenCV's labelling on the CPU: the maps are small, 65×129 at stride 8).
* :func:`image_regions` — one region per stuff class present (its whole mask) and one per thing
  instance (the ``max_instances`` largest components of each thing class present).
* :func:`masked_average` — f̄(mask) = Σ_{x∈mask} F(x) / max(|mask|, eps) (A.6 step 3).
* :class:`FeatureBank` — per-class FIFO ring buffers of pooled vectors, no EMA; ``writes`` counts
  every push, slot = writes mod capacity; :meth:`FeatureBank.ready` is the warm-up gate
  (writes > capacity: more than one full buffer written). Both are registered buffers, so the
  banks travel with ``state_dict`` and survive resume.
* :func:`nearest_l1_distance` — d = min_j (1/D)·‖f − M_j‖₁ (A.8).
* :func:`category_loss`, :func:`instance_loss` — L_cls = Σ_k w_k·d_k and
  L_ins = Σ_k (1/n_k) Σ_i w_{k,i}·d_{k,i} (A.8; w = 1 in step 1, the AIM weight in step 2).
* :func:`aim_weights` — AIM (A.10.2): the released self-weighting w = d (not detached, so the
  term is d²), its detached / clamped variants, or a static per-class weight table.
* :func:`separation_loss` — Σ over (stuff category, thing instance) pairs of
  w_a·w_b·κ·½(1 + cos) with w = 1 for a category and 1/n_c for an instance of class c (A.10.3);
  ``pairs="all"`` extends it to every pair of regions of different classes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# docs/methods.md A.3: the stuff / thing split of the 19 Cityscapes classes (pole, light and sign are things).
STUFF_CLASSES = ("road", "sidewalk", "building", "wall", "fence", "vegetation", "terrain", "sky")
THING_CLASSES = ("pole", "traffic light", "traffic sign", "person", "rider", "car", "truck", "bus", "train",
                 "motorcycle", "bicycle")
# docs/methods.md A.10: the static per-category coefficients of the released train_step2.py (unused there).
AIM_CLASS_WEIGHTS = {"road": 1.0, "sidewalk": 2.0, "building": 1.0, "wall": 5.0, "fence": 1.0, "vegetation": 1.0,
                     "terrain": 1.0, "sky": 10.0, "pole": 10.0, "traffic light": 5.0, "traffic sign": 2.0,
                     "person": 10.0, "rider": 5.0, "car": 1.0, "truck": 1.0, "bus": 2.0, "train": 1.0,
                     "motorcycle": 5.0, "bicycle": 5.0}


def resolve_class_split(class_names: Sequence[str], stuff: Sequence[str], thing: Sequence[str]
                        ) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(stuff ids, thing ids) of a label space. Names the label space lacks are skipped (SYNTHIA's
    16 classes have no terrain, truck or train); a name in both lists is an error."""
    both = sorted(set(stuff) & set(thing))
    if both:
        raise ValueError(f"class(es) {both} are listed both as stuff and as thing")
    index = {name: i for i, name in enumerate(class_names)}
    stuff_ids = tuple(index[n] for n in stuff if n in index)
    thing_ids = tuple(index[n] for n in thing if n in index)
    if not stuff_ids and not thing_ids:
        raise ValueError(f"none of the stuff / thing class names is in the label space {list(class_names)}")
    return stuff_ids, thing_ids


def connected_instances(mask: torch.Tensor | np.ndarray, max_instances: int = 10) -> np.ndarray:
    """[n, h, w] bool: the 8-connected components of a binary [h, w] mask, largest first, at most
    ``max_instances`` (no minimum size). Equal sizes keep raster order of their first pixel."""
    import cv2

    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    mask = np.ascontiguousarray(mask, dtype=np.uint8)
    h, w = mask.shape
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8, ltype=cv2.CV_32S)
    if n <= 1:
        return np.zeros((0, h, w), dtype=bool)
    areas = stats[1:, cv2.CC_STAT_AREA]
    keep = np.argsort(-areas, kind="stable")[:max_instances] + 1
    return labels[None] == keep[:, None, None]


class Regions(NamedTuple):
    """The regions of one image: ``classes`` [N] int64, ``masks`` [N, h, w] float, ``is_thing`` [N]
    bool — stuff categories first (in class-id order), then thing instances (by class, largest first)."""

    classes: torch.Tensor
    masks: torch.Tensor
    is_thing: torch.Tensor


def image_regions(label_map: torch.Tensor, stuff_ids: Sequence[int], thing_ids: Sequence[int],
                  max_instances: int = 10) -> Regions:
    """Stuff categories and thing instances of a [h, w] label map (255 = ignore), on its device."""
    device = label_map.device
    labels = label_map.detach().cpu().numpy()
    present = set(np.unique(labels).tolist())
    classes: list[int] = []
    masks: list[np.ndarray] = []
    is_thing: list[bool] = []
    for k in stuff_ids:
        if k in present:
            classes.append(k)
            masks.append((labels == k)[None])
            is_thing.append(False)
    for k in thing_ids:
        if k in present:
            inst = connected_instances(labels == k, max_instances)
            classes += [k] * len(inst)
            masks.append(inst)
            is_thing += [True] * len(inst)
    h, w = labels.shape
    stacked = np.concatenate(masks) if masks else np.zeros((0, h, w), dtype=bool)
    return Regions(torch.tensor(classes, dtype=torch.long, device=device),
                   torch.from_numpy(stacked).to(device=device, dtype=torch.float32),
                   torch.tensor(is_thing, dtype=torch.bool, device=device))


def masked_average(features: torch.Tensor, masks: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """[N, D] mean feature of each mask: Σ_{x∈mask} F(x) / max(|mask|, eps). ``features`` [D, h, w],
    ``masks`` [N, h, w] (treated as constants); gradients reach ``features`` only."""
    masks = masks.detach().to(features.dtype)
    summed = torch.einsum("nhw,dhw->nd", masks, features)
    return summed / masks.sum(dim=(1, 2)).clamp_min(eps)[:, None]


class FeatureBank(nn.Module):
    """Per-class FIFO ring buffers of ``capacity`` vectors of size ``dim`` (A.6), starting at zero.
    ``entries`` [K, capacity, dim] (fp32) and ``writes`` [K] are buffers (checkpointed)."""

    entries: torch.Tensor  # a buffer
    writes: torch.Tensor  # a buffer

    def __init__(self, class_ids: Sequence[int], capacity: int, dim: int):
        super().__init__()
        if capacity < 1:
            raise ValueError(f"memory bank capacity must be at least 1, got {capacity}")
        self.class_ids = tuple(int(c) for c in class_ids)
        self.row = {c: i for i, c in enumerate(self.class_ids)}
        self.capacity = capacity
        self.register_buffer("entries", torch.zeros(len(self.class_ids), capacity, dim))
        self.register_buffer("writes", torch.zeros(len(self.class_ids), dtype=torch.long))

    def __contains__(self, class_id: int) -> bool:
        return int(class_id) in self.row

    @torch.no_grad()
    def push(self, class_id: int, vectors: torch.Tensor) -> None:
        """Write ``vectors`` [N, dim] of one class in order, each to slot (writes mod capacity)."""
        if vectors.ndim == 1:
            vectors = vectors[None]
        n = vectors.shape[0]
        if n == 0:
            return
        r = self.row[int(class_id)]
        start = int(self.writes[r])
        keep = min(n, self.capacity)  # of more than a full buffer only the last `capacity` survive
        slots = torch.arange(start + n - keep, start + n, device=self.entries.device) % self.capacity
        self.entries[r, slots] = vectors[n - keep:].detach().to(self.entries.dtype)
        self.writes[r] += n

    def ready(self) -> dict[int, bool]:
        """The warm-up gate per class id: more than one full buffer written (writes > capacity)."""
        return dict(zip(self.class_ids, (self.writes > self.capacity).tolist()))

    def bank(self, class_id: int) -> torch.Tensor:
        """[capacity, dim] entries of one class."""
        return self.entries[self.row[int(class_id)]]


def nearest_l1_distance(vectors: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
    """[N]: min_j (1/D)·‖v − bank_j‖₁ — the channel-mean absolute difference to the nearest entry."""
    if vectors.shape[0] == 0:
        return vectors.new_zeros(0)
    dist = torch.cdist(vectors.float()[None], bank.float()[None], p=1.0)[0] / vectors.shape[1]
    return dist.min(dim=1).values


def category_loss(distances: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """L_cls = Σ_k w_k·d_k over the image's stuff categories (0 when there are none)."""
    if weights is not None:
        distances = weights * distances
    return distances.sum()


def instance_loss(distances: torch.Tensor, classes: torch.Tensor, weights: torch.Tensor | None = None
                  ) -> torch.Tensor:
    """L_ins = Σ_k (1/n_k) Σ_i w_{k,i}·d_{k,i}: per thing class the mean over its instances, summed."""
    if weights is not None:
        distances = weights * distances
    if distances.numel() == 0:
        return distances.sum()
    _, inverse, counts = torch.unique(classes, return_inverse=True, return_counts=True)
    return (distances / counts[inverse].to(distances.dtype)).sum()


AIM_MODES = ("self", "self_detached", "class_table", "none")


def aim_weights(distances: torch.Tensor, classes: torch.Tensor, mode: str = "self",
                class_weights: torch.Tensor | None = None, clamp: bool = False) -> torch.Tensor:
    """AIM weights w of the distances d (A.10.2):

    * ``self`` — as released: w = d, not detached (so w·d = d², gradient 2d·∇d);
    * ``self_detached`` — w = stopgrad(d) (gradient d·∇d);
    * ``class_table`` — w = ``class_weights[class]``, a static per-class align-complexity weight;
    * ``none`` — w = 1 (step 1's plain aggregation).

    ``clamp`` bounds the self weights to [0, 1] (the reference's unused ``coff_min/max``)."""
    if mode in ("self", "self_detached"):
        w = distances.detach() if mode == "self_detached" else distances
        return w.clamp(0.0, 1.0) if clamp else w
    if mode == "class_table":
        if class_weights is None:
            raise ValueError("aim_weights(mode='class_table') needs class_weights")
        return class_weights.to(distances.device, distances.dtype)[classes]
    if mode == "none":
        return torch.ones_like(distances)
    raise ValueError(f"AIM mode must be one of {AIM_MODES}, got {mode!r}")


SEPARATION_PAIRS = ("stuff_thing", "all")


def separation_loss(features: torch.Tensor, classes: torch.Tensor, is_thing: torch.Tensor, kappa: float = 1.0,
                    pairs: str = "stuff_thing") -> torch.Tensor:
    """Inter-class separation of one image's target regions (A.10.3):
    Σ_{(a,b)} w_a·w_b·κ·½(1 + cos(f_a, f_b)), w = 1 for a stuff category and 1/n_c for each of the
    n_c instances of thing class c. ``stuff_thing`` (as released): a a stuff category, b a thing
    instance; ``all``: every unordered pair of regions of different classes."""
    if pairs not in SEPARATION_PAIRS:
        raise ValueError(f"separation pairs must be one of {SEPARATION_PAIRS}, got {pairs!r}")
    if features.shape[0] < 2:
        return features.sum() * 0.0
    _, inverse, counts = torch.unique(classes, return_inverse=True, return_counts=True)
    w = torch.where(is_thing, 1.0 / counts[inverse].to(features.dtype), torch.ones_like(classes, dtype=features.dtype))
    unit = F.normalize(features, dim=1, eps=1e-12)
    similarity = 0.5 * (1.0 + unit @ unit.t())
    if pairs == "stuff_thing":
        allowed = (~is_thing)[:, None] & is_thing[None, :]
    else:
        allowed = (classes[:, None] != classes[None, :]).triu(diagonal=1)
    return kappa * (w[:, None] * w[None, :] * similarity * allowed.to(features.dtype)).sum()


def class_weight_table(class_names: Sequence[str], weights: Mapping[str, float], default: float = 1.0) -> torch.Tensor:
    """[C] per-class weights of a label space from a name → weight mapping (``default`` elsewhere)."""
    return torch.tensor([float(weights.get(n, default)) for n in class_names])
