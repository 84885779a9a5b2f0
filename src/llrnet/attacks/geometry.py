"""Image geometry of the challenge's spatial attacks, batched on tensors.
More: docs/attacks.md, "llrnet.attacks.geometry"."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def to_uint8_levels(x: Tensor) -> Tensor:
    """``(x * 255).astype(uint8)`` as float levels 0..255 (truncation, like numpy)."""
    return torch.floor(x.float() * 255.0).clamp(0.0, 255.0)


def _round_half_up(v: Tensor) -> Tensor:
    """PIL's rounding of 8-bit results: floor(v + 0.5), clipped to 0..255."""
    return torch.floor(v + 0.5).clamp(0.0, 255.0)


def pil_border(x: Tensor, fraction: float) -> Tensor:
    """The spatial grid's black border, in 8-bit levels (float 0..255).

    As the reference ``apply_transformation``: truncate to uint8, shrink to
    ``(H - 2 * int(W * f), W - 2 * int(H * f))`` with PIL's bilinear (which
    antialiases when shrinking, matched by ``interpolate(antialias=True)``),
    round, and pad black: ``int(H * f)`` pixels left/right and ``int(W * f)``
    top/bottom (224, f = 0.15: shrink to 158, pad 33).
    """
    _, _, h, w = x.shape
    pad_x = int(float(h) * fraction)
    pad_y = int(float(w) * fraction)
    q = to_uint8_levels(x)
    inner = (h - 2 * pad_y, w - 2 * pad_x)
    if inner != (h, w):
        q = _round_half_up(
            F.interpolate(q, size=inner, mode="bilinear", align_corners=False, antialias=True)
        )
    return F.pad(q, (pad_x, pad_x, pad_y, pad_y))


def _sample(images: Tensor, xs: Tensor, ys: Tensor, padding: str) -> Tensor:
    """Bilinear sample ``images`` [P, C, H, W] at index coordinates ``xs``, ``ys`` [P, H', W']."""
    _, _, h, w = images.shape
    gx = xs * (2.0 / max(w - 1, 1)) - 1.0
    gy = ys * (2.0 / max(h - 1, 1)) - 1.0
    grid = torch.stack([gx, gy], dim=-1).to(images.dtype)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode=padding, align_corners=True)


def pil_affine(
    images: Tensor, dx: Tensor, dy: Tensor, angle: Tensor, *, pad: tuple[int, int] = (0, 0)
) -> Tensor:
    """torchvision 0.2's ``affine(angle, translate=(dx, dy), scale=1, shear=0, BILINEAR)``.

    ``images`` [P, C, H, W] (8-bit levels, float), one transform per image
    (``dx``, ``dy`` in pixels, ``angle`` in degrees, each [P]). Output pixel
    (i, j) reads PIL's continuous point ``M^-1 ((i, j) + 0.5 - c - t) + c`` with
    centre ``c = (W/2 + 0.5, H/2 + 0.5)`` (torchvision 0.2's choice), samples
    bilinearly with edge clamping inside the image and black outside (PIL's
    ``bilinear_filter``), and rounds to 8 bits. Positive ``angle`` turns the
    content clockwise on screen, positive ``dx``/``dy`` move it right/down.

    ``pad=(px, py)`` renders a larger canvas [P, C, H + 2 py, W + 2 px] whose
    pixel (i + px, j + py) is output pixel (i, j); output pixels outside the
    H x W frame follow the same formula. Then the output for an extra
    *integer* translation (a, b) is the crop starting at (px - a, py - b).

    The index-space map is turned into one ``affine_grid`` theta per image, so
    all transforms of a batch are sampled by a single ``grid_sample``.
    """
    p, _, h, w = images.shape
    px, py = pad
    hc, wc = h + 2 * py, w + 2 * px
    a = angle.to(torch.float64) * (math.pi / 180.0)
    cos, sin = torch.cos(a), torch.sin(a)
    cx, cy = w * 0.5 + 0.5, h * 0.5 + 0.5
    tx = dx.to(torch.float64)
    ty = dy.to(torch.float64)
    # Inverse matrix exactly as torchvision 0.2's _get_inverse_affine_matrix.
    m0, m1, m3, m4 = cos, sin, -sin, cos
    m2 = m0 * (-cx - tx) + m1 * (-cy - ty) + cx
    m5 = m3 * (-cx - tx) + m4 * (-cy - ty) + cy
    # Canvas pixel (i', j') is output pixel (i' - px, j' - py); its source index is
    # xs = m0 (i' - px + .5) + m1 (j' - py + .5) + m2 - .5. In normalized
    # coordinates (align_corners=True): i' = (u + 1)(Wc - 1) / 2, gx = 2 xs / (W - 1) - 1.
    sw, sh = max(w - 1, 1), max(h - 1, 1)
    kx, ky = (wc - 1) / 2.0, (hc - 1) / 2.0
    cx0 = m0 * (0.5 - px) + m1 * (0.5 - py) + m2 - 0.5
    cy0 = m3 * (0.5 - px) + m4 * (0.5 - py) + m5 - 0.5
    row0 = [m0 * kx, m1 * ky, m0 * kx + m1 * ky + cx0]
    row1 = [m3 * kx, m4 * ky, m3 * kx + m4 * ky + cy0]
    theta = torch.stack(
        [
            torch.stack([v * (2.0 / sw) for v in row0[:2]] + [row0[2] * (2.0 / sw) - 1.0], dim=1),
            torch.stack([v * (2.0 / sh) for v in row1[:2]] + [row1[2] * (2.0 / sh) - 1.0], dim=1),
        ],
        dim=1,
    ).to(device=images.device, dtype=torch.float32)
    grid = F.affine_grid(theta, [p, 1, hc, wc], align_corners=True)
    # PIL fills black where the continuous source point leaves [0, W) x [0, H).
    lim_x, lim_y = 1.0 + 1.0 / sw, 1.0 + 1.0 / sh
    gx, gy = grid[..., 0], grid[..., 1]
    inside = (gx >= -lim_x) & (gx < lim_x) & (gy >= -lim_y) & (gy < lim_y)
    out = F.grid_sample(images, grid.to(images.dtype), mode="bilinear", padding_mode="border",
                        align_corners=True)
    out = out * inside[:, None].to(out.dtype)
    return _round_half_up(out)


