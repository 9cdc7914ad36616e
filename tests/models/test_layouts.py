"""Reference checkpoints → udaseg's model (udaseg/models/layouts.py): identical logits per layout.

Each test builds a tiny udaseg model, randomises every tensor (BatchNorm statistics included),
writes its weights in a reference code base's layout with the key tables below — written here
from the reference code, independently of the converter's rules — converts them back with
``convert_reference``, loads them strictly into a differently initialised model and compares
the logits with the original's.
"""

from __future__ import annotations

import copy
import json
from functools import cache

import pytest
import torch

from udaseg.models import create_model
from udaseg.models.layouts import LAYOUTS, convert_reference
from udaseg.models.weights import CheckpointMismatchError, load_state_dict_strict

NUM_CLASSES = 5
MIT_DAFORMER = {"backbone": "mit_b0", "head": "daformer", "head_options": {"embed_dim": 16}}
MIT_SEGFORMER = {"backbone": "mit_b0", "head": "segformer", "head_options": {"embed_dim": 16}}
MIT_HRDA = {**MIT_DAFORMER, "hrda": {"hr_crop_size": [32, 32], "hr_slide_stride": [16, 16], "test_window": None,
                                     "attention_embed_dim": 16}}
R50_DEEPLAB = {"backbone": "resnet50_deeplabv2", "head": "deeplabv2_aspp"}
R50_PRODA = {"backbone": "resnet50_deeplabv2", "head": "proda_aspp", "head_options": {"channels": 32, "groups": 8},
             "normalization": "caffe_bgr128"}
META = {"meta": {"iter": 40000, "CLASSES": ["road", "sidewalk"]}}


# -- helpers ---------------------------------------------------------------------------------

@cache
def _template(cfg_json: str) -> torch.nn.Module:
    return create_model(json.loads(cfg_json), num_classes=NUM_CLASSES)  # built once: MiT's init is slow


def randomised_model(cfg: dict, seed: int) -> torch.nn.Module:
    """A model whose every tensor is random (weights, BN statistics, counters), in eval mode."""
    torch.manual_seed(seed)
    model = copy.deepcopy(_template(json.dumps(cfg, sort_keys=True)))
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("num_batches_tracked"):
                t.fill_(int(torch.randint(1, 1000, ())))
            elif name.endswith("running_var"):
                t.uniform_(0.5, 1.5)
            elif name.endswith("running_mean"):
                t.normal_(0.0, 0.1)
            else:
                t.add_(0.02 * torch.randn_like(t))
    return model.eval()


def assert_same_logits(cfg: dict, reference: torch.nn.Module, state: dict, size: int = 64) -> None:
    fresh = randomised_model(cfg, seed=123)
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert not torch.equal(fresh(x), reference(x))
        load_state_dict_strict(fresh, state, source="converted")
        assert torch.equal(fresh(x), reference(x))


def prefixed(prefix: str, state: dict) -> dict:
    return {prefix + k: v for k, v in state.items()}


def noise_like(state: dict) -> dict:
    return {k: torch.randn_like(v.float()) for k, v in state.items()}


# -- key tables of the references (udaseg name → reference name) ------------------------------

def mmseg_keys(state: dict) -> dict:
    """DAFormer's mmseg EncoderDecoder: MiT and DAFormerHead names; the classifier is conv_seg."""
    return {k.replace("decode_head.classifier.", "decode_head.conv_seg."): v for k, v in state.items()}


def hrda_keys(state: dict) -> dict:
    """HRDAHead: the shared DAFormerHead as decode_head.head, the attention head as
    decode_head.scale_attention, both with their own conv_seg."""
    out = {}
    for k, v in state.items():
        if k.startswith("attention_head."):
            k = "decode_head.scale_attention." + k[len("attention_head."):]
        elif k.startswith("decode_head."):
            k = "decode_head.head." + k[len("decode_head."):]
        out[k.replace(".classifier.", ".conv_seg.")] = v
    return out


