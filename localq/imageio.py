"""Safe image decoding: every file either becomes an RGB ``PIL.Image`` the way a
person would see it (EXIF orientation applied, alpha on white) or raises
``BadImage`` with a short reason that the indexer records as the skip reason.

Reasons are a fixed vocabulary so that skips can be counted by kind:
"empty file", "not an image", "truncated image", "decompression bomb: WxH",
"extreme aspect ratio: WxH", "not a regular file: <kind>", "file too large: N bytes",
"too large to decode", "unreadable: <errno text>", "corrupt image: <detail>".

Which files are images is decided by suffix, in one place (``IMAGE_EXTENSIONS``); files
whose suffix says image or video but that localq cannot decode (``UNSUPPORTED_EXTENSIONS``)
are listed by `localq skipped` with the reason; every other file is not an image and
is passed over silently.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import struct
import warnings
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError, features

from localq.errors import BadImage

# Pillow's EXIF reader warns once per bad tag (a photo with a huge, broken eXIf chunk
# gave about 30 UserWarnings on stderr). The image itself decodes; its metadata only
# serves the orientation, which is then taken as upright. Set once, at import: the
# decode threads share the process's filters, which catch_warnings would race on.
warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.TiffImagePlugin")

# HEIC/HEIF (what phones write) decode through the pillow-heif plugin, AVIF through
# Pillow itself where it was built with libavif (Pillow >= 11.3 wheels are).
HEIF_EXTENSIONS = frozenset({".heic", ".heif", ".hif"})
_HAVE_HEIF = find_spec("pillow_heif") is not None
_HAVE_AVIF = bool(features.check_module("avif")) if "avif" in features.modules else False

# Suffixes (lower case, with the dot) that the folder scanner treats as images.
# Everything Pillow decodes that people keep photos in.
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".bmp", ".dib", ".gif", ".tif", ".tiff"}
    | (HEIF_EXTENSIONS if _HAVE_HEIF else set())
    | ({".avif"} if _HAVE_AVIF else set())
)

# Suffixes of images and videos localq does not decode: recorded as skipped with this
# reason, so that a photo folder's SVGs, raw files and clips are accounted for.
_UNSUPPORTED_KINDS = {
    "SVG vector drawing": (".svg", ".svgz"),
    "HEIC/HEIF (install pillow-heif)": tuple(sorted(HEIF_EXTENSIONS)),
    "AVIF (this Pillow was built without libavif)": (".avif",),
    "camera raw": (
        ".dng",
        ".cr2",
        ".cr3",
        ".crw",
        ".nef",
        ".nrw",
        ".arw",
        ".srf",
        ".sr2",
        ".orf",
        ".rw2",
        ".raf",
        ".pef",
        ".srw",
        ".x3f",
        ".raw",
        ".3fr",
        ".erf",
        ".kdc",
        ".mrw",
    ),
    "layered or vector document": (".psd", ".psb", ".xcf", ".ai", ".eps", ".kra"),
    "JPEG XL": (".jxl",),
    "video": (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".3gp", ".mts", ".m2ts", ".wmv", ".mpg", ".mpeg"),
}
UNSUPPORTED_EXTENSIONS = {
    suffix: f"unsupported format: {kind}"
    for kind, suffixes in _UNSUPPORTED_KINDS.items()
    for suffix in suffixes
    if suffix not in IMAGE_EXTENSIONS
}

# A file this big is not a photo (and reading it to hash it would take its size in RAM).
MAX_FILE_BYTES = 2 << 30

# Refuse images whose declared size exceeds this many pixels before decoding them.
# It equals the point where Pillow itself raises (2 x its 89.5M warning limit), so a
# 200 MP phone panorama just passes (~600 MB of RGB while decoding) while a PNG that
# claims 100k x 100k pixels is refused from its header alone.
MAX_PIXELS = 2 * 89_478_485

# A pixel-count limit alone misses thin images: a 138-byte 20000x1 PNG is 20k pixels,
# but the encoder scales its short side up to ~224 px, i.e. 4.5M x 224 pixels (5 GB).
# Panoramas stay under ~30:1; beyond this the image is refused from its header.
MAX_ASPECT_RATIO = 100

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


def unsupported_reason(path: str | os.PathLike) -> str | None:
    """The skip reason for an image or video file localq cannot decode, else None."""
    return UNSUPPORTED_EXTENSIONS.get(Path(path).suffix.lower())


_FILE_KINDS = (
    (stat.S_ISDIR, "directory"),
    (stat.S_ISFIFO, "fifo"),
    (stat.S_ISCHR, "character device"),
    (stat.S_ISBLK, "block device"),
    (stat.S_ISSOCK, "socket"),
)


def not_regular_reason(mode: int) -> str | None:
    """Why a file of this st_mode is refused (a FIFO would block a read forever, a
    device like /dev/zero never ends), or None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    kind = next((name for test, name in _FILE_KINDS if test(mode)), "special file")
    return f"not a regular file: {kind}"


