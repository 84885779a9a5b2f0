"""The Registry primitive: names, duplicates, unknown names, keyword-only builders."""

from __future__ import annotations

import pytest

from llrnet.core.errors import UsageError
from llrnet.core.registry import Registry


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
    reg.add(str, name="three")
    with pytest.raises(UsageError,
                       match=r"\(first by builtins\.int\); registered names: one, three"):
        reg.add(float, name="one")
    with pytest.raises(UsageError, match=r"unknown widget 'two'; valid names: one, three"):
        reg.get("two")
    assert reg.get("one") is int  # the failed registrations changed nothing


def test_unknown_name_in_an_empty_registry() -> None:
    with pytest.raises(UsageError, match=r"unknown widget 'x'; valid names: \(none\)"):
        Registry("widget").get("x")


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


def test_private_parameters_are_hidden_and_cannot_be_passed() -> None:
    reg: Registry[object] = Registry("suite", keyword_only=True)

    @reg.register
    def quick(*, steps: int = 2, _cache: dict[str, int] | None = None) -> int:
        return steps

    assert reg.arguments("quick") == {"steps": 2}
    assert reg.build("quick", steps=3) == 3
    with pytest.raises(UsageError,
                       match=r"suite 'quick' takes no argument\(s\) _cache; valid: steps"):
        reg.build("quick", _cache={})


def test_register_with_a_name_works_for_loops_of_builders() -> None:
    reg: Registry[object] = Registry("model", keyword_only=True)
    for width in (1, 2):
        def build(*, _width: int = width) -> int:
            return _width

        reg.register(f"net_{width}")(build)
    assert reg.names() == ["net_1", "net_2"]
    assert reg.build("net_2") == 2
    with pytest.raises(UsageError, match="a model needs a name"):
        reg.add(object())
