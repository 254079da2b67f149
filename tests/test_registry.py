from __future__ import annotations

import pytest

from percepta.registry import Registry, RegistryError


def test_register_get_and_suggest():
    reg = Registry("widget")

    @reg.register("round_widget")
    def build_round():
        """A round widget."""
        return "round"

    assert reg.build("round_widget") == "round"
    assert reg.names() == ["round_widget"]
    assert next(iter(reg)).help == "A round widget."
    with pytest.raises(RegistryError) as e:
        reg.get("rond_widget")
    assert "Did you mean 'round_widget'" in str(e.value)


def test_duplicate_registration_refused():
    reg = Registry("widget")
    reg.add("a", lambda: 1)
    with pytest.raises(RegistryError, match="already registered"):
        reg.add("a", lambda: 2)
