"""The one registry mechanism: decorator registration, the name attribute, lazy loading of the
built-in modules, and an unknown name's error with the nearest registered one."""

from __future__ import annotations

import pytest

from udaseg.registry import Registry


def test_register_get_and_suggest():
    things = Registry("thing", error=LookupError)

    @things.register("alpha", name_attribute="thing_name")
    class Alpha:
        pass

    @things.register("beta")
    def beta(**options):
        return options

    assert things.get("alpha") is Alpha and Alpha.thing_name == "alpha"
    assert things.build("beta", x=1) == {"x": 1} and things.names() == ["alpha", "beta"]
    with pytest.raises(LookupError, match=r"unknown thing 'alpah' \(did you mean 'alpha'\?\); registered: alpha, beta"):
        things.get("alpah")
    with pytest.raises(ValueError, match="registered twice"):
        things.add("beta", Alpha)


def test_methods_and_datasets_learn_their_registered_names():
    from udaseg.data.registry import get_dataset_class
    from udaseg.methods.registry import get_method_class

    assert get_method_class("daformer").method_name == "daformer"
    assert get_dataset_class("cityscapes").name == "cityscapes"
