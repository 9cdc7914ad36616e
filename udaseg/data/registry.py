"""Dataset registry: one entry point, ``create_dataset``, filled by the ``@register_dataset``
decorator of each family module (the timm / detectron2 pattern).

    >>> from udaseg.data.registry import create_dataset, list_datasets
    >>> ds = create_dataset("acdc", "data/acdc", "val", conditions=["night", "fog"])
    >>> sample = ds[0]            # {"img", "label", "name", "meta"}

Options are the keyword-only arguments of the family's ``__init__``; an unknown option is a
:class:`~udaseg.errors.ConfigError` that names it and lists the accepted ones.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from udaseg.errors import ConfigError
from udaseg.registry import Registry

if TYPE_CHECKING:
    from udaseg.data.base import SegDataset

# The family modules register themselves on import; the registry imports them on first lookup.
DATASETS = Registry("dataset", error=ConfigError,
                    modules=[f"udaseg.data.{m}" for m in
                             ("gta5", "synthia", "cityscapes", "acdc", "darkzurich", "mapillary", "custom")])

T = TypeVar("T", bound=type)


def register_dataset(name: str) -> Callable[[T], T]:
    """Class decorator: register a :class:`~udaseg.data.base.SegDataset` subclass under ``name``."""
    return DATASETS.register(name, name_attribute="name")


def list_datasets() -> list[str]:
    return DATASETS.names()


def get_dataset_class(name: str) -> type[SegDataset]:
    return DATASETS.get(name)


def dataset_options(name: str) -> dict[str, Any]:
    """The options of dataset ``name`` with their defaults."""
    cls = get_dataset_class(name)
    options: dict[str, Any] = {}
    for klass in cls.__mro__:  # subclass options first, then the base's common ones
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        for param in inspect.signature(init).parameters.values():
            if param.kind is inspect.Parameter.KEYWORD_ONLY:
                options.setdefault(param.name, param.default)
    return options


def create_dataset(name: str, root: str | Path, split: str = "train", **options: Any):
    """Build dataset ``name`` for ``split`` of the folder ``root`` (see each family's docstring)."""
    accepted = dataset_options(name)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ConfigError(f"unknown option(s) {', '.join(map(repr, unknown))} for dataset {name!r}; "
                          f"accepted: {', '.join(sorted(accepted))}")
    return get_dataset_class(name)(root, split, **options)


def open_splits(name: str, root: str | Path, splits: list[str] | None = None, *, labelled: bool = False,
                **options: Any) -> tuple[list, list]:
    """Open dataset ``name`` for several splits of ``root``: the given ``splits``, or every split
    of the family (``labelled``: every labelled one) whose folder exists.

    Returns ``(datasets, missing)`` where ``missing`` holds the :class:`MissingSplitError` of
    splits whose folders are absent. Other construction errors propagate; a missing root raises,
    as does finding no split at all when none were named.
    """
    from udaseg.data.base import MissingSplitError

    cls = get_dataset_class(name)
    root = Path(root)
    if not root.is_dir():
        raise MissingSplitError(f"dataset root {root} does not exist; expected {cls.layout}", root)
    names = list(splits) if splits else list(cls.split_names(root, options, labelled=labelled))
    datasets, missing = [], []
    for split in names:
        try:
            datasets.append(create_dataset(name, root, split, **options))
        except MissingSplitError as err:
            missing.append(err)
    if not datasets and not splits:
        kind = "labelled split" if labelled else "split"
        raise MissingSplitError(
            f"{name}: no {kind} found under {root} (looked for {', '.join(names)}); expected {cls.layout}"
            + (f"\n  {missing[0]}" if missing else ""), root)
    return datasets, missing
