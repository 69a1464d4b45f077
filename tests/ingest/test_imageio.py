import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from localq.errors import BadImage
from localq.imageio import IMAGE_EXTENSIONS, image_size, is_image_path, open_image, read_image, to_rgb


def _noise(size=(64, 48), seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB")


def _reason(path, **kwargs) -> str:
    with pytest.raises(BadImage) as info:
        read_image(path, **kwargs)
    return info.value.reason


def _png_header_only(path, width, height):
    """A PNG whose IHDR claims width x height but carries one tiny IDAT: a bomb's header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")
    )


# --- bad files: each becomes BadImage with its own reason ---------------------------


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    assert _reason(path) == "empty file"


def test_text_file_with_image_extension(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("this is not a photo\n" * 10)
    assert _reason(path) == "not an image"


def test_truncated_jpeg(tmp_path):
    whole = tmp_path / "whole.jpg"
    _noise((256, 256)).save(whole, quality=95)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    assert _reason(cut) == "truncated image"
    open_image(whole)  # the untruncated original is fine


def test_truncated_png(tmp_path):
    whole = tmp_path / "whole.png"
    _noise((256, 256)).save(whole)
    cut = tmp_path / "cut.png"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    assert _reason(cut) == "truncated image"


def test_bomb_refused_from_header_without_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    _png_header_only(path, 100_000, 100_000)  # 10 gigapixels, 30 GB if decoded
    assert _reason(path) == "decompression bomb: 100000x100000"


def test_bomb_limit_is_adjustable(tmp_path):
    path = tmp_path / "big.png"
    _noise((200, 100)).save(path)
    assert _reason(path, max_pixels=10_000) == "decompression bomb: 200x100"
    assert read_image(path, max_pixels=20_000).image.size == (200, 100)


def test_missing_file(tmp_path):
    assert _reason(tmp_path / "gone.jpg") == "unreadable: No such file or directory"


def test_directory_with_image_name(tmp_path):
    (tmp_path / "folder.jpg").mkdir()
    assert _reason(tmp_path / "folder.jpg") == "not a regular file: directory"  # refused from stat, never opened


def test_unreadable_file(tmp_path):
    if os.geteuid() != 0:
        path = tmp_path / "locked.jpg"
        _noise().save(path)
        path.chmod(0)
        try:
            assert _reason(path) == "unreadable: Permission denied"
        finally:
            path.chmod(0o644)
        return
    # Root (CI) reads any file whatever its mode: read it as the unprivileged user instead,
    # from a directory that user can reach (pytest's tmp dirs are 0700).
    import shutil
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    public = Path(tempfile.mkdtemp(prefix="localq-imageio-", dir="/tmp"))
    try:
        public.chmod(0o755)
        path = public / "locked.jpg"
        _noise().save(path)
        path.chmod(0)
        code = (
            "import sys; from localq.imageio import read_image; from localq.errors import BadImage\n"
            "try:\n    read_image(sys.argv[1])\nexcept BadImage as e:\n    print(e.reason)"
        )
        repo = str(Path(__file__).resolve().parents[2])
        out = subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c", code, str(path)],
            capture_output=True,
            text=True,
            cwd="/",
            env={**os.environ, "PYTHONPATH": repo},
        )
        assert out.stdout.strip() == "unreadable: Permission denied", out.stderr
    finally:
        shutil.rmtree(public, ignore_errors=True)


# --- orientation and size -------------------------------------------------------------


def _left_red_right_blue(width=40, height=20) -> Image.Image:
    img = Image.new("RGB", (width, height), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, width // 2, height))
    return img


def test_exif_orientation_is_applied(tmp_path):
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: display rotated 90 degrees clockwise
    _left_red_right_blue().save(path, exif=exif, quality=95)

    decoded = read_image(path)
    assert decoded.image.size == (20, 40)
    assert (decoded.width, decoded.height) == (20, 40)
    assert image_size(path) == (20, 40)
    top = decoded.image.getpixel((10, 2))
    bottom = decoded.image.getpixel((10, 37))
    assert top[0] > 200 and top[2] < 60  # the red left half is now on top
    assert bottom[2] > 200 and bottom[0] < 60


def test_draft_decodes_large_jpeg_smaller_but_reports_original_size(tmp_path):
    path = tmp_path / "large.jpg"
    _noise((2000, 1500)).resize((2000, 1500)).save(path, quality=85)
    decoded = read_image(path, target_size=224)
    assert (decoded.width, decoded.height) == (2000, 1500)
    w, h = decoded.image.size
    assert 448 <= min(w, h) < 1500  # reduced, yet at least twice the target side
    assert open_image(path).size == (2000, 1500)  # no target size: full resolution


# --- mode conversion ------------------------------------------------------------------


def _roundtrip(tmp_path, img: Image.Image, name: str, **save) -> Image.Image:
    path = tmp_path / name
    img.save(path, **save)
    out = open_image(path)
    assert out.mode == "RGB"
    assert out.size == img.size
    return out


def test_greyscale_becomes_rgb(tmp_path):
    out = _roundtrip(tmp_path, Image.new("L", (8, 8), 77), "grey.png")
    assert out.getpixel((3, 3)) == (77, 77, 77)


def test_bilevel_becomes_rgb(tmp_path):
    out = _roundtrip(tmp_path, Image.new("1", (8, 8), 1), "bw.png")
    assert out.getpixel((0, 0)) == (255, 255, 255)


def test_palette_becomes_rgb(tmp_path):
    img = Image.new("P", (8, 8), 1)
    img.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    out = _roundtrip(tmp_path, img, "palette.gif")
    assert out.getpixel((4, 4)) == (10, 200, 30)


def test_palette_transparency_goes_on_white(tmp_path):
    img = Image.new("P", (8, 8), 0)
    img.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    img.putpixel((1, 1), 1)
    out = _roundtrip(tmp_path, img, "palette_t.png", transparency=0)
    assert out.getpixel((0, 0)) == (255, 255, 255)
    assert out.getpixel((1, 1)) == (10, 200, 30)


def test_rgba_alpha_composited_on_white(tmp_path):
    img = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    img.putpixel((2, 2), (0, 0, 255, 255))
    img.putpixel((3, 3), (0, 0, 0, 128))
    out = _roundtrip(tmp_path, img, "alpha.png")
    assert out.getpixel((0, 0)) == (255, 255, 255)  # fully transparent red is white, not red
    assert out.getpixel((2, 2)) == (0, 0, 255)
    assert 120 <= out.getpixel((3, 3))[0] <= 135  # half-transparent black is mid grey


def test_la_composited_on_white(tmp_path):
    img = Image.new("LA", (8, 8), (0, 0))
    img.putpixel((5, 5), (40, 255))
    out = _roundtrip(tmp_path, img, "la.png")
    assert out.getpixel((0, 0)) == (255, 255, 255)
    assert out.getpixel((5, 5)) == (40, 40, 40)


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    out = _roundtrip(tmp_path, Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "cmyk.jpg", quality=95)
    r, g, b = out.getpixel((8, 8))
    assert r > 200 and g < 60 and b < 60  # cyan 0, magenta+yellow full: red


def test_sixteen_bit_greyscale_is_rescaled_not_clipped(tmp_path):
    values = np.array([[0, 32768], [65535, 1000]], dtype=np.uint16)
    img = Image.fromarray(values)
    assert img.mode.startswith("I;16") or img.mode == "I"
    out = _roundtrip(tmp_path, img, "deep.png")
    assert out.getpixel((0, 0)) == (0, 0, 0)
    assert out.getpixel((1, 0))[0] in (127, 128)  # mid grey, not white
    assert out.getpixel((0, 1)) == (255, 255, 255)


def test_float_image_rescaled():
    img = Image.fromarray(np.array([[0.0, 0.5], [1.0, 0.25]], dtype=np.float32), "F")
    out = to_rgb(img)
    assert out.getpixel((0, 0)) == (0, 0, 0) and out.getpixel((0, 1)) == (255, 255, 255)


def test_animated_gif_gives_first_frame(tmp_path):
    frames = [Image.new("RGB", (8, 8), c) for c in [(255, 0, 0), (0, 0, 255)]]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    r, g, b = open_image(path).getpixel((4, 4))
    assert r > 200 and b < 60


@pytest.mark.parametrize("ext", [".webp", ".bmp", ".tiff"])
def test_other_formats(tmp_path, ext):
    out = _roundtrip(tmp_path, _noise((12, 10)), "x" + ext, **({"lossless": True} if ext == ".webp" else {}))
    assert np.array_equal(np.asarray(out), np.asarray(_noise((12, 10))))


def test_extensions():
    assert {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"} <= IMAGE_EXTENSIONS
    assert is_image_path("a/B.JPEG") and not is_image_path("notes.txt")
