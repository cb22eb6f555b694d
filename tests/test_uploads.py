"""Uploads: every bad file or zip member is refused with a clear reason; good images still load."""

from __future__ import annotations

import dataclasses
import io
import os
import random
import re
import stat
import struct
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from aevis_core.data import DecodeLimits, UploadLimits, load_image_set, read_uploads, save_image_set
from aevis_core.errors import AEVisError

LIM = UploadLimits(image=DecodeLimits())  # defaults, whatever the environment says
GOOD = np.random.default_rng(1).integers(0, 256, (6, 5, 3), dtype=np.uint8)


def encode(img: Image.Image, fmt: str = "PNG", **kw: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def zip_of(*members: tuple[str | zipfile.ZipInfo, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as zf:
        for name, data in members:
            zf.writestr(name, data)
    return buf.getvalue()


def patch_zip(data: bytes, local_off: int, central_off: int, value: int, fmt: str) -> bytes:
    """Overwrite one header field of the (single) member in both the local and central header."""
    out = bytearray(data)
    for sig, off in ((b"PK\x03\x04", local_off), (b"PK\x01\x02", central_off)):
        at = out.index(sig) + off
        out[at:at + struct.calcsize(fmt)] = struct.pack(fmt, value)
    return bytes(out)


GOOD_PNG = encode(Image.fromarray(GOOD))
NOISE_PNG = encode(Image.fromarray(np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8)))
FLAT_BMP = encode(Image.new("RGB", (64, 64), (7, 7, 7)), "BMP")  # 12 KB, deflates to ~100 bytes
G, N, B = len(GOOD_PNG), len(NOISE_PNG), len(FLAT_BMP)


def animated(fmt: str) -> bytes:
    frames = [Image.new("RGB", (8, 8), (i * 50, 0, 0)) for i in range(3)]
    return encode(frames[0], fmt, save_all=True, append_images=frames[1:])


def symlink_zip() -> bytes:
    info = zipfile.ZipInfo("link.png")
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return zip_of((info, b"/etc/passwd"))


UNSAFE = ["../evil.png", "/abs.png", "a/../../b.png", "C:/win.png", "..\\back.png", "\\root.png"]

# case -> (bad files, UploadLimits overrides, [(rejected name, reason substring)])
CASES: dict[str, tuple[list[tuple[str, bytes]], dict[str, Any], list[tuple[str, str]]]] = {
    "corrupt png": ([("corrupt.png", GOOD_PNG[:60] + b"\0" * 200)], {}, [("corrupt.png", "corrupt or truncated")]),
    "truncated jpeg": ([("cut.jpg", encode(Image.fromarray(np.random.default_rng(0).integers(
        0, 255, (64, 64, 3), dtype=np.uint8)), "JPEG")[:700])], {}, [("cut.jpg", "corrupt or truncated")]),
    "zero bytes": ([("empty.png", b"")], {}, [("empty.png", "empty file")]),
    "svg": ([("drawing.svg", b'<svg xmlns="http://www.w3.org/2000/svg"><rect width="5"/></svg>')], {},
            [("drawing.svg", "not a supported image")]),
    "text named png": ([("notes.png", b"hello, I am not a picture\n" * 10)], {},
                       [("notes.png", "not a supported image")]),
    "decompression bomb": ([("bomb.png", encode(Image.new("1", (6000, 6000))))], {},
                           [("bomb.png", "6000x6000 = 36.0 MP is over the 16 MP limit (possible decompression bomb)")]),
    "animated gif": ([("anim.gif", animated("GIF"))], {}, [("anim.gif", "not a supported image")]),
    "animated png": ([("anim.png", animated("PNG"))], {}, [("anim.png", "animated images are not supported")]),
    "file over upload limit": ([("big.png", NOISE_PNG)], {"max_total_bytes": N - 1},
                               [("big.png", f"big.png: {N:,} bytes, over the {N - 1:,} bytes limit of one upload")]),
    "upload total over limit": ([("big.png", NOISE_PNG)], {"max_total_bytes": N + G - 1},
                                [("big.png", f"{N:,} bytes would take the upload over its {N + G - 1:,} bytes total")]),
    "unsafe zip paths": ([("evil.zip", zip_of(*[(n, GOOD_PNG) for n in UNSAFE]))], {},
                         [(f"evil.zip:{n}", "unsafe path in zip") for n in UNSAFE]),
    "zip bomb (ratio)": ([("bomb.zip", zip_of(("zeros.png", b"\0" * 3_000_000)))], {},
                         [("bomb.zip:zeros.png", "over the 100:1 limit (possible zip bomb)")]),
    "zip member over image limit": ([("big.zip", zip_of(("flat.bmp", FLAT_BMP)))],
                                    {"image": DecodeLimits(max_bytes=10_000)},
                                    [("big.zip:flat.bmp", f"{B:,} bytes uncompressed, over the 10,000 bytes per")]),
    "zip member over upload total": ([("tot.zip", zip_of(("flat.bmp", FLAT_BMP)))], {"max_total_bytes": 10_000},
                                     [("tot.zip:flat.bmp", f"{B:,} bytes would take the upload over its 10,000")]),
    "lying zip header": ([("liar.zip", patch_zip(zip_of(("liar.png", b"\0" * 200_000)), 22, 24, 1000, "<I"))], {},
                         [("liar.zip:liar.png", "corrupt zip member (Bad CRC-32")]),
    "too many zip entries": ([("many.zip", zip_of(*[(f"{i}.png", GOOD_PNG) for i in range(6)]))],
                             {"max_zip_entries": 5}, [("many.zip", "many.zip: 6 entries, over the 5-entry limit")]),
    "nested zip": ([("outer.zip", zip_of(("inner.zip", zip_of(("x.png", GOOD_PNG)))))], {},
                   [("outer.zip:inner.zip", "nested zip archives are not supported")]),
    "symlink member": ([("link.zip", symlink_zip())], {}, [("link.zip:link.png", "symbolic links")]),
    "encrypted member": ([("enc.zip", patch_zip(zip_of(("secret.png", GOOD_PNG)), 6, 8, 1, "<H"))], {},
                         [("enc.zip:secret.png", "encrypted zip members are not supported")]),
    "corrupt zip": ([("broken.zip", b"PK\x03\x04" + b"\0" * 50), ("cut.zip", zip_of(("x.png", GOOD_PNG))[:80]),
                     ("renamed.zip", GOOD_PNG)], {},
                    [(n, f"{n}: not a readable zip") for n in ("broken.zip", "cut.zip", "renamed.zip")]),
    "zip without images": ([("junk.zip", zip_of(("d/", b""), ("__MACOSX/._x.png", b"x"), (".DS_Store", b"x")))], {},
                           [("junk.zip", "junk.zip: the zip holds no image files")]),
    "non-image zip member": ([("docs.zip", zip_of(("readme.txt", b"hi"), ("pic.svg", b"<svg/>")))], {},
                             [("docs.zip:readme.txt", "not an image file"), ("docs.zip:pic.svg", "not an image file")]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_refused_good_image_kept(case: str) -> None:
    bad, overrides, expected = CASES[case]
    res = read_uploads([("good.png", GOOD_PNG), *bad], dataclasses.replace(LIM, **overrides))
    assert [n for n, _ in res.rejected] == [n for n, _ in expected]
    for (name, reason), (_, part) in zip(res.rejected, expected, strict=True):
        shown = name.split(":")[0] if ".zip:" not in name else name
        assert reason.startswith(f"{shown}: ") and part in reason and "\n" not in reason, reason
    assert res.images.ids == ["good"] and res.images.labels == [None] and res.images.name == "upload"
    assert np.array_equal(np.asarray(res.images.images[0]), GOOD)
    assert res.images.problems == res.rejected


def test_modes_become_rgb() -> None:
    arr16 = np.array([[0, 65535], [32896, 257]], dtype=np.uint16)
    cmyk = Image.new("CMYK", (4, 4), (0, 255, 255, 0))  # pure red
    pal = Image.new("P", (2, 2))
    pal.putpalette([0, 0, 0, 200, 100, 50] + [0] * 762)
    pal.putpixel((0, 0), 1)
    rgba = Image.new("RGBA", (2, 1), (0, 0, 0, 0))
    rgba.putpixel((1, 0), (10, 20, 30, 255))
    files = [("p16.png", encode(Image.fromarray(arr16))), ("cmyk.jpg", encode(cmyk, "JPEG", quality=100)),
             ("pal.png", encode(pal)), ("rgba.png", encode(rgba))]
    res = read_uploads([files[0], ("set.zip", zip_of(*files[1:]))], LIM)
    assert res.rejected == [] and res.images.ids == ["p16", "cmyk", "pal", "rgba"]
    p16, c, p, a = res.images.images
    assert all(im.mode == "RGB" for im in res.images.images)
    assert [p16.getpixel(xy) for xy in ((0, 0), (1, 0), (0, 1), (1, 1))] == [(0,) * 3, (255,) * 3, (128,) * 3, (1,) * 3]
    r, g, b = c.getpixel((1, 1))
    assert r > 240 and g < 15 and b < 15
    assert p.getpixel((0, 0)) == (200, 100, 50) and p.getpixel((1, 1)) == (0, 0, 0)
    assert a.getpixel((0, 0)) == (255, 255, 255) and a.getpixel((1, 0)) == (10, 20, 30)


def test_ids_safe_and_unique() -> None:
    names = ["../../etc/passwd.png", "cat.png", "cat.png", "C:\\Users\\me\\Cat.PNG", "", ".hidden.png",
             "ünïcode name!.jpg", "x" * 100 + ".png", "-rf.png", "a\nb.png", "cat-2.png"]
    res = read_uploads([(n, GOOD_PNG) for n in names], LIM)
    assert res.rejected == []
    assert res.images.ids == ["passwd", "cat", "cat-2", "Cat-3", "image", "hidden", "unicode_name_", "x" * 64,
                              "rf", "a_b", "cat-2-2"]
    assert all(re.fullmatch(r"[A-Za-z0-9._-]{1,64}", i) for i in res.images.ids)
    assert [str(p) for p in res.images.paths] == [f"{i}.png" for i in res.images.ids]
    assert [m["upload_name"] for m in res.images.meta] == names
    long = read_uploads([("y" * 80 + ".png", GOOD_PNG)] * 12, LIM).images.ids
    assert long[1] == "y" * 62 + "-2" and long[11] == "y" * 61 + "-12" and max(map(len, long)) == 64


def test_zip_subfolders_and_junk() -> None:
    data = zip_of(("photos/", b""), ("photos/sub/dog.png", GOOD_PNG), ("__MACOSX/photos/sub/._dog.png", b"\0\5junk"),
                  ("photos/.DS_Store", b"junk"), (".git/config", b"x"), ("Thumbs.db", b"x"), ("notes.txt", b"hi"))
    res = read_uploads([("set.zip", data)], LIM, class_names=["a", "b"], name="mine")
    assert res.images.ids == ["dog"] and res.images.name == "mine" and res.images.class_names == ["a", "b"]
    assert np.array_equal(np.asarray(res.images.images[0]), GOOD)
    assert res.images.meta == [{"upload_name": "set.zip:photos/sub/dog.png"}]
    assert [n for n, _ in res.rejected] == ["set.zip:notes.txt"]


def test_max_files_and_pixels() -> None:
    files = [(f"{i}.png", GOOD_PNG) for i in range(3)] + [("z.zip", zip_of(("z1.png", GOOD_PNG), ("z2.png", GOOD_PNG)))]
    res = read_uploads(files, dataclasses.replace(LIM, max_files=2))
    assert res.images.ids == ["0", "1"]
    assert res.rejected == [("2.png", "2.png: over the 2-image limit of one upload"),
                            ("z.zip:z1.png", "z.zip:z1.png: over the 2-image limit of one upload"),
                            ("z.zip:z2.png", "z.zip:z2.png: over the 2-image limit of one upload")]
    res = read_uploads(files[:3], dataclasses.replace(LIM, max_total_pixels=70))  # 30 pixels each
    assert res.images.ids == ["0", "1"]
    assert res.rejected == [("2.png", "2.png: 5x6 pixels would take the upload over its 7e-05 MP total limit")]


def test_never_raises_on_mangled_zips() -> None:
    base = zip_of(("a.png", GOOD_PNG), ("b/c.jpg", encode(Image.fromarray(GOOD), "JPEG")))
    rng = random.Random(0)
    for i in range(200):
        data = bytearray(base)
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        res = read_uploads([(f"m{i}.zip", bytes(data[: rng.randint(4, len(data))]))], LIM)
        assert all(im.size == (5, 6) and im.mode == "RGB" for im in res.images.images)
        assert all("\n" not in why for _, why in res.rejected)


def test_save_round_trip_stays_in_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    pics = [np.random.default_rng(i).integers(0, 256, (4 + i, 3, 3), dtype=np.uint8) for i in range(3)]
    files = [("zeta.png", encode(Image.fromarray(pics[0]))), ("../../escape.png", encode(Image.fromarray(pics[1]))),
             ("alpha.png", encode(Image.fromarray(pics[2])))]
    res = read_uploads(files, LIM)
    assert os.listdir(work) == []  # reading writes nothing
    res.images.labels[2] = 7
    out = save_image_set(res.images, tmp_path / "set")
    assert out == tmp_path / "set" and os.listdir(work) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cwd", "set"]
    assert sorted(os.listdir(out)) == ["alpha.png", "escape.png", "labels.csv", "zeta.png"]
    back = load_image_set(out)
    assert back.ids == ["zeta", "escape", "alpha"] and back.labels == [None, None, 7] and not back.problems
    assert all(np.array_equal(np.asarray(im), p) for im, p in zip(back.images, pics, strict=True))
    res.images.ids[0] = "../x"
    with pytest.raises(ValueError, match="not a safe, unique file name"):
        save_image_set(res.images, tmp_path / "set2")


def test_limits_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AEVIS_MAX_UPLOAD_FILES", "3")
    monkeypatch.setenv("AEVIS_MAX_UPLOAD_MB", "0.5")
    monkeypatch.setenv("AEVIS_MAX_IMAGE_MB", "1")
    lim = UploadLimits.from_env()
    assert (lim.max_files, lim.max_total_bytes, lim.image.max_bytes) == (3, 524288, 1048576)
    assert lim.max_zip_entries == 1000 and lim.max_ratio == 100.0
    monkeypatch.setenv("AEVIS_MAX_UPLOAD_FILES", "lots")
    with pytest.raises(AEVisError, match="AEVIS_MAX_UPLOAD_FILES='lots' must be a positive number"):
        UploadLimits.from_env()
