import io

import numpy as np
import pytest
from PIL import Image

from deit.data import BadImageError, decode_image


def _png(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=kw.pop("format", "PNG"), **kw)
    return buf.getvalue()


@pytest.mark.parametrize("mode", ["L", "1", "LA", "RGBA", "CMYK", "I;16", "I", "F"])
def test_modes_become_rgb(mode, tmp_path):
    fmt = {"CMYK": "JPEG", "F": "TIFF", "I": "TIFF"}.get(mode, "PNG")
    src = Image.new("RGB", (9, 7), (100, 150, 200)).convert(mode) if mode not in ("I;16", "I", "F") else None
    if mode == "I;16":
        src = Image.fromarray(np.full((7, 9), 40000, dtype=np.uint16))
    elif mode == "I":
        src = Image.fromarray(np.full((7, 9), 65535, dtype=np.int32), mode="I")
    elif mode == "F":
        src = Image.fromarray(np.full((7, 9), 0.5, dtype=np.float32), mode="F")
    img = decode_image(_png(src, format=fmt))
    assert img.mode == "RGB" and img.size == (9, 7)
    px = np.asarray(img)
    if mode == "I;16":  # 16-bit scaled down, not clipped to white
        assert px[0, 0, 0] == round(40000 / 257)
    if mode == "I":
        assert px[0, 0, 0] == 255
    if mode == "F":
        assert px[0, 0, 0] in (127, 128)


def test_palette_with_transparency_and_exif_orientation(tmp_path):
    p = Image.new("P", (4, 2))
    p.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    p.info["transparency"] = 0
    assert decode_image(_png(p)).getpixel((0, 0)) == (255, 0, 0)
    img = Image.new("RGB", (6, 3), (0, 0, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 on display
    path = tmp_path / "rot.jpg"
    img.save(path, exif=exif)
    assert decode_image(path).size == (3, 6)


def test_bad_files_name_the_file(tmp_path):
    good = tmp_path / "ok.jpg"
    Image.new("RGB", (64, 64), (1, 2, 3)).save(good, quality=95)
    (tmp_path / "trunc.jpg").write_bytes(good.read_bytes()[:200])
    (tmp_path / "text.jpg").write_text("not an image")
    for name in ("trunc.jpg", "text.jpg", "missing.jpg"):
        with pytest.raises(BadImageError, match=name):
            decode_image(tmp_path / name)
