"""Batch augmentation used by the loop: invariants and determinism."""

from __future__ import annotations

import pytest
import torch

from llrnet.core import seeding
from llrnet.core.errors import UsageError
from llrnet.data.transforms import cifar_train_transform, random_crop
from llrnet.train.augment import (
    augment,
    low_frequency_field,
    random_contrast_field,
    random_rotate_translate,
)
from llrnet.train.data import ShardedBatches, global_batch_indices, shard


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_flip_only_gives_each_image_or_its_mirror() -> None:
    x = torch.rand(32, 3, 5, 7)
    out = random_crop(x, 0, generator(), flip=True)
    same = (out == x).flatten(1).all(1)
    mirrored = (out == x.flip(-1)).flatten(1).all(1)
    assert bool((same | mirrored).all())
    assert 0 < int(mirrored.sum()) < 32  # some of each


def test_crop_is_a_shifted_window_of_the_reflect_padded_image() -> None:
    x = torch.rand(16, 1, 6, 6)
    out = random_crop(x, 2, generator(3), flip=False)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2), mode="reflect")
    for i in range(16):
        windows = [padded[i, :, r:r + 6, c:c + 6] for r in range(5) for c in range(5)]
        assert any(torch.equal(out[i], w) for w in windows)


def test_rotate_translate_limits_zero_is_identity_and_range_is_kept() -> None:
    x = torch.rand(4, 3, 9, 9)
    assert torch.allclose(random_rotate_translate(x, 0.0, 0.0, generator()), x, atol=1e-6)
    moved = random_rotate_translate(x, 30.0, 2.0, generator())
    assert moved.shape == x.shape and float(moved.min()) >= 0 and float(moved.max()) <= 1
    assert not torch.allclose(moved, x)


def test_pure_shift_moves_content_by_whole_pixels() -> None:
    # With rotation 0 and a shift of s pixels, a bright pixel moves by s (bilinear
    # sampling at integer offsets is exact); shifts are drawn within the limit.
    x = torch.zeros(64, 1, 15, 15)
    x[:, :, 7, 7] = 1.0
    out = random_rotate_translate(x, 0.0, 3.0, generator(1))
    centroid_x = (out.sum(2).squeeze(1) * torch.arange(15.0)).sum(1) / out.sum((1, 2, 3))
    assert bool(((centroid_x - 7).abs() <= 3.0 + 1e-4).all())
    assert float((centroid_x - 7).abs().max()) > 1.0


def test_same_generator_same_result_and_unknown_kind() -> None:
    x = torch.rand(8, 1, 8, 8)
    for kind in ("none", "crop", "flip_crop", "rotate_translate"):
        assert torch.equal(augment(x, kind, generator(5)), augment(x, kind, generator(5)))
    with pytest.raises(UsageError, match="unknown augmentation 'mixup'"):
        augment(x, "mixup", generator())


def test_batch_order_is_a_function_of_seed_and_step_and_shards_partition_it() -> None:
    n, batch = 50, 8  # 6 batches per epoch, 2 images dropped per epoch
    epoch = torch.cat([global_batch_indices(n, batch, 7, s) for s in range(6)])
    assert len(set(epoch.tolist())) == 48
    def at(step: int) -> torch.Tensor:
        return global_batch_indices(n, batch, 7, step)

    assert torch.equal(at(9), at(9))
    assert not torch.equal(at(0), at(6))  # a new permutation each epoch
    whole = global_batch_indices(n, batch, 7, 3)
    assert torch.equal(torch.cat([shard(whole, r, 4) for r in range(4)]), whole)
    resumed = list(ShardedBatches(n, batch, 7, start=3, stop=5, rank=1, world=2))
    assert resumed == [shard(global_batch_indices(n, batch, 7, s), 1, 2).tolist() for s in (3, 4)]


def test_batch_order_comes_from_the_epoch_stream() -> None:
    # Epoch e's permutation is generator(seed, "train", "epoch", e) (see docs/training.md).
    n, batch = 50, 8
    for step in (0, 5, 6, 13):
        epoch, offset = divmod(step, n // batch)
        order = torch.randperm(n, generator=seeding.generator(7, "train", "epoch", epoch))
        assert torch.equal(global_batch_indices(n, batch, 7, step),
                           order[offset * batch:(offset + 1) * batch])


def test_cifar_dataset_transform_is_the_loop_recipe_on_one_image() -> None:
    image = torch.rand(3, 32, 32)
    for seed in range(5):
        torch.manual_seed(seed)
        one = cifar_train_transform()(image)
        batch = random_crop(image[None], 4, torch.Generator().manual_seed(seed), flip=True)
        assert torch.equal(one, batch[0])
    x = torch.rand(4, 3, 32, 32)
    assert torch.equal(augment(x, "flip_crop", generator(2)),
                       random_crop(x, 4, generator(2), flip=True))


def test_every_augmentation_name_has_one_implementation() -> None:
    from typing import get_args

    from llrnet.train.augment import _AUGMENTATIONS, Augment

    assert set(_AUGMENTATIONS) == set(get_args(Augment))


def test_contrast_field_off_is_the_identity_and_on_changes_about_the_share_asked() -> None:
    x = torch.rand(400, 1, 12, 12)
    assert torch.equal(random_contrast_field(x, 0.0, 0.3, generator()), x)
    assert torch.equal(random_contrast_field(x, 1.0, 1.0, generator()), x)  # contrast 1: a = 1
    out = random_contrast_field(x, 0.25, 0.5, generator(4))
    changed = int((out != x).flatten(1).any(1).sum())
    assert 70 <= changed <= 130  # binomial(400, 0.25): mean 100, sd 8.7
    assert torch.equal(out, random_contrast_field(x, 0.25, 0.5, generator(4)))


def test_contrast_field_is_a_convex_blend_bounded_by_the_lowest_contrast() -> None:
    # a * x + (1 - a) * f with a >= min_contrast and f in [0, 1]: a black image stays
    # at or below 1 - min_contrast, a white one at or above min_contrast.
    for value, check in ((0.0, lambda o: float(o.max()) <= 0.6 + 1e-6),
                         (1.0, lambda o: float(o.min()) >= 0.4 - 1e-6)):
        out = random_contrast_field(torch.full((64, 3, 10, 10), value), 1.0, 0.4, generator(1))
        assert check(out)
        assert not torch.equal(out, torch.full_like(out, value))
        # one gray field for every channel
        assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 0], out[:, 2])
    x = torch.rand(64, 1, 10, 10)
    out = random_contrast_field(x, 1.0, 0.0, generator(2))
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_low_frequency_field_spans_zero_to_one_and_is_smooth() -> None:
    field = low_frequency_field(32, 28, 28, generator(3))
    assert field.shape == (32, 1, 28, 28)
    assert torch.allclose(field.amin(dim=(1, 2, 3)), torch.zeros(32))
    assert torch.allclose(field.amax(dim=(1, 2, 3)), torch.ones(32))
    # Neighbouring pixels differ far less than in white noise of the same range.
    step = (field[..., 1:] - field[..., :-1]).abs().mean()
    noise = torch.rand(32, 1, 28, 28)
    assert float(step) < 0.2 * float((noise[..., 1:] - noise[..., :-1]).abs().mean())


def test_contrast_field_refuses_shares_outside_zero_one() -> None:
    x = torch.rand(2, 1, 4, 4)
    with pytest.raises(UsageError, match="photometric probability must be in"):
        random_contrast_field(x, 1.5, 0.5, generator())
    with pytest.raises(UsageError, match="min_contrast must be in"):
        random_contrast_field(x, 0.5, -0.1, generator())
