"""Segmentation models: registries of backbones and heads, one entry point.

>>> from udaseg.models import create_model
>>> model = create_model({"backbone": "mit_b0", "head": "daformer", "num_classes": 19})
>>> logits = model(model.normalize(img_uint8))      # [B, 19, H/4, W/4]

See :mod:`udaseg.models.factory` for the config keys, :mod:`udaseg.models.backbones.base` and
:mod:`udaseg.models.heads.base` for the protocols, :mod:`udaseg.models.segmentor` for the
normalisation conventions, :mod:`udaseg.models.optim` for parameter groups and
:mod:`udaseg.models.weights` for loading weights.
"""

from udaseg.models.backbones import Backbone
from udaseg.models.factory import (
    MODEL_KEYS,
    create_backbone,
    create_head,
    create_model,
    list_backbones,
    list_heads,
    model_config_dict,
)
from udaseg.models.heads import DecodeHead
from udaseg.models.optim import param_groups
from udaseg.models.registry import BACKBONES, HEADS
from udaseg.models.segmentor import NORMALIZATIONS, EncoderDecoder, Normalization, get_normalization
from udaseg.models.weights import (
    CheckpointMismatchError,
    load_checkpoint,
    load_pretrained,
    load_state_dict_strict,
    read_state_dict,
)

__all__ = [
    "BACKBONES", "HEADS", "MODEL_KEYS", "NORMALIZATIONS", "Backbone", "CheckpointMismatchError", "DecodeHead",
    "EncoderDecoder", "Normalization", "create_backbone", "create_head", "create_model", "get_normalization",
    "list_backbones", "list_heads", "load_checkpoint", "load_pretrained", "load_state_dict_strict",
    "model_config_dict", "param_groups", "read_state_dict",
]