def nvlabs_segformer_keys(state: dict, embed: int = 16) -> dict:
    """NVlabs SegFormerHead: linear_c1…c4, linear_fuse over cat(c4, c3, c2, c1), linear_pred, and
    BaseDecodeHead's unused conv_seg."""
    out = {}
    for k, v in state.items():
        for i in range(4):
            k = k.replace(f"decode_head.embed_layers.{i}.", f"decode_head.linear_c{i + 1}.")
        k = k.replace("decode_head.fuse_layer.", "decode_head.linear_fuse.")
        k = k.replace("decode_head.classifier.", "decode_head.linear_pred.")
        out[k] = v
    w = out["decode_head.linear_fuse.conv.weight"]
    out["decode_head.linear_fuse.conv.weight"] = torch.cat(
        [w[:, 3 * embed:], w[:, 2 * embed:3 * embed], w[:, embed:2 * embed], w[:, :embed]], dim=1)
    out["decode_head.conv_seg.weight"] = torch.randn(NUM_CLASSES, embed, 1, 1)
    out["decode_head.conv_seg.bias"] = torch.randn(NUM_CLASSES)
    return out


def caffe_resnet_keys(state: dict, head: str) -> dict:
    """AdaptSegNet/ADVENT ResNetMulti: the backbone at the top level, the classifier as ``head``."""
    out = {}
    for k, v in state.items():
        if k.startswith("backbone."):
            out[k[len("backbone."):]] = v
        else:
            out[head + "." + k[len("decode_head."):]] = v
    return out


# ProDA's Classifier_Module2 (udaseg's proda_aspp names → the reference's), first match wins.
PRODA_HEAD = (("branches.", "conv2d_list."), ("se.fc.", "bottleneck.0.se."), ("bottleneck.0.", "bottleneck.1."),
              ("bottleneck.1.", "bottleneck.2."), ("classifier.", "head.1."))


def proda_head_name(name: str) -> str:
    return next(new + name[len(old):] for old, new in PRODA_HEAD if name.startswith(old))


def proda_keys(state: dict) -> dict:
    """ProDA's ResNet101: conv1, bn1, layer1…4, layer5 = Classifier_Module2."""
    return {k[len("backbone."):] if k.startswith("backbone.") else "layer5." + proda_head_name(k[len("decode_head."):]):
            v for k, v in state.items()}


def diga_keys(state: dict) -> dict:
    """DiGA's SegModel: layer0 = Sequential(conv1, bn1, relu, maxpool), layer1…4, final = the head."""
    out = {}
    for k, v in state.items():
        if k.startswith("backbone.conv1."):
            k = "layer0.0." + k[len("backbone.conv1."):]
        elif k.startswith("backbone.bn1."):
            k = "layer0.1." + k[len("backbone.bn1."):]
        elif k.startswith("backbone."):
            k = k[len("backbone."):]
        else:
            k = "final." + proda_head_name(k[len("decode_head."):])
        out[k] = v
    return out


def dacs_checkpoint(student: dict, teacher: dict | None, imnet: dict | None = None, **extra) -> dict:
    state = {**prefixed("model.", student), **(prefixed("ema_model.", teacher) if teacher else {})}
    if imnet is not None:
        state.update(prefixed("imnet_model.", imnet))
    state.update(extra)
    return {**META, "state_dict": state, "optimizer": {"state": {0: {"exp_avg": torch.zeros(3)}}, "param_groups": []}}


# -- identical logits per layout -------------------------------------------------------------

def test_layout_names():
    assert {"udaseg", "mmseg", "hrda", "tigda", "segformer", "mmseg_segformer", "deeplabv2", "advent", "proda",
            "diga"} <= set(LAYOUTS)


@pytest.mark.parametrize("network", ["student", "teacher"])
def test_daformer_dacs_checkpoint(network):
    student, teacher = randomised_model(MIT_DAFORMER, 1), randomised_model(MIT_DAFORMER, 2)
    imnet = mmseg_keys(randomised_model(MIT_DAFORMER, 3).state_dict())
    ckpt = dacs_checkpoint(mmseg_keys(student.state_dict()), mmseg_keys(teacher.state_dict()), imnet)
    state, layout = convert_reference(ckpt, student, network=network, source="daformer.pth")
    assert layout == "mmseg"
    assert_same_logits(MIT_DAFORMER, student if network == "student" else teacher, state)


