"""Safe image decoding: every file either becomes an RGB ``PIL.Image`` the way a
person would see it (EXIF orientation applied, alpha on white) or raises
``BadImage`` with a short reason that the indexer records as the skip reason.

Reasons are a fixed vocabulary so that skips can be counted by kind:
"empty file", "not an image", "truncated image", "decompression bomb: WxH",
"unreadable: <errno text>", "corrupt image: <detail>".
"""

from __future__ import annotations

import os
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from localq.errors import BadImage

# Suffixes (lower case, with the dot) that the folder scanner treats as images.
# Everything Pillow decodes out of the box that people keep photos in.
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".bmp", ".dib", ".gif", ".tif", ".tiff"}
)

# Refuse images whose declared size exceeds this many pixels before decoding them.
# It equals the point where Pillow itself raises (2 x its 89.5M warning limit), so a
# 200 MP phone panorama just passes (~600 MB of RGB while decoding) while a PNG that
# claims 100k x 100k pixels is refused from its header alone.
MAX_PIXELS = 2 * 89_478_485

# JPEG orientations 5-8 are rotations by 90 or 270 degrees: width and height swap.
_SWAPS_AXES = {5, 6, 7, 8}
_EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True)
class DecodedImage:
    image: Image.Image  # RGB, oriented, possibly reduced by JPEG draft mode
    width: int  # of the full-resolution image as displayed (after orientation)
    height: int


def is_image_path(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def read_image(
    path: str | os.PathLike, target_size: int | None = None, *, max_pixels: int | None = None
) -> DecodedImage:
    """Decode ``path`` to RGB. With ``target_size`` (the encoder's input side), large
    JPEGs are decoded at a reduced DCT scale that still leaves at least twice that
    many pixels on each side: a 4000x3000 photo decodes ~10x faster this way."""
    limit = MAX_PIXELS if max_pixels is None else max_pixels
    try:
        fh = open(path, "rb")
    except OSError as exc:
        raise BadImage(f"unreadable: {exc.strerror or exc}") from exc
    width = height = 0
    with fh:
        try:
            if os.fstat(fh.fileno()).st_size == 0:
                raise BadImage("empty file")
            with warnings.catch_warnings():
                # Pillow warns between its two limits; we apply our own limit below.
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                img = Image.open(fh)
            width, height = img.size
            if width * height > limit:
                raise BadImage(f"decompression bomb: {width}x{height}")
            if width < 1 or height < 1:
                raise BadImage("corrupt image: zero size")
            orientation = _orientation(img)
            if orientation in _SWAPS_AXES:
                width, height = height, width
            if target_size and img.format == "JPEG":
                img.draft("RGB", (2 * target_size, 2 * target_size))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                img.load()
        except BadImage:
            raise
        except UnidentifiedImageError as exc:
            raise BadImage("not an image") from exc
        except Image.DecompressionBombError as exc:
            if not width:
                width, height = _declared_size(fh)
            raise BadImage(f"decompression bomb: {width}x{height}" if width else "decompression bomb") from exc
        except (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error) as exc:
            raise BadImage(_decode_failure_reason(exc)) from exc
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # a broken EXIF block must not cost the user a good photo
        pass
    return DecodedImage(to_rgb(img), width, height)


def open_image(path: str | os.PathLike, target_size: int | None = None) -> Image.Image:
    """The RGB image at ``path``; raises ``BadImage`` for anything undecodable."""
    return read_image(path, target_size).image


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) as displayed, from the header only (no pixel decoding)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                width, height = img.size
                if _orientation(img) in _SWAPS_AXES:
                    width, height = height, width
                return width, height
    except UnidentifiedImageError as exc:
        raise BadImage("not an image") from exc
    except Image.DecompressionBombError as exc:
        raise BadImage("decompression bomb") from exc
    except OSError as exc:
        raise BadImage(f"unreadable: {exc.strerror or exc}") from exc


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB; transparent pixels become white."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        mode = img.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode.startswith("I") or mode == "F":
        # 16/32-bit integer and float greyscale: Pillow's convert() clips at 255, which
        # turns a 16-bit scan white. Rescale to the value range the format implies.
        return Image.fromarray(_to_uint8(np.asarray(img)), "L").convert("RGB")
    return img.convert("RGB")  # 1, L, CMYK, YCbCr, LAB, HSV


def _to_uint8(values: np.ndarray) -> np.ndarray:
    values = values.astype(np.float64)
    peak = float(values.max()) if values.size else 0.0
    if values.dtype.kind == "f" and peak <= 1.0:
        scale = 255.0
    elif peak <= 255:
        scale = 1.0
    elif peak <= 65535:
        scale = 255.0 / 65535.0
    else:
        scale = 255.0 / peak
    return np.clip(values * scale + 0.5, 0, 255).astype(np.uint8)


def _orientation(img: Image.Image) -> int:
    try:
        return int(img.getexif().get(_EXIF_ORIENTATION, 1))
    except Exception:
        return 1


def _declared_size(fh) -> tuple[int, int]:
    """The size in the header of a file Pillow refused to open as a bomb (Pillow
    raises before handing the image object back), or (0, 0) if it can't be read."""
    fh.seek(0)
    prefix = fh.read(16)
    for fmt in Image.ID:
        factory, accept = Image.OPEN[fmt]
        try:
            accepted = accept is None or accept(prefix)
            if accepted and not isinstance(accepted, str):
                fh.seek(0)
                return factory(fh, "").size
        except Exception:
            continue
    return 0, 0


def _decode_failure_reason(exc: BaseException) -> str:
    text = str(exc)
    if "truncated" in text or isinstance(exc, EOFError) or "broken data stream" in text:
        return "truncated image"
    if isinstance(exc, OSError) and exc.strerror:
        return f"unreadable: {exc.strerror}"
    return f"corrupt image: {text.splitlines()[0][:120] if text else type(exc).__name__}"
