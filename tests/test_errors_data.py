"""Error paths of llrnet.data: each raises with an actionable message."""

from __future__ import annotations

import pytest

from llrnet.data import digits, two_class_digits
from llrnet.errors import UsageError


def test_digits_unknown_split() -> None:
    with pytest.raises(UsageError, match="unknown digits split 'val'"):
        digits("val")  # type: ignore[arg-type]


def test_digits_bad_classes_and_size() -> None:
    with pytest.raises(UsageError, match="exactly two classes"):
        two_class_digits("train", classes=(1, 2, 3))  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="distinct digits"):
        two_class_digits("train", classes=(3, 3))
    with pytest.raises(UsageError, match=r"digits 0\.\.9"):
        two_class_digits("train", classes=(3, 12))
    with pytest.raises(UsageError, match="positive integer"):
        two_class_digits("train", size=0)