def test_plain_mmseg_checkpoint_and_forced_layout():
    model = randomised_model(MIT_DAFORMER, 1)
    ckpt = {**META, "state_dict": mmseg_keys(model.state_dict())}
    state, layout = convert_reference(ckpt, model, layout="mmseg")
    assert layout == "mmseg"
    assert_same_logits(MIT_DAFORMER, model, state)


def test_segformer_head_of_the_daformer_code():
    """The SegFormerHead of the DAFormer/HRDA code: linear_c.{i} in stage order, unused conv_seg."""
    model = randomised_model(MIT_SEGFORMER, 1)
    ref = {}
    for k, v in model.state_dict().items():
        k = k.replace("decode_head.embed_layers.", "decode_head.linear_c.")
        k = k.replace("decode_head.fuse_layer.", "decode_head.linear_fuse.").replace("decode_head.classifier.",
                                                                                     "decode_head.linear_pred.")
        ref[k] = v
    ref["decode_head.conv_seg.weight"], ref["decode_head.conv_seg.bias"] = torch.randn(5, 16, 1, 1), torch.randn(5)
    state, layout = convert_reference(dacs_checkpoint(ref, None), model)
    assert layout == "mmseg_segformer"
    assert_same_logits(MIT_SEGFORMER, model, state)


def test_nvlabs_segformer_checkpoint_reverses_the_fusion_blocks():
    model = randomised_model(MIT_SEGFORMER, 1)
    ckpt = {**META, "state_dict": nvlabs_segformer_keys(model.state_dict())}
    state, layout = convert_reference(ckpt, model)
    assert layout == "segformer"
    assert_same_logits(MIT_SEGFORMER, model, state)


@pytest.mark.parametrize("network", ["student", "teacher"])
def test_hrda_and_mic_checkpoint(network):
    student, teacher = randomised_model(MIT_HRDA, 1), randomised_model(MIT_HRDA, 2)
    imnet = hrda_keys(randomised_model(MIT_HRDA, 3).state_dict())
    mic_teacher = prefixed("mic.teacher.ema_model.", noise_like(hrda_keys(teacher.state_dict())))
    ckpt = dacs_checkpoint(hrda_keys(student.state_dict()), hrda_keys(teacher.state_dict()), imnet, **mic_teacher)
    state, layout = convert_reference(ckpt, student, network=network)
    assert layout == "hrda"
    assert_same_logits(MIT_HRDA, student if network == "student" else teacher, state)


def test_hrda_checkpoint_with_single_channel_attention():
    """HRDA's attention_classwise=False ablation: scale_attention's conv_seg has one output."""
    cfg = {**MIT_HRDA, "hrda": {**MIT_HRDA["hrda"], "attention_classwise": False}}
    student = randomised_model(cfg, 1)
    assert student.state_dict()["attention_head.classifier.weight"].shape[0] == 1
    ckpt = dacs_checkpoint(hrda_keys(student.state_dict()), hrda_keys(randomised_model(cfg, 2).state_dict()))
    state, layout = convert_reference(ckpt, student)
    assert layout == "hrda"
    assert_same_logits(cfg, student, state)


@pytest.mark.parametrize("network", ["student", "teacher"])
def test_tigda_checkpoint_drops_the_cmf_head_and_text_tower(network):
    student, teacher = randomised_model(MIT_DAFORMER, 1), randomised_model(MIT_DAFORMER, 2)
    clip_head = {"clip_head.prompt_learner.ctx": torch.randn(16, 8),
                 "clip_head.prompt_learner.meta_net.linear1.weight": torch.randn(2, 32),
                 "clip_head.prompt_learner.token_prefix": torch.randn(5, 1, 8),
                 "clip_head.text_encoder.transformer.resblocks.0.attn.in_proj_weight": torch.randn(24, 8),
                 "clip_head.text_encoder.positional_embedding": torch.randn(77, 8),
                 "clip_head.text_encoder.text_projection": torch.randn(8, 32),
                 "clip_head.embed_layers.0.proj.weight": torch.randn(32, 32),
                 "clip_head.fuse_layer.bottleneck.conv.weight": torch.randn(32, 128, 3, 3),
                 "clip_head.linear_image.weight": torch.randn(256, 256, 2, 2),
                 "clip_head.spatial_block.depthwise.depthwise.weight": torch.randn(1, 1, 3, 3),
                 "clip_head.conv_proj.weight": torch.randn(32, 37, 3, 3),
                 "clip_head.conv_seg.weight": torch.randn(5, 32, 1, 1)}
    ckpt = dacs_checkpoint({**mmseg_keys(student.state_dict()), **clip_head},
                           {**mmseg_keys(teacher.state_dict()), **noise_like(clip_head)})
    state, layout = convert_reference(ckpt, student, network=network)
    assert layout == "tigda"
    assert_same_logits(MIT_DAFORMER, student if network == "student" else teacher, state)


