"""Image sets: layouts, demo data, and defensive decoding of bad files (each with its message)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from aevis_core.data import DecodeLimits, decode_image, demo_path, load_image_set
from aevis_core.errors import AEVisError, ImageLoadError


def png_bytes(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=kw.pop("format", "PNG"), **kw)
    return buf.getvalue()


def test_demo_sets(nips_demo, cifar_demo):
    assert len(nips_demo) == 62 and not nips_demo.problems
    assert "000b7d55b6184b08" in nips_demo.ids and "52d8515abbfaa8ac" in nips_demo.ids
    panda = nips_demo.ids.index("000b7d55b6184b08")
    assert nips_demo.label_name(panda) == "giant panda"  # TrueLabel 389 - 1
    assert nips_demo.meta[panda]["License"].startswith("https://creativecommons.org/licenses/by/2.0")
    assert nips_demo.images[0].size == (299, 299) and nips_demo.images[0].mode == "RGB"
    counts = np.bincount([lab for lab in nips_demo.labels if lab is not None])
    assert (counts[counts > 0] == 5).sum() == 12
    assert len(cifar_demo) == 100 and cifar_demo.class_names[:2] == ("airplane", "automobile")
    assert np.bincount(cifar_demo.labels).tolist() == [10] * 10
    assert (demo_path("nips2017") / "LICENSE.md").is_file()


def test_class_folder_layout(tmp_path):
    for cls, color in (("cat", (255, 0, 0)), ("dog", (0, 255, 0))):
        (tmp_path / cls).mkdir()
        Image.new("RGB", (4, 4), color).save(tmp_path / cls / "a.png")
    s = load_image_set(tmp_path)
    assert s.class_names == ["cat", "dog"] and s.labels == [0, 1] and s.ids == ["cat_a", "dog_a"]
    assert s.images[1].getpixel((0, 0)) == (0, 255, 0)
    s2 = load_image_set(tmp_path, dataset="cifar10")  # cat=3, dog=5 in CIFAR-10 order
    assert s2.labels == [3, 5]


def test_flat_folder_and_subset(tmp_path):
    for i in range(3):
        Image.new("L", (5, 5), i * 100).save(tmp_path / f"{i}.png")
    s = load_image_set(tmp_path)
    assert s.labels == [None] * 3 and s.images[2].getpixel((0, 0)) == (200, 200, 200)
    assert s.subset([2, 0]).ids == ["2", "0"]


def test_labels_csv_cannot_escape_folder(tmp_path):
    root = tmp_path / "set"
    root.mkdir()
    Image.new("RGB", (4, 4)).save(root / "ok.png")
    Image.new("RGB", (4, 4)).save(tmp_path / "secret.png")
    (root / "labels.csv").write_text("path,label_index\nok.png,1\n../secret.png,0\n")
    s = load_image_set(root)
    assert s.ids == ["ok"] and s.labels == [1]
    assert any("leaves the image folder" in why for _, why in s.problems)


def bomb() -> bytes:
    return png_bytes(Image.new("1", (5000, 5000)))


def animated_gif() -> bytes:
    frames = [Image.new("P", (8, 8), i) for i in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    return buf.getvalue()


def animated_png() -> bytes:
    frames = [Image.new("RGB", (8, 8), (i * 50, 0, 0)) for i in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, format="PNG", save_all=True, append_images=frames[1:])
    return buf.getvalue()


BAD = {
    "empty.png": (lambda: b"", "empty file"),
    "text.png": (lambda: b"hello, I am not a picture\n" * 10, "not a supported image"),
    "corrupt.png": (lambda: png_bytes(Image.new("RGB", (64, 64), (1, 2, 3)))[:60] + b"\x00" * 200,
                    "corrupt or truncated"),
    "truncated.jpg": (lambda: png_bytes(Image.fromarray(np.random.default_rng(0).integers(
        0, 255, (64, 64, 3), dtype=np.uint8)), format="JPEG")[:700], "corrupt or truncated"),
    "drawing.svg": (lambda: b'<svg xmlns="http://www.w3.org/2000/svg"><rect width="5"/></svg>',
                    "not a supported image"),
    "anim.gif": (animated_gif, "not a supported image"),
    "anim.png": (animated_png, "animated images are not supported"),
    "bomb.png": (bomb, "over the 16 MP limit"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_files_give_clear_errors(name):
    make, message = BAD[name]
    with pytest.raises(ImageLoadError) as err:
        decode_image(make(), name=name)
    assert str(err.value).startswith(f"{name}: ") and message in str(err.value)


def test_oversized_file_refused(tmp_path):
    p = tmp_path / "big.png"
    p.write_bytes(png_bytes(Image.new("RGB", (100, 100))))
    with pytest.raises(ImageLoadError, match="over the 0 MB limit"):
        decode_image(p, limits=DecodeLimits(max_bytes=100))


def test_modes_become_rgb():
    rgba = Image.new("RGBA", (2, 1), (0, 0, 0, 0))
    rgba.putpixel((1, 0), (10, 20, 30, 255))
    out = decode_image(png_bytes(rgba), "rgba.png")
    assert out.mode == "RGB" and out.getpixel((0, 0)) == (255, 255, 255) and out.getpixel((1, 0)) == (10, 20, 30)
    pal = Image.new("P", (2, 2))
    pal.putpalette([0, 0, 0, 200, 100, 50] + [0] * 762)
    pal.putpixel((0, 0), 1)
    assert decode_image(png_bytes(pal), "p.png").getpixel((0, 0)) == (200, 100, 50)
    arr16 = np.array([[0, 65535], [32896, 257]], dtype=np.uint16)
    out16 = decode_image(png_bytes(Image.fromarray(arr16)), "16bit.png")
    assert [out16.getpixel(p)[0] for p in ((0, 0), (1, 0), (0, 1), (1, 1))] == [0, 255, 128, 1]
    cmyk = Image.new("CMYK", (4, 4), (0, 255, 255, 0))  # pure red in CMYK
    out_c = decode_image(png_bytes(cmyk, format="JPEG", quality=100), "cmyk.jpg")
    r, g, b = out_c.getpixel((1, 1))
    assert r > 240 and g < 15 and b < 15
    la = Image.new("LA", (1, 1), (100, 255))
    assert decode_image(png_bytes(la), "la.png").getpixel((0, 0)) == (100, 100, 100)


def test_bad_file_in_set_does_not_stop_the_rest(tmp_path):
    Image.new("RGB", (4, 4), (9, 9, 9)).save(tmp_path / "good.png")
    (tmp_path / "bad.png").write_bytes(b"not an image")
    (tmp_path / "zero.jpg").write_bytes(b"")
    s = load_image_set(tmp_path)
    assert s.ids == ["good"]
    assert {n for n, _ in s.problems} == {"bad.png", "zero.jpg"}


def test_empty_or_missing_folder(tmp_path):
    with pytest.raises(AEVisError, match="image folder not found"):
        load_image_set(tmp_path / "nope")
    (tmp_path / "x.png").write_bytes(b"")
    with pytest.raises(AEVisError, match=r"no readable images .*empty file"):
        load_image_set(tmp_path)


def test_nips_csv_layout(tmp_path: Path):
    (tmp_path / "images").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "images" / "abc.png")
    (tmp_path / "images.csv").write_text(
        "ImageId,URL,x1,y1,x2,y2,TrueLabel,TargetClass,OriginalLandingURL,License,Author,AuthorProfileURL\n"
        "abc,u,0,0,1,1,1,5,l,lic,me,p\nmissing,u,0,0,1,1,2,5,l,lic,me,p\n")
    s = load_image_set(tmp_path)
    assert s.labels == [0] and s.label_name(0) == "tench" and s.meta[0]["TargetClass"] == "4"
    assert s.problems == [("missing.png", "missing.png: listed in images.csv but missing")]
