"""Source-only and oracle training — the two ends every UDA result is measured between.

``source_only``: supervised training on the labelled source; the target is never read. One
iteration:

1. normalise the source crops; with ``photometric_aug`` apply DACS's colour jitter + blur
   (the control that tells whether a UDA gain is more than augmentation);
2. student forward, cross-entropy against the source labels (``loss_norm`` switch, default the
   mmseg-0.16 mean over all pixels);
3. backward, optimizer step.

``oracle``: the same on the **target's** training labels — the upper bound, which no UDA method
may use.
"""

from __future__ import annotations

from dataclasses import dataclass

from udaseg.methods import register_method
from udaseg.methods.augment import photometric_augment
from udaseg.methods.base import Method, MethodConfig, MethodContext
from udaseg.methods.losses import seg_cross_entropy


@dataclass
class SourceOnlyConfig(MethodConfig):
    name: str = "source_only"
    photometric_aug: bool = False  # DACS colour jitter (p 0.8) + Gaussian blur (p 0.5)


@register_method("source_only")
class SourceOnly(Method):
    Config = SourceOnlyConfig
    uses_target = False

    def __init__(self, cfg: SourceOnlyConfig, ctx: MethodContext):
        super().__init__(cfg, ctx)
        from udaseg.models import create_model

        self.student = create_model(ctx.model_cfg, num_classes=ctx.num_classes)
        self.optimizers["main"] = self.build_student_optimizer()

    def train_step(self, source, target, it):
        img = self.student.normalize(source["img"])
        if self.cfg.photometric_aug:
            img = photometric_augment(img, self.student.normalize, self.student.denormalize)
        with self.autocast():
            logits = self.net("student")(img)
        loss = seg_cross_entropy(logits, source["label"], norm=self.cfg.loss_norm)
        self.backward(loss)
        self.step("main")
        return {"loss_seg": loss.detach()}


@dataclass
class OracleConfig(SourceOnlyConfig):
    name: str = "oracle"


@register_method("oracle")
class Oracle(SourceOnly):
    """Supervised on the target's training labels: the upper bound of the benchmark."""

    Config = OracleConfig
    labelled_stream = "target"