@pytest.mark.parametrize("network", ["student", "teacher"])
def test_ebda_checkpoint_is_the_daformer_layout(network):
    """EBDA trains DAFormer's network with an extra loss: its file is DAFormer's (model, ema_model,
    imnet_model)."""
    student, teacher = randomised_model(MIT_DAFORMER, 4), randomised_model(MIT_DAFORMER, 5)
    ckpt = dacs_checkpoint(mmseg_keys(student.state_dict()), mmseg_keys(teacher.state_dict()),
                           mmseg_keys(student.state_dict()))
    state, layout = convert_reference(ckpt, student, network=network, layout="mmseg")
    assert layout == "mmseg"
    assert_same_logits(MIT_DAFORMER, student if network == "student" else teacher, state)


def test_adaptsegnet_deeplabv2_checkpoint():
    model = randomised_model(R50_DEEPLAB, 1)
    state, layout = convert_reference(caffe_resnet_keys(model.state_dict(), "layer5"), model)
    assert layout == "deeplabv2"
    assert_same_logits(R50_DEEPLAB, model, state, size=33)


def test_old_deeplab_file_without_bn_counters():
    """Files saved before PyTorch 0.4.1 lack num_batches_tracked: the counters are set to zero."""
    model = randomised_model(R50_DEEPLAB, 1)
    ref = {k: v for k, v in caffe_resnet_keys(model.state_dict(), "layer5").items()
           if not k.endswith("num_batches_tracked")}
    state, _ = convert_reference({"state_dict": prefixed("module.", ref)}, model)
    assert int(state["backbone.bn1.num_batches_tracked"]) == 0
    assert_same_logits(R50_DEEPLAB, model, state, size=33)


def test_advent_multi_level_checkpoint_drops_the_layer3_classifier():
    model = randomised_model(R50_DEEPLAB, 1)
    ref = caffe_resnet_keys(model.state_dict(), "layer6")
    for i in range(4):
        ref[f"layer5.conv2d_list.{i}.weight"] = torch.randn(NUM_CLASSES, 1024, 3, 3)
        ref[f"layer5.conv2d_list.{i}.bias"] = torch.randn(NUM_CLASSES)
    state, layout = convert_reference(ref, model)
    assert layout == "advent"
    assert_same_logits(R50_DEEPLAB, model, state, size=33)


def test_proda_checkpoint():
    model = randomised_model(R50_PRODA, 1)
    ckpt = {"ResNet101": {"model_state": proda_keys(model.state_dict()), "objective_vectors": torch.randn(5, 32)},
            "iter": 1000, "best_iou": 0.5}
    state, layout = convert_reference(ckpt, model)
    assert layout == "proda"
    assert_same_logits(R50_PRODA, model, state, size=33)
    with pytest.raises(CheckpointMismatchError, match="no 'teacher' network in this proda checkpoint; it has: student"):
        convert_reference(ckpt, model, network="teacher")


def test_proda_bn_clr_layer_has_no_counterpart():
    model = randomised_model(R50_PRODA, 1)
    ref = proda_keys(model.state_dict())
    ref.update({"bn_pretrain.weight": torch.ones(2048), "bn_pretrain.bias": torch.zeros(2048)})
    with pytest.raises(CheckpointMismatchError, match=r"unexpected \(2\): bn_pretrain.bias, bn_pretrain.weight"):
        convert_reference({"ResNet101": {"model_state": ref}}, model)


