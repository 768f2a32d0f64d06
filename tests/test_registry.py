"""Registries: one place per kind of part; unknown names get one clear message."""

from __future__ import annotations

import pytest

from adaptrl.errors import ConfigError
from adaptrl.registry import Registry


def test_register_get_and_describe():
    reg: Registry = Registry("widget")
    reg.register("alpha", 1, "the first")

    @reg.register("beta")
    def beta():
        """The second widget.

        More text that is not the description."""

    assert reg.get("alpha") == 1 and reg["beta"] is beta
    assert reg.names() == ("alpha", "beta") and list(reg) == ["alpha", "beta"] and len(reg) == 2
    assert reg.descriptions() == {"alpha": "the first", "beta": "The second widget."}
    assert reg.help() == "alpha or beta"
    assert "alpha" in reg and "gamma" not in reg


def test_unknown_and_duplicate_names():
    reg: Registry = Registry("widget")
    reg.register("likelihood_ratio", 1)
    message = r"unknown widget 'likelihood_ration'\. Did you mean 'likelihood_ratio'\?"
    with pytest.raises(ConfigError, match=message):
        reg.get("likelihood_ration")
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("likelihood_ratio", 2)
