"""Which held-out images an evaluation scores: by suite, or found in a folder.
More: docs/data.md, "llrnet.data.evaluation"."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from llrnet.core.errors import InputError
from llrnet.data.bird_or_bicycle import DEFAULT_ROOT, BirdOrBicycle
from llrnet.data.digits import two_class_digits
from llrnet.data.folders import CIFAR10, CIFAR10_FOLDER, imagenet
from llrnet.data.mnist import DEFAULT_MNIST_ROOT, two_class_mnist

__all__ = ["evaluation_dataset", "find_test_split"]


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


def evaluation_dataset(suite: str, folder: str | os.PathLike[str] | None = None
                       ) -> Dataset[Any]:
    """The images an evaluation under ``suite`` scores, from ``folder`` if given.

    * ``bird_or_bicycle``: the bird-or-bicycle test split under ``folder``
      (default :data:`~llrnet.data.DEFAULT_ROOT`);
    * ``two_class_mnist``: MNIST test images of 6 (class 0) and 7 (class 1)
      from a local copy in ``folder`` (default
      :data:`~llrnet.data.mnist.DEFAULT_MNIST_ROOT`);
    * ``digits``: the bundled two-class digits test split (6 = class 0,
      7 = class 1); a folder is an error, the suite is defined on these digits;
    * any other suite (``linf``): the bundled digits, or with ``folder`` the
      test split found there (:func:`find_test_split`).

    Raises:
        InputError: the bird-or-bicycle data or MNIST is missing, a folder was given
            for ``digits``, or the folder holds no known dataset.
    """
    if suite == "bird_or_bicycle":
        root = Path(folder) if folder is not None else Path(DEFAULT_ROOT)
        if not root.expanduser().exists():
            raise InputError(f"bird-or-bicycle data not found at {root}; run `llrnet data "
                             "download` or give its folder (--data)")
        return BirdOrBicycle(root, "test")
    if suite == "two_class_mnist":
        return two_class_mnist(DEFAULT_MNIST_ROOT if folder is None else folder, "test")
    if folder is None:
        return two_class_digits("test")
    if suite == "digits":
        raise InputError("the digits suite uses the bundled digits; leave out the folder "
                         "(--data)")
    return find_test_split(folder)