def open_regular(path: str | os.PathLike):
    """A binary file object for ``path`` if it is a regular file of sane size, else
    BadImage. The type is checked with stat before opening (opening some devices has
    effects) and again on the open descriptor, which O_NONBLOCK keeps from hanging if
    the file was swapped for a FIFO in between."""
    try:
        reason = not_regular_reason(os.stat(path).st_mode)
        if reason:
            raise BadImage(reason)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise BadImage(f"unreadable: {exc.strerror or exc}") from exc
    fh = os.fdopen(fd, "rb")
    try:
        st = os.fstat(fd)
        reason = not_regular_reason(st.st_mode)
        if reason:
            raise BadImage(reason)
        if st.st_size > MAX_FILE_BYTES:
            raise BadImage(f"file too large: {st.st_size} bytes")
        os.set_blocking(fd, True)
    except BaseException:
        fh.close()
        raise
    return fh


def file_digest(data: bytes) -> str:
    """A file's content hash as SQLite's ``images.hash`` stores it."""
    return hashlib.sha256(data).hexdigest()


def read_file(path: str | os.PathLike) -> bytes:
    """The bytes of a regular file (see ``open_regular``), or BadImage."""
    with open_regular(path) as fh:
        try:
            return fh.read(MAX_FILE_BYTES + 1)
        except OSError as exc:
            raise BadImage(f"unreadable: {exc.strerror or exc}") from exc


def read_image(
    source: str | os.PathLike | bytes, target_size: int | None = None, *, max_pixels: int | None = None
) -> DecodedImage:
    """Decode a file (a path, or its bytes already read) to RGB. With ``target_size``
    (the encoder's input side), large JPEGs are decoded at a reduced DCT scale that still
    leaves at least twice that many pixels on each side: a 4000x3000 photo decodes ~10x
    faster this way."""
    limit = MAX_PIXELS if max_pixels is None else max_pixels
    _register_plugins()
    fh = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else open_regular(source)
    width = height = 0
    with fh:
        try:
            if fh.seek(0, io.SEEK_END) == 0:
                raise BadImage("empty file")
            fh.seek(0)
            with warnings.catch_warnings():
                # Pillow warns between its two limits; we apply our own limit below.
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                img = Image.open(fh)
            width, height = img.size
            check_size(width, height, limit)
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
        except MemoryError as exc:  # a size the header checks let through still must not kill the run
            raise BadImage("too large to decode") from exc
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


def check_size(width: int, height: int, max_pixels: int = MAX_PIXELS) -> None:
    """Refuse, from the header's size alone, what would take unbounded memory to use."""
    if width < 1 or height < 1:
        raise BadImage("corrupt image: zero size")
    if width * height > max_pixels:
        raise BadImage(f"decompression bomb: {width}x{height}")
    if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        raise BadImage(f"extreme aspect ratio: {width}x{height}")


_plugins_registered = False


def _register_plugins() -> None:
    """Register pillow-heif's HEIC/HEIF opener on first use (importing it costs ~50 ms
    that `localq --help` should not pay)."""
    global _plugins_registered
    if _plugins_registered:
        return
    _plugins_registered = True
    if _HAVE_HEIF:
        try:
            from pillow_heif import register_heif_opener

            register_heif_opener()
        except Exception:  # a broken plugin install must not stop JPEGs: HEIC files then skip as "not an image"
            pass


def open_image(path: str | os.PathLike, target_size: int | None = None) -> Image.Image:
    """The RGB image at ``path``; raises ``BadImage`` for anything undecodable."""
    return read_image(path, target_size).image


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) as displayed, from the header only (no pixel decoding)."""
    _register_plugins()
    try:
        with warnings.catch_warnings(), open_regular(path) as fh:
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(fh) as img:
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
