"""Dataset registry: one entry point, ``create_dataset``, filled by the ``@register_dataset``
decorator of each family module (the timm / detectron2 pattern).

    >>> from udaseg.data.registry import create_dataset, list_datasets
    >>> ds = create_dataset("acdc", "data/acdc", "val", conditions=["night", "fog"])
    >>> sample = ds[0]            # {"img", "label", "name", "meta"}

Options are the keyword-only arguments of the family's ``__init__``; an unknown option is a
:class:`~udaseg.errors.ConfigError` that names it and lists the accepted ones.
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import Any, Callable, TypeVar

from udaseg.errors import ConfigError

_DATASETS: dict[str, type] = {}
_BUILTIN_MODULES = ("gta5", "synthia", "cityscapes", "acdc", "darkzurich", "mapillary", "custom")

T = TypeVar("T", bound=type)


def register_dataset(name: str) -> Callable[[T], T]:
    """Class decorator: register a :class:`~udaseg.data.base.SegDataset` subclass under ``name``."""

    def decorate(cls: T) -> T:
        if name in _DATASETS and _DATASETS[name] is not cls:
            raise ValueError(f"dataset {name!r} is already registered by {_DATASETS[name].__qualname__}")
        cls.name = name
        _DATASETS[name] = cls
        return cls

    return decorate


def _load_builtins() -> None:
    for module in _BUILTIN_MODULES:
        importlib.import_module(f"udaseg.data.{module}")


def list_datasets() -> list[str]:
    _load_builtins()
    return sorted(_DATASETS)


def get_dataset_class(name: str) -> type:
    _load_builtins()
    try:
        return _DATASETS[name]
    except KeyError:
        raise ConfigError(f"unknown dataset {name!r}; expected one of {sorted(_DATASETS)}") from None


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
