"""Thing-class ImageNet feature distance (docs/methods.md D3).

L_FD = λ · mean over selected cells of ‖F_student(p) − F_ImageNet(p)‖₂, on the **last backbone
stage** of the source images, against a frozen copy of the initial (ImageNet-pretrained) backbone.
The cells are selected at feature resolution by :func:`downscale_label_ratio`: the label is
one-hot encoded (255 as an extra class), average-pooled with kernel = stride = s (label width //
feature width); each cell takes its majority class, and becomes ignore when the majority is below
``min_ratio`` (0.75) or is the ignore class. Cells whose class is a "thing" class are kept.
Where no cell qualifies the term is **skipped** (a zero with no gradient), not NaN as in the
reference logs (DAFormer #11, #17).

:class:`FeatureDistance` is the add-on (:mod:`udaseg.methods.addons`) that DAFormer's step adds
to its source loss: ``method.fd.weight`` (λ_FD, 0.005; 0 turns it off), ``method.fd.classes``
(None: every cell) and ``method.fd.scale_min_ratio``. With an HRDA model it runs on the context
branch, so the frozen ImageNet backbone sees the downscaled crop.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from udaseg.data.catalog import IGNORE_INDEX
from udaseg.methods.addons import AddOn

# traffic light, traffic sign, person, rider, car, truck, bus, train, motorcycle, bicycle
THING_CLASSES = (6, 7, 11, 12, 13, 14, 15, 16, 17, 18)


def downscale_label_ratio(label: torch.Tensor, scale: int, min_ratio: float, num_classes: int,
                          ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Majority label per ``scale``×``scale`` cell of ``label`` [B,H,W] → [B,H//s,W//s]."""
    if scale < 1:
        raise ValueError(f"scale must be ≥ 1, got {scale}")
    x = label.clone()
    x[x == ignore_index] = num_classes
    one_hot = F.one_hot(x, num_classes + 1).permute(0, 3, 1, 2).float()
    pooled = F.avg_pool2d(one_hot, kernel_size=scale)
    ratio, out = pooled.max(dim=1)
    out[out == num_classes] = ignore_index
    out[ratio < min_ratio] = ignore_index
    return out


def feature_distance(student_feat: torch.Tensor, imnet_feat: torch.Tensor, label: torch.Tensor,
                     num_classes: int, classes: tuple[int, ...] | None = THING_CLASSES,
                     min_ratio: float = 0.75) -> torch.Tensor | None:
    """Mean ‖F_s − F_imnet‖₂ over the cells of ``classes`` (all cells if ``classes`` is None);
    None when no cell qualifies."""
    distance = torch.norm(student_feat.float() - imnet_feat.float(), p=2, dim=1)  # [B, h, w]
    if classes is None:
        return distance.mean()
    # The reference's scale is the width ratio; the height ratio bounds it so that a label lower
    # than one cell (an HRDA context branch on a tiny crop) still gives one row of cells.
    scale = max(1, min(label.shape[-1] // student_feat.shape[-1], label.shape[-2] // student_feat.shape[-2]))
    cells = downscale_label_ratio(label, scale, min_ratio, num_classes)
    cells = cells[:, : distance.shape[1], : distance.shape[2]]
    mask = torch.isin(cells, torch.tensor(classes, device=cells.device))
    if not bool(mask.any()):
        return None
    return distance[mask].mean()


@dataclass
class FeatureDistanceConfig:
    weight: float = 0.005  # λ_FD; 0 turns the ImageNet feature distance off
    classes: list[int] | None = field(default_factory=lambda: list(THING_CLASSES))  # None: every cell
    scale_min_ratio: float = 0.75


def imagenet_backbone(model_cfg, student, num_classes: int):
    """DAFormer's frozen "ImageNet model" for the feature distance: the backbone holding its
    pretrained weights, as the reference builds it from the model config. When the student starts
    from another run (``model.init_from``: the demo's source-only model, a released checkpoint) its
    backbone no longer holds them, so a fresh backbone is built from ``model.pretrained``;
    otherwise it is a copy of the student's backbone as initialised (random init included)."""
    from udaseg.models import create_model, model_config_dict

    plain = model_config_dict(model_cfg)
    if plain.get("init_from") and plain.get("pretrained"):
        plain.update(init_from=None, hrda=None, depth=None)
        return create_model(plain, num_classes=num_classes).backbone
    return copy.deepcopy(student.backbone)


class FeatureDistance(AddOn):
    """λ_FD·L_FD on the last backbone stage of the source images, against the frozen ImageNet
    backbone (the method's ``imnet_backbone``), as a term of the source loss ("loss_fd")."""

    key = "fd"

    def build(self, method):
        self.backbone = imagenet_backbone(method.ctx.model_cfg, method.student, method.ctx.num_classes).eval()
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        return {"imnet_backbone": self.backbone}

    def source_losses(self, method, s):
        img = method.student.context_view(s.src_img) if method.hrda else s.src_img  # HRDA: the context branch
        with torch.no_grad(), method.autocast():
            imnet_feat = self.backbone(img)[-1]
        distance = feature_distance(s.src_feats[-1], imnet_feat, s.src_label, method.ctx.num_classes,
                                    classes=tuple(self.cfg.classes) if self.cfg.classes is not None else None,
                                    min_ratio=self.cfg.scale_min_ratio)
        return {} if distance is None else {"loss_fd": self.cfg.weight * distance}
