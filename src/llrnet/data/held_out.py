"""The held-out image sets an evaluation scores, by name, and the test split found in a folder.

:data:`HELD_OUT_SETS` names each set with its loader and a one-line help; a
suite (:mod:`llrnet.eval.suites`) names the set it scores by default, so this
layer never knows the suites. :func:`find_test_split` gives "the test split of
whatever dataset is in this folder".
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from llrnet.core.errors import InputError
from llrnet.core.registry import Registry
from llrnet.data.bird_or_bicycle import DEFAULT_ROOT, BirdOrBicycle
from llrnet.data.digits import two_class_digits
from llrnet.data.folders import CIFAR10, CIFAR10_FOLDER, imagenet
from llrnet.data.mnist import DEFAULT_MNIST_ROOT, two_class_mnist

__all__ = ["HELD_OUT_SETS", "HeldOutSet", "find_test_split", "load_held_out"]

Folder = str | os.PathLike[str] | None
Loader = Callable[[Folder], Dataset[Any]]


@dataclass(frozen=True)
class HeldOutSet:
    """A named held-out image set: ``load(folder)`` (None: its default place) and ``help``,
    one line saying what it is and where it is read from."""

    name: str
    help: str
    load: Loader


HELD_OUT_SETS: Registry[HeldOutSet] = Registry("held-out set")
"""Every held-out set an evaluation can score by default, by name."""


def _held_out(name: str, help: str) -> Callable[[Loader], Loader]:
    def register(load: Loader) -> Loader:
        HELD_OUT_SETS.add(HeldOutSet(name, help, load), name=name)
        return load

    return register


def load_held_out(name: str, folder: Folder = None) -> Dataset[Any]:
    """The held-out set ``name`` (a key of :data:`HELD_OUT_SETS`), from ``folder`` if given.

    Raises:
        UsageError: ``name`` is unknown (the valid names are listed).
        InputError: the set's data is missing, or it takes no folder and got one.
    """
    return HELD_OUT_SETS.get(name).load(folder)


def find_test_split(folder: str | os.PathLike[str]) -> Dataset[Any]:
    """The held-out split of the dataset stored in ``folder``, told by its layout.

    * ``folder/cifar-10-batches-bin``: CIFAR-10 test (:class:`~llrnet.data.CIFAR10`,
      no augmentation);
    * ``folder/val``: ImageNet val (:func:`~llrnet.data.imagenet`,
      ``val/<class>/<image>``, Resize + CenterCrop).

    CIFAR-10 is looked for first. Raises :class:`InputError` if ``folder`` is
    not a folder or holds neither layout.
    """
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise InputError(f"{folder} is not a folder")
    if (root / CIFAR10_FOLDER).is_dir():
        return CIFAR10(root, "test", augment=False)
    if (root / "val").is_dir():
        return imagenet(root, "val")
    raise InputError(f"{folder}: expected CIFAR-10 ({CIFAR10_FOLDER}/) or ImageNet "
                     "(val/<class>/<image>)")


@_held_out("bird_or_bicycle", "the bird-or-bicycle test split under llrnet.data.DEFAULT_ROOT")
def _bird_or_bicycle(folder: Folder) -> Dataset[Any]:
    """The bird-or-bicycle test split under ``folder`` (default :data:`DEFAULT_ROOT`)."""
    root = Path(folder) if folder is not None else Path(DEFAULT_ROOT)
    if not root.expanduser().exists():
        raise InputError(f"bird-or-bicycle data not found at {root}; run `llrnet data "
                         "download` or give its folder (--data)")
    return BirdOrBicycle(root, "test")


@_held_out("two_class_mnist", "MNIST test digits 6 and 7 from a local copy (--data, default "
           "~/datasets/mnist; torchvision's layout or the raw idx files)")
def _two_class_mnist(folder: Folder) -> Dataset[Any]:
    """MNIST test images of 6 (class 0) and 7 (class 1) from a local copy in ``folder``
    (default :data:`~llrnet.data.mnist.DEFAULT_MNIST_ROOT`)."""
    return two_class_mnist(DEFAULT_MNIST_ROOT if folder is None else folder, "test")


@_held_out("digits", "the bundled two-class digits test split (6 vs 7)")
def _digits(folder: Folder) -> Dataset[Any]:
    """The bundled two-class digits test split (6 = class 0, 7 = class 1); a folder is an
    error, as the set is these digits."""
    if folder is not None:
        raise InputError("the digits suite uses the bundled digits; leave out the folder "
                         "(--data)")
    return two_class_digits("test")


@_held_out("digits_or_folder", "the bundled two-class digits test split; with --data, CIFAR-10 "
           "test (DIR/cifar-10-batches-bin) or ImageNet val (DIR/val/<class>/)")
def _digits_or_folder(folder: Folder) -> Dataset[Any]:
    """The bundled two-class digits test split, or with ``folder`` the test split found there
    (:func:`find_test_split`)."""
    return two_class_digits("test") if folder is None else find_test_split(folder)
