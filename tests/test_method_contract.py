"""The contract every registered method keeps (udaseg/methods/registry.py), on tiny inputs:

* one ``train_step`` returns finite ``loss_*`` scalars;
* every parameter that requires grad in each of its ``ddp_modules`` receives a gradient in that
  step — the trainer wraps them with ``find_unused_parameters=False`` (methods/base.py
  ``setup_distributed``), under which an unused parameter stops DDP training;
* ``checkpoint_state`` → ``save_atomic`` → ``load_checkpoint`` → ``load_checkpoint_state`` of a
  fresh method restores every tensor and the optimizers (the trainer's resume path).

A newly registered method fails ``test_every_registered_method_has_a_spec`` until it gets a
tiny configuration in SPECS below.
"""

from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf

from udaseg.config import ScheduleConfig
from udaseg.data.catalog import get_label_space
from udaseg.engine.checkpoint import load_checkpoint, save_atomic
from udaseg.methods import METHODS, MethodContext, get_method_class, list_methods

SEGFORMER = {"name": "tiny", "backbone": "tiny_cnn", "head": "segformer",
             "backbone_options": {"width": 8, "depths": [1, 1, 1, 1]}, "head_options": {"embed_dim": 16}}
DEEPLAB = {"name": "tiny_deeplab", "backbone": "tiny_cnn", "head": "deeplabv2_aspp", "align_corners": True,
           "backbone_options": {"width": 8, "depths": [1, 1, 1, 1], "output_stride": 8}}
PRODA = {"name": "tiny_proda", "backbone": "tiny_cnn", "head": "proda_aspp", "align_corners": True,
         "backbone_options": {"width": 8, "depths": [1, 1, 1, 1], "output_stride": 8},
         "head_options": {"channels": 16, "groups": 4}}
DAF = {**DEEPLAB, "name": "tiny_daf",
       "depth": {"up_channels": 4, "fusion_channels": 8, "kernel_size": 3, "se_reduction": 4, "internal_size": None}}
TRANSLATOR = {"channels": 4, "res_blocks": 1, "disc_channels": 4, "disc_scales": 2}

# name → (model, method options, label space, source batch extras)
SPECS = {
    "source_only": (SEGFORMER, {}, "cityscapes19", ()),
    "oracle": (SEGFORMER, {}, "cityscapes19", ()),
    "advent": (SEGFORMER, {"disc_width": 8}, "cityscapes19", ()),
    "daformer": (SEGFORMER, {"pseudo_ignore_top": 2, "pseudo_ignore_bottom": 2}, "cityscapes19", ()),
    "bafft": (DEEPLAB, {"disc_width": 8, "stuff_bank_size": 2, "thing_bank_size": 3}, "cityscapes19", ()),
    "daf_ida": (DAF, {"disc_width": 4}, "synthia16", ("depth",)),
    "diga": (PRODA, {"styling": "none"}, "cityscapes19", ()),
    "diga_dg": (PRODA, {}, "cityscapes19", ()),
    "diga_semisup": (PRODA, {}, "cityscapes19", ()),
    "diga_translator": (PRODA, TRANSLATOR, "cityscapes19", ()),
}
SIZE = (32, 32)


def test_every_registered_method_has_a_spec():
    # Methods that tests register on the fly (tests/engine/test_trainer.py) live outside udaseg.
    builtin = {name for name in list_methods() if get_method_class(name).__module__.startswith("udaseg.")}
    assert builtin == set(SPECS), "give each registered method a tiny configuration in SPECS"
    assert METHODS.names() == list_methods()


def _build(name: str):
    model, options, space, _ = SPECS[name]
    cls = get_method_class(name)
    cfg = OmegaConf.merge(OmegaConf.structured(cls.Config), {"name": name, **options})
    ctx = MethodContext(model_cfg=OmegaConf.create(model),
                        schedule=OmegaConf.structured(ScheduleConfig(warmup_iters=0)),
                        iters=10, label_space=get_label_space(space), device=torch.device("cpu"))
    torch.manual_seed(0)
    method = cls(cfg, ctx)
    method.train()
    return method, cfg


def _batches(name: str, cfg, method):
    _, _, space, extras = SPECS[name]
    classes = get_label_space(space).num_classes
    g = torch.Generator().manual_seed(0)
    source = {"img": torch.randint(0, 256, (2, 3, *SIZE), dtype=torch.uint8, generator=g),
              "label": torch.randint(0, classes, (2, *SIZE), generator=g)}
    if "depth" in extras:
        source["depth"] = 1.0 + 99.0 * torch.rand((2, *SIZE), generator=g)
    target = None
    if type(method).reads_target(cfg):
        target = {"img": torch.randint(0, 256, (2, 3, *SIZE), dtype=torch.uint8, generator=g),
                  "pseudo_label": torch.randint(0, classes, (2, *SIZE), generator=g)}
    return source, target


@pytest.mark.parametrize("name", sorted(SPECS))
def test_method_contract(name, tmp_path):
    method, cfg = _build(name)
    watched = {}
    for module_name in method.ddp_modules:
        module = getattr(method, module_name, None)
        if module is None:
            continue
        for pname, p in module.named_parameters():
            if p.requires_grad:
                watched[id(p)] = f"{module_name}.{pname}"
    assert watched, f"{name}: no trainable parameter in its ddp_modules {method.ddp_modules}"
    used: set[int] = set()
    handles = [p.register_post_accumulate_grad_hook(lambda t: used.add(id(t)))
               for p in method.parameters() if id(p) in watched]

    source, target = _batches(name, cfg, method)
    method.set_iteration(0)
    losses = method.train_step(source, target, 0)
    for handle in handles:
        handle.remove()

    assert losses and all(k.startswith("loss_") for k in losses), losses
    assert all(math.isfinite(float(v)) for v in losses.values()), losses
    unused = sorted(watched[i] for i in set(watched) - used)
    assert not unused, f"{name}: parameters without a gradient after one train_step (DDP would stop): {unused}"

    path = save_atomic(method.checkpoint_state(), tmp_path / "last.pt")
    restored, _ = _build(name)
    restored.load_checkpoint_state(load_checkpoint(path))
    before, after = method.checkpoint_state(), restored.checkpoint_state()
    assert before["modules"].keys() == after["modules"].keys()
    for key, value in before["modules"].items():
        assert torch.equal(value, after["modules"][key]), f"{name}: {key} differs after the round trip"
    assert before["optimizers"].keys() == after["optimizers"].keys()
    for key, opt in before["optimizers"].items():
        assert opt["state"].keys() == after["optimizers"][key]["state"].keys()
        for index, slot in opt["state"].items():
            for field, value in slot.items():
                other = after["optimizers"][key]["state"][index][field]
                assert torch.equal(torch.as_tensor(value), torch.as_tensor(other)), f"{name}: {key}/{field}"
    assert before["extra"] == after["extra"] or str(before["extra"]) == str(after["extra"])
