"""Decode heads (protocol in :mod:`udaseg.models.heads.base`). Importing registers ``daformer``,
``segformer``, ``deeplabv2_aspp`` and ``proda_aspp``."""

from udaseg.models.heads import daformer, deeplabv2  # noqa: F401  (registration)
from udaseg.models.heads.base import DecodeHead
from udaseg.models.heads.daformer import DAFormerHead
from udaseg.models.heads.deeplabv2 import DeepLabV2ASPPHead, ProDAHead

__all__ = ["DAFormerHead", "DecodeHead", "DeepLabV2ASPPHead", "ProDAHead"]