def test_diga_student_file():
    model = randomised_model(R50_PRODA, 2)
    state, layout = convert_reference(diga_keys(model.state_dict()), model, source="student.pth")
    assert layout == "diga"
    assert_same_logits(R50_PRODA, model, state, size=33)


def test_udaseg_run_checkpoint_is_recognised():
    student, teacher = randomised_model(MIT_DAFORMER, 1), randomised_model(MIT_DAFORMER, 2)
    modules = {**prefixed("student.", student.state_dict()), **prefixed("teacher.model.", teacher.state_dict()),
               "discriminator.0.weight": torch.randn(4, 5, 3, 3)}
    state, layout = convert_reference({"method": {"modules": modules}, "step": 10}, student, network="teacher")
    assert layout == "udaseg"
    assert_same_logits(MIT_DAFORMER, teacher, state)


# -- what does not fit -----------------------------------------------------------------------

def test_deeplab_file_for_a_daformer_model_lists_the_misfits():
    deeplab = randomised_model(R50_DEEPLAB, 1)
    daformer = randomised_model(MIT_DAFORMER, 1)
    with pytest.raises(CheckpointMismatchError) as err:
        convert_reference(caffe_resnet_keys(deeplab.state_dict(), "layer5"), daformer, source="advent.pth")
    text = str(err.value)
    assert text.startswith("advent.pth: the student network in the deeplabv2 layout")
    assert "missing (" in text and "backbone.block1.0.attn.kv.bias" in text
    assert "unexpected (" in text and "conv1.weight (as backbone.conv1.weight)" in text


def test_head_with_another_class_count_is_a_shape_mismatch():
    model = randomised_model(MIT_DAFORMER, 1)
    other = create_model({**MIT_DAFORMER, "backbone": "mit_b0"}, num_classes=19)
    ckpt = dacs_checkpoint(mmseg_keys(other.state_dict()), None)
    with pytest.raises(CheckpointMismatchError, match=r"shape mismatch \(2\): decode_head.conv_seg.bias \(file \(19,\) "
                                                      r"vs model \(5,\)\), decode_head.conv_seg.weight"):
        convert_reference(ckpt, model, source="cs19.pth")


def test_missing_teacher_names_the_networks_present():
    model = randomised_model(MIT_DAFORMER, 1)
    ckpt = dacs_checkpoint(mmseg_keys(model.state_dict()), None, mmseg_keys(model.state_dict()))
    with pytest.raises(CheckpointMismatchError, match="x.pth: no 'teacher' network in this dacs checkpoint; "
                                                      "it has: student$"):
        convert_reference(ckpt, model, network="teacher", source="x.pth")


def test_unclaimed_keys_and_leftover_tensors_are_errors():
    model = randomised_model(MIT_DAFORMER, 1)
    ckpt = dacs_checkpoint(mmseg_keys(model.state_dict()), None, **{"discriminator.conv.weight": torch.randn(2)})
    with pytest.raises(CheckpointMismatchError, match=r"outside any network \(1\): discriminator.conv.weight"):
        convert_reference(ckpt, model)
    ref = mmseg_keys(model.state_dict())
    ref["decode_head.fuse_layer.image_pool.1.conv.weight"] = torch.randn(16, 64, 1, 1)
    del ref["decode_head.fuse_layer.bottleneck.bn.running_mean"]
    with pytest.raises(CheckpointMismatchError) as err:
        convert_reference({"state_dict": ref}, model)
    assert "missing (1): decode_head.fuse_layer.bottleneck.bn.running_mean" in str(err.value)
    assert "unexpected (1): decode_head.fuse_layer.image_pool.1.conv.weight" in str(err.value)


def test_unknown_layouts_are_named():
    model = randomised_model(MIT_DAFORMER, 1)
    with pytest.raises(CheckpointMismatchError, match="f.pth: no known checkpoint layout fits its keys "
                                                      r"\(tried: udaseg, hrda, .*deeplabv2\)"):
        convert_reference({"encoder.weight": torch.randn(2)}, model, source="f.pth")
    with pytest.raises(CheckpointMismatchError, match="unknown checkpoint layout 'daformer'; known: auto, udaseg"):
        convert_reference({"encoder.weight": torch.randn(2)}, model, layout="daformer")
