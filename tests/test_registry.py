"""The Registry primitive: names, duplicates, unknown names, keyword-only builders."""

from __future__ import annotations

import pytest

from llrnet.errors import UsageError
from llrnet.registry import Registry


def test_name_comes_from_the_function_unless_given() -> None:
    reg: Registry[object] = Registry("widget")

    @reg.register
    def alpha() -> int:
        return 1

    @reg.register("beta")
    def _hidden() -> int:
        return 2

    assert reg.names() == ["alpha", "beta"]
    assert reg.get("alpha") is alpha and reg.get("beta") is _hidden
    assert "alpha" in reg and "gamma" not in reg and len(reg) == 2
    assert list(reg) == ["alpha", "beta"]


def test_duplicates_and_unknown_names_fail_listing_valid_names() -> None:
    reg: Registry[object] = Registry("widget")
    reg.add(int, name="one")
    with pytest.raises(UsageError, match="widget 'one' is registered twice"):
        reg.add(float, name="one")
    with pytest.raises(UsageError, match=r"unknown widget 'two'; valid names: one"):
        reg.get("two")


def test_keyword_only_builders_are_checked_and_arguments_validated() -> None:
    reg: Registry[object] = Registry("builder", keyword_only=True)
    with pytest.raises(UsageError, match=r"keyword-only.*positional: width"):
        reg.add(lambda width=1: width, name="bad")

    @reg.register
    def tiny(*, width: int = 4, depth: int) -> tuple[int, int]:
        return width, depth

    assert reg.arguments("tiny") == {"width": 4, "depth": None}
    assert reg.build("tiny", depth=2) == (4, 2)
    with pytest.raises(UsageError, match=r"takes no argument.*height; valid: depth, width"):
        reg.build("tiny", height=3)
