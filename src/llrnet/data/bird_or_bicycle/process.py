"""Turning a downloaded OpenImages JPEG into a dataset image, as the original did.
More: docs/data.md, "llrnet.data.bird_or_bicycle.process"."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from llrnet.core.http import ContentError

#: Side of every stored image, in pixels.
IMAGE_SIZE = 299


def resize_and_crop(image: Image.Image, size: int = IMAGE_SIZE) -> Image.Image:
    """Resize so the shorter side is ``size`` (bilinear), then center-crop ``size`` x ``size``.

    The longer side is scaled by the same factor and rounded to the nearest
    pixel; the crop offset is ``(longer - size) // 2``.
    """
    width, height = image.size
    if width <= height:
        new_size = (size, max(size, round(height * size / width)))
    else:
        new_size = (max(size, round(width * size / height)), size)
    resized = image.resize(new_size, Image.Resampling.BILINEAR)
    left = (new_size[0] - size) // 2
    top = (new_size[1] - size) // 2
    return resized.crop((left, top, left + size, top + size))


def process_image_bytes(data: bytes) -> bytes:
    """Downloaded image bytes -> the stored 299x299 RGB JPEG bytes.

    Raises:
        ContentError: the bytes are not a complete, decodable image.
    """
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            rgb = image.convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise ContentError(f"not a decodable image ({type(error).__name__}: {error})") from None
    out = io.BytesIO()
    resize_and_crop(rgb).save(out, format="JPEG")  # Pillow default quality: 75
    return out.getvalue()


def check_stored_image(path: Path, size: int = IMAGE_SIZE) -> str | None:
    """Why the file at ``path`` is not a valid stored image, or None if it is.

    Valid: a JPEG that decodes completely and is ``size`` x ``size``.
    """
    try:
        with Image.open(path) as image:
            if image.format != "JPEG":
                return f"not a JPEG (format {image.format})"
            if image.size != (size, size):
                return f"size {image.size[0]}x{image.size[1]}, expected {size}x{size}"
            image.load()
    except FileNotFoundError:
        return "missing"
    except (OSError, SyntaxError, ValueError) as error:
        return f"not decodable ({type(error).__name__}: {error})"
    return None