def tf_resize_legacy(x: Tensor, size: tuple[int, int]) -> Tensor:
    """TF1 ``resize_images`` bilinear with ``align_corners=False`` (no half-pixel centres).

    Output pixel i reads source point ``i * in / out`` (index coordinates),
    the upper neighbour clamped to the last row/column; no antialiasing.
    """
    n, _, h, w = x.shape
    oh, ow = size
    ys = torch.arange(oh, device=x.device, dtype=torch.float32) * (h / oh)
    xs = torch.arange(ow, device=x.device, dtype=torch.float32) * (w / ow)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return _sample(x, gx.expand(n, oh, ow), gy.expand(n, oh, ow), "border")


def tf_border(x: Tensor, border: int) -> Tensor:
    """The random-spatial border: resize to ``(H - b, W - b)``, pad ``b`` black per side.

    The reference ``apply_black_border`` (224, b = 20: 204 content in a 244
    frame). Float in, float out.
    """
    _, _, h, w = x.shape
    resized = tf_resize_legacy(x, (h - border, w - border)) if border else x
    return F.pad(resized, (border, border, border, border))


def tf_rotate_translate(
    images: Tensor, dx: Tensor, dy: Tensor, angle: Tensor, out_size: tuple[int, int],
    *, pad: int = 50,
) -> Tensor:
    """The reference ``tf_apply_transformation`` on a bordered batch [P, C, H', W'].

    Pad ``pad`` black pixels, rotate counter-clockwise by ``angle`` degrees
    about the centre (``tf.contrib.image.rotate``, bilinear, black fill), then
    translate so content moves by (+dx, +dy) (``transform`` with
    ``[1, 0, -dx, 0, 1, -dy, 0, 0]``, bilinear), then crop the centre
    ``out_size`` (``resize_image_with_crop_or_pad``). Two resamplings, as the
    original. ``dx``, ``dy``, ``angle`` are [P].
    """
    p, _, h, w = images.shape
    x = F.pad(images, (pad, pad, pad, pad))
    hp, wp = h + 2 * pad, w + 2 * pad
    device = images.device
    a = angle.to(device, torch.float64) * (math.pi / 180.0)
    cos, sin = torch.cos(a), torch.sin(a)
    x_off = ((wp - 1) - (cos * (wp - 1) - sin * (hp - 1))) / 2.0
    y_off = ((hp - 1) - (sin * (wp - 1) + cos * (hp - 1))) / 2.0
    yy, xx = torch.meshgrid(
        torch.arange(hp, device=device, dtype=torch.float64),
        torch.arange(wp, device=device, dtype=torch.float64),
        indexing="ij",
    )
    view = (p, 1, 1)
    xs = cos.reshape(view) * xx - sin.reshape(view) * yy + x_off.reshape(view)
    ys = sin.reshape(view) * xx + cos.reshape(view) * yy + y_off.reshape(view)
    x = _sample(x, xs.float(), ys.float(), "zeros")
    tx = dx.to(device, torch.float64).reshape(view)
    ty = dy.to(device, torch.float64).reshape(view)
    x = _sample(x, (xx - tx).float(), (yy - ty).float(), "zeros")
    oh, ow = out_size
    top, left = (hp - oh) // 2, (wp - ow) // 2
    return x[:, :, top : top + oh, left : left + ow]
