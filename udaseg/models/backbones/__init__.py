"""Backbones: all follow the protocol of :mod:`udaseg.models.backbones.base`. Importing this
package registers MiT-B0…B5, the DeepLab-v2 ResNets, EfficientNet-Lite0 and the tiny CPU CNN;
``timm:<model>`` names are resolved on demand."""

from udaseg.models.backbones import efficientnet_lite, mit, resnet_deeplab, tiny_cnn  # noqa: F401  (registration)
from udaseg.models.backbones.base import Backbone
from udaseg.models.backbones.efficientnet_lite import EfficientNetLite0
from udaseg.models.backbones.mit import MiT
from udaseg.models.backbones.resnet_deeplab import DeepLabV2ResNet
from udaseg.models.backbones.timm_adapter import TIMM_PREFIX, TimmBackbone
from udaseg.models.backbones.tiny_cnn import TinyCNN

__all__ = ["Backbone", "DeepLabV2ResNet", "EfficientNetLite0", "MiT", "TIMM_PREFIX", "TimmBackbone", "TinyCNN"]
