"""Curation of a messy folder that the tests build: every odd file lands in its bucket."""
import io
import json
import os
import re
import signal
import struct
import subprocess
import sys
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import interrupt_group_when, start_in_a_session
from sg3lib.data import CurateError, ImageDataset, curate
from sg3lib.data.writer import DatasetWriter

BG = (10, 200, 30)  # a background colour no test picture uses, to see compositing


def picture(seed, w, h):
    """A structured picture (gradient + coloured blocks): many colours, unique low frequencies."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(w, h)
    a = np.stack([x * 255, y * 255, (1 - x) * 128 + 64], -1)
    for _ in range(4):
        x0, y0 = rng.integers(0, w * 3 // 4), rng.integers(0, h * 3 // 4)
        a[y0:y0 + h // 3, x0:x0 + w // 3] = rng.integers(0, 256, 3)
    return Image.fromarray(a.clip(0, 255).astype(np.uint8))


def enc(img, fmt, **kw):
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def linear_rgb_icc(grey=False, name="linear test RGB", gamma=1.0):
    """A minimal ICC v2 RGB profile: sRGB primaries (D50) with a linear (gamma 1.0) curve, or a
    `gamma` one (grey=True: a grey profile with that curve), described as `name`."""
    def s15(v):
        return struct.pack(">i", int(round(v * 65536)))

    def xyz(*v):
        return b"XYZ \0\0\0\0" + b"".join(s15(c) for c in v)
    desc_txt = name.encode() + b"\0"
    desc = (b"desc\0\0\0\0" + struct.pack(">I", len(desc_txt)) + desc_txt + b"\0" * 8 + b"\0\0\0" + b"\0" * 67)
    curv = b"curv\0\0\0\0" + struct.pack(">IH", 1, round(gamma * 256)) + b"\0\0"
    tags = [(b"desc", desc), (b"wtpt", xyz(0.9642, 1.0, 0.8249)), (b"rXYZ", xyz(0.4361, 0.2225, 0.0139)),
            (b"gXYZ", xyz(0.3851, 0.7169, 0.0971)), (b"bXYZ", xyz(0.1431, 0.0606, 0.7141)),
            (b"rTRC", curv), (b"gTRC", curv), (b"bTRC", curv)]
    if grey:
        tags = tags[:2] + [(b"kTRC", curv)]
    offset, table, data = 128 + 4 + 12 * len(tags), b"", b""
    for sig, body in tags:
        body += b"\0" * (-len(body) % 4)
        table += sig + struct.pack(">II", offset + len(data), len(body))
        data += body
    size = offset + len(data)
    header = (struct.pack(">I", size) + b"\0" * 4 + struct.pack(">I", 0x02100000) + b"mntr"
              + (b"GRAY" if grey else b"RGB ") + b"XYZ "
              + b"\0" * 12 + b"acsp" + b"\0" * 24 + b"\0" * 4 + s15(0.9642) + s15(1.0) + s15(0.8249) + b"\0" * 48)
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + data


def png_bomb(side=12000):
    """A valid 1-bit PNG that claims side x side pixels (144 Mpx) in a few kB."""
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    row = b"\0" * (1 + (side + 7) // 8)
    z = zlib.compressobj(9)
    idat = b"".join(z.compress(row) for _ in range(side)) + z.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def break_idat_crc(png):
    i = png.index(b"IDAT")
    length = struct.unpack(">I", png[i - 4:i])[0]
    crc_at = i + 4 + length
    return png[:crc_at] + bytes([png[crc_at] ^ 0xFF]) + png[crc_at + 1:]


# Expected bucket of every file of the messy folder (resolution 64, max_upscale 1.5).
EXPECTED = {
    "ok_rgb.png": "accepted", "ok_crop.jpg": "accepted", "formats/ok.webp": "accepted",
    "formats/ok.bmp": "accepted", "formats/ok.tiff": "accepted", "formats/anim.gif": "accepted",
    "deep/er/nested.png": "accepted", "cmyk.jpg": "accepted", "gray16.png": "accepted",
    "palette_t.png": "accepted", "gray.png": "accepted", "exif_rot.jpg": "accepted",
    "icc_linear.png": "accepted", "rgba.png": "accepted",
    "zero.png": "empty_file", "truncated.jpg": "corrupt", "bad_crc.png": "corrupt",
    "text.jpg": "not_an_image", "notes.txt": "not_an_image_extension", "bomb.png": "decompression_bomb",
    "tiny.png": "too_small", "small_upscale.png": "upscale", "zz_dup_of_ok_rgb.bmp": "duplicate",
    "zz_near_ok_crop.jpg": "near_duplicate", "mono.png": "monochrome", "wide.png": "aspect_ratio",
    "tiny_bytes.gif": "file_too_small",
}


def build_messy(root):
    """Write the messy folder; returns {relpath: extra info for checks}."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "formats").mkdir()
    (root / "deep" / "er").mkdir(parents=True)
    w = lambda name, data: (root / name).write_bytes(data)
    ok = picture(1, 96, 96)
    w("ok_rgb.png", enc(ok, "PNG"))
    w("zz_dup_of_ok_rgb.bmp", enc(ok, "BMP"))  # same pixels, another file format
    crop = picture(2, 120, 100)
    w("ok_crop.jpg", enc(crop, "JPEG", quality=95))
    w("zz_near_ok_crop.jpg", enc(crop.resize((114, 95), Image.LANCZOS), "JPEG", quality=80))
    w("formats/ok.webp", enc(picture(3, 80, 80), "WEBP", quality=90))
    w("formats/ok.bmp", enc(picture(4, 80, 80), "BMP"))
    w("formats/ok.tiff", enc(picture(5, 80, 80), "TIFF"))
    f0, f1 = picture(6, 80, 80), picture(7, 80, 80)
    w("formats/anim.gif", enc(f0, "GIF", save_all=True, append_images=[f1], duration=100))
    w("deep/er/nested.png", enc(picture(8, 70, 70), "PNG"))
    w("cmyk.jpg", enc(picture(9, 90, 90).convert("CMYK"), "JPEG", quality=95))
    g = (np.mgrid[0:80, 0:80][1] * 800).astype(np.uint16)  # up to 63200: clipping would give 255 everywhere
    w("gray16.png", enc(Image.fromarray(g), "PNG"))
    pal = picture(10, 80, 80).convert("P", palette=Image.ADAPTIVE, colors=64)
    pa = np.array(pal)
    pa[:, :20] = 63  # left columns -> the transparent index
    pal = Image.frombytes("P", (80, 80), pa.tobytes())
    pal.putpalette(picture(10, 80, 80).convert("P", palette=Image.ADAPTIVE, colors=64).getpalette())
    w("palette_t.png", enc(pal, "PNG", transparency=63))
    w("gray.png", enc(picture(11, 80, 80).convert("L"), "PNG"))
    # Upright: red top half, blue bottom half (+ a green ramp for colours); stored rotated,
    # with EXIF orientation 6 ("rotate 90 CW to display").
    up = np.zeros((96, 96, 3), np.uint8)
    up[:48, :, 0] = 230
    up[48:, :, 2] = 230
    up[:, :, 1] = np.arange(96)[None, :] * 2
    stored = Image.fromarray(up).transpose(Image.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    w("exif_rot.jpg", enc(stored, "JPEG", quality=95, exif=exif.tobytes()))
    lin = np.zeros((64, 64, 3), np.uint8)
    lin[:, :32] = 128  # linear 0.5 -> sRGB ~188
    lin[:, 32:] = np.asarray(picture(12, 32, 64))
    w("icc_linear.png", enc(Image.fromarray(lin), "PNG", icc_profile=linear_rgb_icc()))
    rgba = np.dstack([np.asarray(picture(13, 80, 80)), np.full((80, 80), 255, np.uint8)])
    rgba[:, :30, 3] = 0  # left part fully transparent
    w("rgba.png", enc(Image.fromarray(rgba), "PNG"))
    w("zero.png", b"")
    jpg = enc(picture(14, 90, 90), "JPEG", quality=95)
    w("truncated.jpg", jpg[: len(jpg) // 2])
    w("bad_crc.png", break_idat_crc(enc(picture(15, 80, 80), "PNG")))
    w("text.jpg", b"this is not a picture, just text pretending to be one.\n" * 6)
    w("notes.txt", b"some notes\n")
    w("bomb.png", png_bomb())
    w("tiny.png", enc(picture(16, 16, 16), "PNG"))
    w("small_upscale.png", enc(picture(17, 40, 40), "PNG"))
    w("mono.png", enc(Image.new("RGB", (90, 90), (120, 40, 200)), "PNG"))
    w("wide.png", enc(picture(18, 300, 60), "PNG"))
    w("tiny_bytes.gif", enc(Image.new("P", (1, 1)), "GIF"))
    assert sorted(str(p.relative_to(root).as_posix()) for p in root.rglob("*") if p.is_file()) == sorted(EXPECTED)
    return dict(ok=ok, f0=f0)


OPTS = dict(max_upscale=1.5, background=BG)


@pytest.fixture(scope="module")
def messy_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("messy")
    info = build_messy(tmp / "raw")
    t0 = time.time()
    rep = curate(tmp / "raw", tmp / "out" / "clean.zip", 64, workers=2, progress=False, **OPTS)
    rep["_elapsed"] = time.time() - t0
    return tmp, rep, info


def _report_files(rep):
    with open(rep["report_json"]) as f:
        full = json.load(f)
    return full, {e["path"]: reason for reason, entries in full["files"].items() for e in entries}


def test_every_file_lands_in_its_bucket(messy_run):
    tmp, rep, _ = messy_run
    full, where = _report_files(rep)
    assert where == EXPECTED  # every input file is listed exactly once, in the right bucket
    assert sum(full["counts"].values()) == full["total"] == len(EXPECTED)
    assert full["accepted"] == sum(v == "accepted" for v in EXPECTED.values())
    near = next(e for e in full["files"]["near_duplicate"])
    assert "ok_crop.jpg" in near["detail"]
    assert "ok_rgb.png" in next(e for e in full["files"]["duplicate"])["detail"]
    # contact sheets: one per rejection reason and a sample of accepted ones, all readable PNGs
    sheets = full["contact_sheets"]
    assert set(sheets) == set(full["counts"])
    for name in sheets.values():
        with Image.open(os.path.join(rep["report_dir"], name)) as im:
            assert im.size[0] >= 64 and im.size[1] >= 64
    assert full["notes"].get("icc_converted", 0) >= 1 and full["notes"].get("alpha_composited", 0) >= 2


def _accepted(rep):
    full, _ = _report_files(rep)
    return {e["path"]: e["name"] for e in full["files"]["accepted"]}


def test_zip_is_official_format_and_uniform(messy_run):
    tmp, rep, _ = messy_run
    dest = tmp / "out" / "clean.zip"
    with zipfile.ZipFile(dest) as z:
        infos = z.infolist()
        assert all(i.compress_type == zipfile.ZIP_STORED for i in infos)
        names = sorted(i.filename for i in infos)
        assert names[-1] == "dataset.json"
        assert names[:-1] == [f"00000/img{i:08d}.png" for i in range(rep["accepted"])]
        meta = json.loads(z.read("dataset.json"))
        assert meta["labels"] is None
        for n in names[:-1]:
            with Image.open(io.BytesIO(z.read(n))) as im:
                assert im.format == "PNG" and im.mode == "RGB" and im.size == (64, 64)
                assert "icc_profile" not in im.info  # pixels are sRGB; no stale profile travels along
    ds = ImageDataset(dest, resolution=64)
    assert len(ds) == rep["accepted"] and ds.num_channels == 3 and ds.resolution == 64
    img, label = ds[0]
    assert img.dtype == np.uint8 and img.shape == (3, 64, 64) and label.shape == (0,)
    assert not any(p.name.endswith(".partial") for p in (tmp / "out").rglob("*"))


def test_conversions_are_right(messy_run):
    tmp, rep, info = messy_run
    ds = ImageDataset(tmp / "out" / "clean.zip")
    acc = _accepted(rep)
    get = lambda rel: ds.load_image(ds.image_names.index(acc[rel])).transpose(1, 2, 0).astype(int)
    # EXIF orientation applied: red on top, blue at the bottom (the stored file is rotated).
    a = get("exif_rot.jpg")
    assert a[:24, :, 0].mean() > 180 and a[:24, :, 2].mean() < 60
    assert a[-24:, :, 2].mean() > 180 and a[-24:, :, 0].mean() < 60
    # Alpha composited over the chosen background (left 30 of 80 px transparent -> 24 of 64).
    a = get("rgba.png")
    assert np.abs(a[:, 2:20] - np.array(BG)).max() <= 2
    a = get("palette_t.png")
    assert np.abs(a[:, 2:14] - np.array(BG)).max() <= 2
    # 16-bit grayscale scaled (not clipped): a ramp from 0 to ~246, equal channels.
    a = get("gray16.png")
    assert a[:, :4].mean() < 20 and a[:, -4:].mean() > 200 and (a[..., 0] == a[..., 2]).all()
    assert np.all(np.diff(a[32, :, 0]) >= -2)
    # Grayscale input becomes 3 equal channels.
    a = get("gray.png")
    assert (a[..., 0] == a[..., 1]).all() and a.std() > 10
    # ICC: linear-light 128 converted to sRGB is ~188 (ignoring the profile would leave 128).
    a = get("icc_linear.png")
    assert abs(a[:, 4:28].mean() - 188) < 4
    # CMYK converted back to RGB colours close to the original picture.
    ref = np.asarray(picture(9, 90, 90).crop((0, 0, 90, 90)).resize((64, 64), Image.LANCZOS)).astype(int)
    assert np.abs(get("cmyk.jpg") - ref).mean() < 12
    # GIF: the first frame.
    f0 = np.asarray(info["f0"].resize((64, 64), Image.LANCZOS)).astype(int)
    assert np.abs(get("formats/anim.gif") - f0).mean() < 12


def test_in_process_matches_workers_and_zip_input(messy_run, tmp_path):
    tmp, rep, _ = messy_run
    src_zip = tmp_path / "raw.zip"
    with zipfile.ZipFile(src_zip, "w") as z:
        for p in sorted((tmp / "raw").rglob("*")):
            if p.is_file():
                z.write(p, p.relative_to(tmp / "raw").as_posix())
    rep2 = curate(src_zip, tmp_path / "out", 64, workers=0, progress=False, **OPTS)  # folder output
    assert rep2["counts"] == rep["counts"]
    with zipfile.ZipFile(tmp / "out" / "clean.zip") as z:  # same bytes, same order
        for name in _accepted(rep2).values():
            assert (tmp_path / "out" / name).read_bytes() == z.read(name)
    assert len(ImageDataset(tmp_path / "out")) == rep["accepted"]


def test_options_square_pad_channels_and_filters_off(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "wide.png").write_bytes(enc(picture(1, 96, 64), "PNG"))
    (raw / "mono.png").write_bytes(enc(Image.new("RGB", (64, 64), (5, 5, 5)), "PNG"))
    rep = curate(raw, tmp_path / "d.zip", 32, channels=1, square="pad", background=(255, 0, 0),
                 min_colors=None, workers=0, progress=False)
    assert rep["counts"] == {"accepted": 2}
    ds = ImageDataset(tmp_path / "d.zip")
    assert ds.num_channels == 1
    a = ds.load_image(ds.image_names.index(_accepted(rep)["wide.png"]))[0]
    assert a.shape == (32, 32)
    assert abs(int(a[0:3].mean()) - 76) <= 3  # pad rows are the background's luma (red -> 76)
    # reflect: the padded border mirrors the picture (64x32 -> 64x64, no resize needed)
    (raw / "wide.png").write_bytes(enc(picture(2, 64, 32), "PNG"))
    rep = curate(raw, tmp_path / "r.zip", 64, square="reflect", workers=0, progress=False)
    a = ImageDataset(tmp_path / "r.zip").load_image(0)
    assert (a[:, 15] == a[:, 16]).all() and (a[:, 0] == a[:, 31]).all() and (a[:, 47] == a[:, 48]).all()
    assert not (a[:, 16] == a[:, 17]).all()
    # square='none' rejects the non-square one; nothing accepted -> an error, no dataset, a report
    with pytest.raises(CurateError, match="no image .* was accepted"):
        curate(raw, tmp_path / "n.zip", 32, square="none", workers=0, progress=False)
    assert not (tmp_path / "n.zip").exists()
    with open(tmp_path / "n_report" / "curation_report.json") as f:
        assert json.load(f)["counts"] == {"not_square": 1, "monochrome": 1}


def test_a_source_with_no_files_says_so(tmp_path):
    """A folder (or zip) with nothing in it, say the wrong one, was 'no image of raw was accepted ...
    counts per reason: {}': as if its images had all been refused. It now says the source holds no files."""
    (tmp_path / "raw" / "empty_class").mkdir(parents=True)
    zipfile.ZipFile(tmp_path / "raw.zip", "w").close()
    for src in (tmp_path / "raw", tmp_path / "raw.zip"):
        with pytest.raises(CurateError, match="^" + re.escape(f"{src} holds no files (its sub-folders searched "
                                                              f"too), so {tmp_path / 'd.zip'} was not written; point at")):
            curate(src, tmp_path / "d.zip", 32, workers=0, progress=False)
        assert not (tmp_path / "d.zip").exists()


def test_labels_from_folders_round_trip(tmp_path):
    raw = tmp_path / "raw"
    seeds = {"dogs": [30, 31], "cats": [20, 21, 22]}
    for cls, ss in seeds.items():
        (raw / cls).mkdir(parents=True)
        for s in ss:
            (raw / cls / f"{s}.png").write_bytes(enc(picture(s, 64, 64), "PNG"))
    (raw / "loose.png").write_bytes(enc(picture(40, 64, 64), "PNG"))
    rep = curate(raw, tmp_path / "l.zip", 32, labels="folders", workers=0, progress=False)
    assert rep["counts"] == {"accepted": 5, "no_label": 1} and rep["classes"] == ["cats", "dogs"]
    ds = ImageDataset(tmp_path / "l.zip", use_labels=True)
    assert ds.has_labels and ds.label_dim == 2 and ds.class_names == ["cats", "dogs"]
    for src, name in _accepted(rep).items():
        img, onehot = ds[ds.image_names.index(name)]
        want = 0 if src.startswith("cats/") else 1
        assert onehot.tolist() == [float(i == want) for i in range(2)]
        # the stored pixels are the source picture's
        ref = np.asarray(picture(int(src.split("/")[1][:2]), 64, 64).resize((32, 32), Image.LANCZOS))
        assert np.abs(img.transpose(1, 2, 0).astype(int) - ref).max() <= 1


def test_clear_errors(tmp_path):
    with pytest.raises(CurateError, match="source not found: .*nowhere"):
        curate(tmp_path / "nowhere", tmp_path / "o.zip", 64)
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "a.png").write_bytes(enc(picture(1, 64, 64), "PNG"))
    for resolution in (100, 2, 1, 64.0):
        with pytest.raises(CurateError, match="power of two >= 4"):
            curate(tmp_path / "raw", tmp_path / "o.zip", resolution)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(CurateError, match="afile"):
        curate(tmp_path / "raw", tmp_path / "afile" / "o.zip", 64)
    with pytest.raises(CurateError, match="source .*afile is neither a folder nor a zip file"):
        curate(tmp_path / "afile", tmp_path / "o.zip", 64)
    (tmp_path / "exists.zip").write_bytes(b"old")
    with pytest.raises(CurateError, match="already exists"):
        curate(tmp_path / "raw", tmp_path / "exists.zip", 64)
    assert (tmp_path / "exists.zip").read_bytes() == b"old"


def test_an_archive_name_other_than_zip_is_refused_not_written_as_a_folder(tmp_path):
    """dataset.tar / .tar.gz / .tgz used to become a folder of that name; the error names the .zip to use."""
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "a.png").write_bytes(enc(picture(1, 64, 64), "PNG"))
    for name, use in (("d.tar", "d.zip"), ("d.tar.gz", "d.zip"), ("d.TGZ", "d.zip"), ("d.7z", "d.zip")):
        with pytest.raises(CurateError, match=rf"{name}: a dataset is written as NAME.zip .*use .*{use}"):
            curate(tmp_path / "raw", tmp_path / name, 32, workers=0, progress=False)
        assert not (tmp_path / name).exists()
    rep = curate(tmp_path / "raw", tmp_path / "plain_folder", 32, workers=0, progress=False)  # folders still work
    assert rep["accepted"] == 1 and (tmp_path / "plain_folder" / "dataset.json").is_file()


def test_exception_mid_write_leaves_nothing(tmp_path, monkeypatch):
    raw = tmp_path / "raw"
    raw.mkdir()
    for s in range(5):
        (raw / f"{s}.png").write_bytes(enc(picture(s, 64, 64), "PNG"))
    calls = []
    real_add = DatasetWriter.add

    def failing_add(self, png, label=None):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt("simulated interrupt")
        return real_add(self, png, label)
    monkeypatch.setattr(DatasetWriter, "add", failing_add)
    with pytest.raises(KeyboardInterrupt):
        curate(raw, tmp_path / "out" / "d.zip", 32, workers=0, progress=False)
    assert list((tmp_path / "out").iterdir()) == [] or all(p.is_dir() for p in (tmp_path / "out").iterdir())
    assert not (tmp_path / "out" / "d.zip").exists()
    assert not any(p.name.endswith(".partial") for p in (tmp_path / "out").rglob("*"))


KILL_SCRIPT = r"""
import sys, time
from sg3lib.data.writer import DatasetWriter
from sg3lib.data import curate
real = DatasetWriter.add
def slow_add(self, png, label=None):
    name = real(self, png, label)
    self._zip.fp.flush()
    time.sleep(0.3)
    return name
DatasetWriter.add = slow_add
curate(sys.argv[1], sys.argv[2], 32, workers=0, progress=False)
"""


def test_killed_run_leaves_no_partial_zip_under_dest(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    for s in range(12):
        (raw / f"{s}.png").write_bytes(enc(picture(s, 64, 64), "PNG"))
    out = tmp_path / "out"
    dest = out / "d.zip"
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(raw), str(dest)],
                            cwd=os.path.dirname(os.path.dirname(__file__)))
    deadline = time.time() + 30
    partial = []
    while time.time() < deadline and proc.poll() is None:
        partial = [p for p in out.glob(".d.zip.*.partial")] if out.exists() else []
        if partial and partial[0].stat().st_size > 2000:  # a few images are in
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the curate run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert partial and partial[0].exists()  # it was killed mid-write...
    assert not dest.exists()  # ...and nothing sits under the destination name


def test_streaming_reads_input_lazily(tmp_path):
    """The worker pipeline pulls file names as it goes (memory does not grow with the count)."""
    from sg3lib.data.curate import _results, _settings
    raw = tmp_path / "raw"
    raw.mkdir()
    for s in range(3):
        (raw / f"{s}.png").write_bytes(enc(picture(s, 40, 40), "PNG"))
    pulled = []

    def names():
        for i in range(1000):
            pulled.append(i)
            yield f"{i % 3}.png"
    it = _results(raw, _settings(32, {}), names(), workers=1, chunk=4)
    first = next(it)
    assert first[0] == "0.png" and first[1]["status"] == "ok"
    assert len(pulled) <= 4 * 3  # at most ~2 chunks per worker in flight, not all 1000 names
    it.close()


def test_command_line(tmp_path, capsys):
    from sg3lib.cli import main
    raw = tmp_path / "raw"
    raw.mkdir()
    for s in range(3):
        (raw / f"{s}.png").write_bytes(enc(picture(s, 64, 64), "PNG"))
    (raw / "bad.jpg").write_bytes(b"\xff\xd8\xff" + b"\0" * 200)
    assert main(["curate", str(raw), str(tmp_path / "o.zip"), "--resolution", "32", "--workers", "0"]) == 0
    out = capsys.readouterr().out
    assert "3 of 4 images written" in out and "not_an_image" in out and "accepted" not in out
    assert len(ImageDataset(tmp_path / "o.zip", resolution=32)) == 3
    assert main(["curate", str(raw), str(tmp_path / "p.zip"), "--resolution", "48"]) == 2
    said = capsys.readouterr()
    assert "power of two" in said.err and "power of two" not in said.out  # errors go to stderr
    # 0 turns the size, aspect and upscale filters off (the library takes None; 0 is no valid ratio)
    (raw / "wide.png").write_bytes(enc(picture(9, 128, 16), "PNG"))  # 8:1, 16 px high
    zeros = ["--max-aspect", "0", "--max-upscale", "0", "--min-size", "0", "--min-colors", "0"]
    assert main(["curate", str(raw), str(tmp_path / "q.zip"), "--resolution", "32", "--workers", "0"] + zeros) == 0
    assert "4 of 5 images written" in capsys.readouterr().out


def test_truncated_is_caught_even_if_pillow_was_told_to_be_lenient(tmp_path, monkeypatch):
    from PIL import ImageFile
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)  # as some notebooks do
    raw = tmp_path / "raw"
    raw.mkdir()
    jpg = enc(picture(1, 90, 90), "JPEG", quality=95)
    (raw / "t.jpg").write_bytes(jpg[: len(jpg) // 2])
    (raw / "ok.jpg").write_bytes(jpg)
    rep = curate(raw, tmp_path / "o.zip", 32, workers=0, progress=False)
    assert rep["counts"] == {"accepted": 1, "corrupt": 1}
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # the caller's setting is left as it was


def test_reject_grayscale_option(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "color.png").write_bytes(enc(picture(1, 64, 64), "PNG"))
    (raw / "gray.png").write_bytes(enc(picture(2, 64, 64).convert("L"), "PNG"))
    (raw / "gray_rgb.jpg").write_bytes(enc(picture(3, 64, 64).convert("L").convert("RGB"), "JPEG"))
    rep = curate(raw, tmp_path / "o.zip", 32, reject_grayscale=True, workers=0, progress=False)
    assert rep["counts"] == {"accepted": 1, "grayscale": 2}


def test_demo_script_names_the_apt_command_when_the_font_is_missing(monkeypatch):
    import importlib.util
    spec = importlib.util.spec_from_file_location("build_demo", os.path.join(
        os.path.dirname(os.path.dirname(__file__)), "data", "build_demo.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setattr(mod, "FONT_PATHS", ["/nonexistent/NotoColorEmoji.ttf"])
    monkeypatch.delenv("SG3_EMOJI_FONT", raising=False)
    with pytest.raises(SystemExit, match="apt-get install -y fonts-noto-color-emoji"):
        mod.find_font()


def test_exact_copy_of_a_near_duplicate(tmp_path):
    """Only accepted images enter the exact index: a copy of a rejected near duplicate is a
    near duplicate of what was kept (it used to crash, or name an unrelated image)."""
    raw = tmp_path / "raw"
    raw.mkdir()
    a = picture(2, 120, 100)
    small = enc(a.resize((114, 95), Image.LANCZOS), "PNG")
    (raw / "a.png").write_bytes(enc(a, "PNG"))
    (raw / "b_small.png").write_bytes(small)
    (raw / "c_copy.png").write_bytes(small)
    rep = curate(raw, tmp_path / "o.zip", 64, workers=0, progress=False)
    assert rep["counts"] == {"accepted": 1, "near_duplicate": 2}
    (raw / "c_copy.png").rename(raw / "d_copy.png")
    (raw / "c_other.png").write_bytes(enc(picture(3, 80, 80), "PNG"))  # accepted between the two
    rep = curate(raw, tmp_path / "p.zip", 64, workers=0, progress=False)
    full, where = _report_files(rep)
    assert where["d_copy.png"] == "near_duplicate"
    assert "a.png" in next(e for e in full["files"]["near_duplicate"] if e["path"] == "d_copy.png")["detail"]


def test_size_filters_judge_the_file_not_the_jpeg_draft(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    for side in (1024, 300, 200):
        (raw / f"{side}.jpg").write_bytes(enc(picture(side, side, side), "JPEG", quality=90))
    rep = curate(raw, tmp_path / "o.zip", 64, min_size=256, workers=0, progress=False)
    assert rep["counts"] == {"accepted": 2, "too_small": 1}
    full, where = _report_files(rep)
    assert where["200.jpg"] == "too_small" and full["files"]["too_small"][0]["detail"].startswith("200x200")
    assert sorted(e["size"] for e in full["files"]["accepted"]) == [[300, 300], [1024, 1024]]


def stripes(n_colours, side=64):
    """A picture of exactly `n_colours` distinct colours (vertical stripes)."""
    cols = np.random.default_rng(n_colours).integers(0, 256, (n_colours, 3))
    cols[:, 0] = np.arange(n_colours) * 7  # distinct whatever the draw
    return Image.fromarray(cols[np.arange(side) * n_colours // side][None].repeat(side, 0).astype(np.uint8))


def test_each_filter_accepts_its_limit_and_rejects_one_past_it(tmp_path):
    """The limits are the last value kept: a shorter side of min_size, a ratio of max_aspect, an
    enlargement of max_upscale, min_colors colours and a file of min_bytes bytes are accepted."""
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "edge.png").write_bytes(enc(picture(1, 32, 64), "PNG"))  # side 32, ratio 2, 32 px -> 64 px: x2
    (raw / "short.png").write_bytes(enc(picture(2, 31, 62), "PNG"))
    (raw / "tall.png").write_bytes(enc(picture(3, 20, 100), "PNG"))  # the shorter side decides, not the longer
    (raw / "colours8.png").write_bytes(enc(stripes(8), "PNG"))
    (raw / "colours7.png").write_bytes(enc(stripes(7), "PNG"))
    rep = curate(raw, tmp_path / "a.zip", 64, workers=0, progress=False)  # min_size 32, ratios 2, 8 colours
    _, where = _report_files(rep)
    assert where == {"edge.png": "accepted", "short.png": "too_small", "tall.png": "too_small",
                     "colours8.png": "accepted", "colours7.png": "monochrome"}
    edge = (raw / "edge.png").stat().st_size
    rep = curate(raw, tmp_path / "b.zip", 64, min_size=None, max_aspect=None, min_bytes=edge, workers=0,
                 progress=False)
    _, where = _report_files(rep)
    assert where["edge.png"] == "accepted" and where["short.png"] == "upscale"  # 31 px -> 64 px: x2.06
    assert where["colours7.png"] == "file_too_small" and (raw / "colours7.png").stat().st_size < edge
    with pytest.raises(CurateError, match="no image .* was accepted"):  # edge.png was the largest file kept
        curate(raw, tmp_path / "c.zip", 64, min_bytes=edge + 1, workers=0, progress=False)
    with open(tmp_path / "c_report" / "curation_report.json") as f:
        assert "edge.png" in {e["path"] for e in json.load(f)["files"]["file_too_small"]}


def record_sheets(monkeypatch):
    """{reason: (title, [(thumbnail or None, caption)])} of every contact sheet drawn from here on."""
    from sg3lib.data import report as report_module
    drawn, real = {}, report_module.contact_sheet

    def recording_sheet(tiles, tile, title):
        drawn[title.split(":")[0]] = (title, tiles)
        return real(tiles, tile, title)
    monkeypatch.setattr(report_module, "contact_sheet", recording_sheet)
    return drawn


def test_filtered_images_are_pictured_on_their_contact_sheet_undecodable_ones_crossed_out(tmp_path, monkeypatch):
    drawn = record_sheets(monkeypatch)
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "ok.png").write_bytes(enc(picture(1, 64, 64), "PNG"))
    (raw / "small.png").write_bytes(enc(Image.new("RGB", (16, 16), (200, 30, 90)), "PNG"))
    (raw / "wide.png").write_bytes(enc(picture(5, 150, 50), "PNG"))
    (raw / "broken.png").write_bytes(enc(picture(6, 64, 64), "PNG")[:200])
    rep = curate(raw, tmp_path / "o.zip", 32, min_colors=None, min_bytes=None, workers=0, progress=False)
    assert rep["counts"] == {"accepted": 1, "too_small": 1, "aspect_ratio": 1, "corrupt": 1}
    (small, cap), = drawn["too_small"][1]
    assert cap == "small.png" and small.getpixel((8, 8)) == (200, 30, 90)
    (wide, _), = drawn["aspect_ratio"][1]
    assert wide.size == (64, 21)  # the file's own shape, shrunk to the tile
    assert drawn["corrupt"][1] == [(None, "broken.png")]


def test_the_reported_size_is_the_upright_files(tmp_path):
    """A photo stored sideways (EXIF orientation 6) is reported at the size it is seen at."""
    raw = tmp_path / "raw"
    raw.mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6
    (raw / "sideways.jpg").write_bytes(enc(picture(1, 96, 64), "JPEG", quality=90, exif=exif.tobytes()))
    rep = curate(raw, tmp_path / "o.zip", 32, workers=0, progress=False)
    assert [e["size"] for e in _report_files(rep)[0]["files"]["accepted"]] == [[64, 96]]


def test_fast_jpeg_decodes_at_twice_the_target_or_more(tmp_path, monkeypatch):
    """fast_jpeg's reduced DCT scale stops at 2x the resolution, so that the final Lanczos resize still
    filters (the DCT scale alone, straight to the target, aliases)."""
    from sg3lib.data import images
    seen, real = [], images.resize
    monkeypatch.setattr(images, "resize", lambda img, r: seen.append(img.size) or real(img, r))
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "big.jpg").write_bytes(enc(picture(1, 512, 512), "JPEG", quality=90))
    curate(raw, tmp_path / "fast.zip", 64, workers=0, progress=False)
    curate(raw, tmp_path / "full.zip", 64, fast_jpeg=False, workers=0, progress=False)
    assert seen == [(128, 128), (512, 512)]


@pytest.mark.parametrize("colour", ["#0ac81e", "#0ac81eff", "rgb(10, 200, 30)", (10, 200, 30), (10, 200, 30, 128)])
def test_a_background_may_be_named_in_any_form_and_its_alpha_is_ignored(tmp_path, colour):
    raw = tmp_path / "raw"
    raw.mkdir()
    a = np.asarray(picture(1, 64, 64).convert("RGBA")).copy()
    a[:, :16, 3] = 0  # a transparent left quarter
    (raw / "a.png").write_bytes(enc(Image.fromarray(a), "PNG"))
    curate(raw, tmp_path / "o.zip", 32, background=colour, workers=0, progress=False)
    assert tuple(ImageDataset(tmp_path / "o.zip").load_image(0)[:, 16, 2]) == BG


def test_a_perceptual_hash_survives_a_resize_and_a_jpeg_but_tells_pictures_apart():
    from sg3lib.data import images as im
    rng = np.random.default_rng(0)
    hashes, copies = [], []
    for seed in range(12):
        noisy = np.asarray(picture(seed, 256, 256)) + rng.normal(0, 25, (256, 256, 3))  # detail a thumbnail can alias
        p = Image.fromarray(noisy.clip(0, 255).astype(np.uint8))
        hashes.append(im.phash(p))
        copies.append(im.phash(Image.open(io.BytesIO(enc(p.resize((200, 200), Image.LANCZOS), "JPEG", quality=80)))))
    distance = lambda a, b: bin(a ^ b).count("1")
    assert max(distance(a, b) for a, b in zip(hashes, copies)) <= 4  # the default --near-dup
    assert min(distance(a, b) for i, a in enumerate(hashes) for b in hashes[:i]) > 8


def test_images_that_share_their_bytes_but_not_their_shape_are_not_duplicates(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    a = np.asarray(picture(1, 48, 64))
    (raw / "tall.png").write_bytes(enc(Image.fromarray(a), "PNG"))
    (raw / "wide.png").write_bytes(enc(Image.fromarray(a.reshape(48, 64, 3)), "PNG"))  # the same bytes
    rep = curate(raw, tmp_path / "o.zip", 32, near_dup_threshold=None, workers=0, progress=False)
    assert rep["counts"] == {"accepted": 2}


def test_colours_are_counted_on_a_thumbnail_that_mixes_none():
    """A big two-colour image is still two colours: a blending resize would invent the mixtures."""
    from sg3lib.data import images as im
    two = np.where(np.random.default_rng(0).random((500, 700, 1)) < 0.5, [200, 20, 20], [20, 20, 200])
    assert im.count_colors(Image.fromarray(two.astype(np.uint8))) == 2


def test_a_tint_of_8_levels_is_grey_and_of_9_is_colour():
    from sg3lib.data import images as im
    grey = np.linspace(0, 240, 64)[None, :, None].repeat(64, 0).repeat(3, 2)
    for tint, is_grey in ((8, True), (9, False)):
        tinted = grey + [0, tint / 2, tint]
        assert im.is_grayscale(Image.fromarray(np.round(tinted).astype(np.uint8))) == is_grey, tint


def test_crop_keeps_the_centre(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    a = np.asarray(picture(1, 96, 64))
    (raw / "wide.png").write_bytes(enc(Image.fromarray(a), "PNG"))
    (raw / "tall.png").write_bytes(enc(Image.fromarray(np.ascontiguousarray(a.transpose(1, 0, 2))), "PNG"))
    rep = curate(raw, tmp_path / "o.zip", 64, workers=0, progress=False)
    ds, names = ImageDataset(tmp_path / "o.zip"), _accepted(rep)
    wide, tall = (ds.load_image(ds.image_names.index(names[n])).transpose(1, 2, 0) for n in ("wide.png", "tall.png"))
    assert (wide == a[:, 16:80]).all() and (tall == a[:, 16:80].transpose(1, 0, 2)).all()


def test_linked_folders_and_dangling_links_are_listed(tmp_path):
    raw, other = tmp_path / "raw", tmp_path / "other"
    raw.mkdir()
    other.mkdir()
    (raw / "a.png").write_bytes(enc(picture(1, 64, 64), "PNG"))
    for s in range(2):
        (other / f"{s}.png").write_bytes(enc(picture(10 + s, 64, 64), "PNG"))
    os.symlink(other, raw / "linked")
    os.symlink(raw, other / "loop")  # back into the chain: listed, not followed
    os.symlink(tmp_path / "gone.png", raw / "dangling.png")
    rep = curate(raw, tmp_path / "o.zip", 32, workers=0, progress=False)
    _, where = _report_files(rep)
    assert where == {"a.png": "accepted", "linked/0.png": "accepted", "linked/1.png": "accepted",
                     "dangling.png": "error", "linked/loop": "not_an_image_extension"}
    assert rep["total"] == 5


def test_dataset_gets_the_usual_file_modes(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "a.png").write_bytes(enc(picture(1, 64, 64), "PNG"))
    old = os.umask(0o022)
    try:
        curate(raw, tmp_path / "d.zip", 32, workers=0, progress=False)
        curate(raw, tmp_path / "d_dir", 32, workers=0, progress=False)
    finally:
        os.umask(old)
    assert (tmp_path / "d.zip").stat().st_mode & 0o777 == 0o644  # not mkstemp's private 0600
    assert (tmp_path / "d_dir").stat().st_mode & 0o777 == 0o755


def test_output_inside_the_source_is_refused(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "a.png").write_bytes(enc(picture(1, 64, 64), "PNG"))
    with pytest.raises(CurateError, match="destination .*clean.zip is inside the source folder"):
        curate(raw, raw / "clean.zip", 32, workers=0, progress=False)
    with pytest.raises(CurateError, match="report folder .*rep is inside the source folder"):
        curate(raw, tmp_path / "clean.zip", 32, report_dir=raw / "rep", workers=0, progress=False)
    assert sorted(p.name for p in raw.iterdir()) == ["a.png"]


def test_macos_metadata_is_its_own_reason_and_no_class(tmp_path):
    """A zip made by macOS's Finder carries __MACOSX/ and ._ files named like the images."""
    src = tmp_path / "finder.zip"
    with zipfile.ZipFile(src, "w") as z:
        for i, cls in enumerate(("cats", "dogs")):
            z.writestr(f"{cls}/{i}.png", enc(picture(50 + i, 64, 64), "PNG"))
            z.writestr(f"__MACOSX/{cls}/._{i}.png", b"\0\5\26\7" + b"\0" * 60)  # AppleDouble header
        z.writestr("cats/._0.png", b"\0\5\26\7" + b"\0" * 60)
    rep = curate(src, tmp_path / "o.zip", 32, labels="folders", workers=0, progress=False)
    assert rep["counts"] == {"accepted": 2, "macos_metadata": 3} and rep["classes"] == ["cats", "dogs"]


@pytest.mark.parametrize("workers", [-1, 1.5, "2"])
def test_workers_must_be_a_count(tmp_path, workers):
    """--workers -1 was taken (a pool of -1 processes fails later, deep in concurrent.futures)."""
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "a.png").write_bytes(enc(picture(1, 64, 64), "PNG"))
    with pytest.raises(CurateError, match="workers=.*the number of worker processes"):
        curate(raw, tmp_path / "o.zip", 32, workers=workers, progress=False)
    assert not (tmp_path / "o.zip").exists()


def test_folders_without_images_are_no_class(tmp_path):
    """Jupyter leaves .ipynb_checkpoints/ beside the class folders; it must not become a class
    (one more label dimension, no image ever carrying it)."""
    raw = tmp_path / "raw"
    for i, cls in enumerate(("cats", "dogs")):
        (raw / cls).mkdir(parents=True)
        (raw / cls / f"{i}.png").write_bytes(enc(picture(70 + i, 64, 64), "PNG"))
    (raw / ".ipynb_checkpoints").mkdir()
    (raw / ".ipynb_checkpoints" / "look-checkpoint.ipynb").write_text("{}")
    (raw / "notes").mkdir()
    (raw / "notes" / "sources.txt").write_text("where the pictures came from")
    rep = curate(raw, tmp_path / "o.zip", 32, labels="folders", workers=0, progress=False)
    assert rep["classes"] == ["cats", "dogs"] and rep["counts"] == {"accepted": 2, "not_an_image_extension": 2}
    assert ImageDataset(tmp_path / "o.zip", use_labels=True).label_dim == 2


def test_a_class_left_without_images_is_counted_and_warned(tmp_path, capsys):
    """A class folder whose every image is rejected (here: too small) kept its label with no image
    carrying it, silently: a conditional run then has a class it can never learn. The report counts
    the images of each class and curate warns about an empty one (the numbering stays the folders')."""
    raw = tmp_path / "raw"
    for k, (cls, sizes) in enumerate((("birds", [16]), ("cats", [64, 64]), ("dogs", [64]))):
        (raw / cls).mkdir(parents=True)
        for i, r in enumerate(sizes):
            (raw / cls / f"{i}.png").write_bytes(enc(picture(80 + 10 * k + i, r, r), "PNG"))
    with pytest.warns(UserWarning, match="class 'birds' .*no image"):
        rep = curate(raw, tmp_path / "e.zip", 32, labels="folders", workers=0, progress=False)
    assert rep["images_per_class"] == {"birds": 0, "cats": 2, "dogs": 1}
    with open(tmp_path / "e_report" / "curation_report.json") as f:
        assert json.load(f)["images_per_class"] == rep["images_per_class"]
    assert ImageDataset(tmp_path / "e.zip", use_labels=True).label_dim == 3
    # sg3 curate says it in one line of its own, not as Python's warning with a source line.
    from sg3lib.cli import main
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("default")  # as a shell's python shows it
        assert main(["curate", str(raw), str(tmp_path / "f.zip"), "--resolution", "32", "--labels", "folders",
                     "--workers", "0"]) == 0
    err = capsys.readouterr().err
    assert "sg3 curate: warning: class 'birds'" in err and "UserWarning" not in err and "warnings.warn" not in err


def test_labels_from_folders_needs_two_class_folders(tmp_path):
    src = tmp_path / "wrapped.zip"  # `zip -r wrapped.zip raw`: every class folder under one
    with zipfile.ZipFile(src, "w") as z:
        for i, cls in enumerate(("cats", "dogs")):
            z.writestr(f"raw/{cls}/{i}.png", enc(picture(60 + i, 64, 64), "PNG"))
    with pytest.raises(CurateError, match="only one, 'raw' .*point at the folder that holds the class folders"):
        curate(src, tmp_path / "o.zip", 32, labels="folders", workers=0, progress=False)
    assert not (tmp_path / "o.zip").exists() and not (tmp_path / "o_report").exists()
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "a.png").write_bytes(enc(picture(62, 64, 64), "PNG"))
    with pytest.raises(CurateError, match="but it has none"):
        curate(flat, tmp_path / "f.zip", 32, labels="folders", workers=0, progress=False)


# A worker that dies: an initializer from a module of its own (so that spawn and forkserver
# workers import it too, not only forked ones) makes decode() exit the process on a marked file.
CRASHY_WORKER = r'''
import importlib, os
from sg3lib.data import images
curate_module = importlib.import_module("sg3lib.data.curate")
real_init = curate_module._init_worker  # taken before the test swaps it

def init(src, settings):
    real_decode = images.decode
    def decode(data, *args, **kwargs):
        if b"KILL-THE-WORKER" in data:
            os._exit(3)  # as the kernel's OOM killer would end it: no exception, no cleanup
        return real_decode(data, *args, **kwargs)
    images.decode = decode
    real_init(src, settings)


def dead_on_arrival(src, settings):
    os._exit(3)
'''


@pytest.fixture
def crashy(tmp_path, monkeypatch):
    import importlib
    (tmp_path / "crashy_worker.py").write_text(CRASHY_WORKER)
    monkeypatch.syspath_prepend(str(tmp_path))
    mod = importlib.import_module("crashy_worker")
    cm = importlib.import_module("sg3lib.data.curate")
    yield mod, cm
    sys.modules.pop("crashy_worker", None)


def marked_png(seed):
    from PIL.PngImagePlugin import PngInfo
    info = PngInfo()
    info.add_text("note", "KILL-THE-WORKER")
    return enc(picture(seed, 64, 64), "PNG", pnginfo=info)


def test_a_dying_worker_costs_one_file_not_the_run(tmp_path, monkeypatch, crashy):
    mod, cm = crashy
    monkeypatch.setattr(cm, "_init_worker", mod.init)
    raw = tmp_path / "raw"
    raw.mkdir()
    for s in range(8):
        (raw / f"{s}.png").write_bytes(enc(picture(70 + s, 64, 64), "PNG"))
    (raw / "3b.png").write_bytes(marked_png(99))
    names = sorted(p.name for p in raw.iterdir())
    # chunks of 2 on 2 workers: the pool dies with several chunks in flight
    got = [(rel, r["status"]) for rel, r in cm._results(raw, cm._settings(32, {}), iter(names), workers=2, chunk=2)]
    assert got == [(n, "worker_crashed" if n == "3b.png" else "ok") for n in names]
    rep = curate(raw, tmp_path / "o.zip", 32, workers=2, progress=False)
    assert rep["counts"] == {"accepted": 8, "worker_crashed": 1}
    full, where = _report_files(rep)
    assert where["3b.png"] == "worker_crashed" and "died on this file" in full["files"]["worker_crashed"][0]["detail"]
    assert len(ImageDataset(tmp_path / "o.zip")) == 8


def test_workers_that_cannot_start_are_an_error_not_a_reject_per_file(tmp_path, monkeypatch, crashy):
    mod, cm = crashy
    monkeypatch.setattr(cm, "_init_worker", mod.dead_on_arrival)
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "a.png").write_bytes(enc(picture(1, 64, 64), "PNG"))
    with pytest.raises(CurateError, match="die before they process any file; run with workers=0"):
        curate(raw, tmp_path / "o.zip", 32, workers=1, progress=False)
    assert not (tmp_path / "o.zip").exists()


def failing_scandir(monkeypatch, folder_name):
    """os.scandir refusing one folder, as chmod 000 does (tests may run as root, where it does not)."""
    real = os.scandir

    def scandir(path="."):
        if not isinstance(path, int) and os.path.basename(os.fspath(path).rstrip("/")) == folder_name:
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real(path)
    monkeypatch.setattr(os, "scandir", scandir)


def test_unreadable_sub_folder_is_reported_not_a_traceback(tmp_path, monkeypatch):
    raw = tmp_path / "raw"
    for i, cls in enumerate(("cats", "dogs", "locked")):
        (raw / cls).mkdir(parents=True)
        (raw / cls / f"{i}.png").write_bytes(enc(picture(80 + i, 64, 64), "PNG"))
    failing_scandir(monkeypatch, "locked")
    rep = curate(raw, tmp_path / "o.zip", 32, labels="folders", workers=0, progress=False)
    assert rep["counts"] == {"accepted": 2, "unreadable_folder": 1} and rep["total"] == 3
    assert rep["classes"] == ["cats", "dogs"]  # a folder not read is no class
    full, where = _report_files(rep)
    assert where["locked/"] == "unreadable_folder"
    assert "Permission denied" in full["files"]["unreadable_folder"][0]["detail"]
    failing_scandir(monkeypatch, "raw")  # the source itself: a clear error
    with pytest.raises(CurateError, match="cannot read the source folder .*raw .*Permission denied"):
        curate(raw, tmp_path / "p.zip", 32, workers=0, progress=False)


def test_decode_leaves_pillows_pixel_limit_alone(tmp_path, monkeypatch):
    from sg3lib.data import images as im
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # a process's own, stricter setting
    img, size = im.decode(enc(picture(1, 64, 64), "PNG"), max_pixels=10_000)  # 4096 px: > 2x Pillow's limit
    assert size == (64, 64) and Image.MAX_IMAGE_PIXELS == 1000
    with pytest.raises(im.Reject, match="decompression_bomb") as e:
        im.decode(enc(picture(1, 64, 64), "PNG"), max_pixels=4000)
    assert "--max-pixels" in e.value.detail  # says how to take a genuine large photo
    assert Image.MAX_IMAGE_PIXELS == 1000
    with pytest.raises(Image.DecompressionBombError):  # the rest of the process keeps its limit
        Image.open(io.BytesIO(enc(picture(1, 64, 64), "PNG")))


def capped_source(root):
    """Names in input order around a cap of 3: duplicates of kept images before it, files of
    every kind after it."""
    root.mkdir()
    a0, a2 = picture(90, 80, 80), picture(92, 90, 80)
    files = {
        "a0.png": enc(a0, "PNG"), "a1_dup.bmp": enc(a0, "BMP"), "a2.jpg": enc(a2, "JPEG", quality=95),
        "a3_near.jpg": enc(a2.resize((86, 76), Image.LANCZOS), "JPEG", quality=80),
        "a4.png": enc(picture(94, 80, 80), "PNG"), "a5_corrupt.png": break_idat_crc(enc(picture(95, 80, 80), "PNG")),
        "a6.png": enc(picture(96, 80, 80), "PNG"), "a7_dup.png": enc(a0, "PNG", compress_level=1), "a8.txt": b"notes" * 40,
    }
    for name, data in files.items():
        (root / name).write_bytes(data)
    return files


def _images(zip_path):
    with zipfile.ZipFile(zip_path) as z:
        return {n: z.read(n) for n in z.namelist() if n.endswith(".png")}


def test_max_images_stops_reading_and_keeps_the_same_selection(tmp_path, monkeypatch):
    from sg3lib.data import images as im
    files = capped_source(tmp_path / "raw")
    full = curate(tmp_path / "raw", tmp_path / "all.zip", 64, workers=0, progress=False)
    first3 = [e["path"] for e in _report_files(full)[0]["files"]["accepted"]][:3]
    assert first3 == ["a0.png", "a2.jpg", "a4.png"]  # the duplicates before the cap are not kept

    by_bytes, decoded, real_decode = {v: k for k, v in files.items()}, [], im.decode
    def counting_decode(data, *args, **kwargs):
        decoded.append(by_bytes[bytes(data)])
        return real_decode(data, *args, **kwargs)
    monkeypatch.setattr(im, "decode", counting_decode)
    rep = curate(tmp_path / "raw", tmp_path / "cap.zip", 64, workers=0, progress=False, max_images=3)
    assert decoded == ["a0.png", "a1_dup.bmp", "a2.jpg", "a3_near.jpg", "a4.png"]  # nothing after the 3rd kept
    report, where = _report_files(rep)
    assert [e["path"] for e in report["files"]["accepted"]] == first3
    assert _images(tmp_path / "cap.zip") == {n: b for n, b in _images(tmp_path / "all.zip").items()
                                              if n in {e["name"] for e in report["files"]["accepted"]}}
    assert {n: where[n] for n in ("a5_corrupt.png", "a6.png", "a7_dup.png", "a8.txt")} == {
        "a5_corrupt.png": "over_max_images", "a6.png": "over_max_images", "a7_dup.png": "over_max_images",
        "a8.txt": "not_an_image_extension"}  # every file still listed, once; the unread under over_max_images
    assert sum(rep["counts"].values()) == rep["total"] == len(files)
    assert "not used" in report["files"]["over_max_images"][0]["detail"]
    monkeypatch.undo()
    pooled = curate(tmp_path / "raw", tmp_path / "pool.zip", 64, workers=2, progress=False, max_images=3)
    assert _images(tmp_path / "pool.zip") == _images(tmp_path / "cap.zip")  # the workers stopped early too
    assert _report_files(pooled)[1] == where


def test_max_images_must_be_positive(tmp_path):
    capped_source(tmp_path / "raw")
    with pytest.raises(CurateError, match=r"max_images \(--max-images\) must be a whole number >= 1"):
        curate(tmp_path / "raw", tmp_path / "o.zip", 64, workers=0, progress=False, max_images=0)


def test_overwrite_removes_the_earlier_runs_contact_sheets_only(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    for s in range(3):
        (raw / f"{s}.png").write_bytes(enc(picture(40 + s, 64, 64), "PNG"))
    (raw / "broken.png").write_bytes(break_idat_crc(enc(picture(49, 64, 64), "PNG")))
    (raw / "tiny.png").write_bytes(enc(picture(48, 16, 16), "PNG"))
    curate(raw, tmp_path / "d.zip", 32, workers=0, progress=False)
    out = tmp_path / "d_report"
    assert {"rejected_corrupt.png", "rejected_too_small.png"} <= {p.name for p in out.iterdir()}
    with Image.open(out / "rejected_too_small.png") as old:  # as an older sg3lib wrote it: no mark inside
        old.load()
    old.save(out / "rejected_too_small.png")
    picture(1, 20, 20).save(out / "rejected_by_me.png")  # the user's own files, named like ours
    (out / "notes.txt").write_text("mine")
    (raw / "broken.png").unlink()
    (raw / "tiny.png").unlink()
    rep = curate(raw, tmp_path / "d.zip", 32, workers=0, progress=False, overwrite=True)
    assert rep["contact_sheets"] == {"accepted": "accepted_sample.png"}
    assert sorted(p.name for p in out.iterdir()) == ["accepted_sample.png", "curation_report.json",
                                                      "notes.txt", "rejected_by_me.png"]


def test_unreadable_folder_is_not_listed_again_for_its_reason(tmp_path, monkeypatch):
    raw = tmp_path / "raw"
    for i, cls in enumerate(("a", "locked")):
        (raw / cls).mkdir(parents=True)
        (raw / cls / f"{i}.png").write_bytes(enc(picture(60 + i, 64, 64), "PNG"))
    real, calls = os.scandir, []

    def scandir(path="."):  # refused while curate scans (counting, then reading), allowed after
        if not isinstance(path, int) and os.path.basename(os.fspath(path).rstrip("/")) == "locked":
            calls.append(path)
            if len(calls) <= 2:
                raise PermissionError(13, "Permission denied", os.fspath(path))
        return real(path)
    monkeypatch.setattr(os, "scandir", scandir)
    rep = curate(raw, tmp_path / "o.zip", 32, workers=0, progress=False)
    full, where = _report_files(rep)
    assert where == {"a/0.png": "accepted", "locked/": "unreadable_folder"}
    assert "(Permission denied)" in full["files"]["unreadable_folder"][0]["detail"]  # the scan's own reason
    assert len(calls) == 2


def gif_claiming(frames, first=None):
    """A 64x64 GIF: a real first frame (or one that claims `first` = (w, h)), then frames
    that claim (w, h) each, with one pixel of data."""
    def claimed(w, h):
        return b"," + struct.pack("<HHHHB", 0, 0, w, h, 0) + b"\x02\x02\x44\x01\x00"
    if first is None:
        buf = io.BytesIO()
        picture(3, 64, 64).convert("P").save(buf, format="GIF")
        g = buf.getvalue()[:-1]  # without the trailer
    else:
        g = b"GIF89a" + struct.pack("<HHBBB", 64, 64, 0x80, 0, 0) + b"\0\0\0\xff\xff\xff" + claimed(*first)
    return g + b"".join(claimed(w, h) for w, h in frames) + b";"


def test_gif_frame_bombs():
    """Not a regression test (this worked before): a first frame larger than the GIF's screen
    is a decompression bomb, like a single-frame one; later frames are never read."""
    from sg3lib.data import images as im
    with pytest.raises(im.Reject, match="decompression_bomb"):
        im.decode(gif_claiming([], first=(20000, 20000)))
    img, size = im.decode(gif_claiming([(20000, 20000)] + [(64, 64)] * 2000))
    assert size == (64, 64) and img.size == (64, 64)


def test_max_images_takes_any_whole_number_but_not_a_bool(tmp_path):
    """A numpy integer (a count computed with numpy) is a whole number, as workers= takes one; True is not 1."""
    import numpy as np
    capped_source(tmp_path / "raw")
    rep = curate(tmp_path / "raw", tmp_path / "np.zip", 64, workers=0, progress=False, max_images=np.int64(3))
    assert rep["accepted"] == 3
    with pytest.raises(CurateError, match=r"max_images \(--max-images\) must be a whole number >= 1"):
        curate(tmp_path / "raw", tmp_path / "b.zip", 64, workers=0, progress=False, max_images=True)


def srgb_of_linear(v):
    """8-bit sRGB code of linear-light 8-bit values: the sRGB transfer curve, computed here."""
    lin = np.asarray(v, dtype=np.float64) / 255
    return np.round(255 * np.where(lin <= 0.0031308, 12.92 * lin, 1.055 * lin ** (1 / 2.4) - 0.055))


def to_rgb(data, channels=3, background=(0, 128, 255)):
    from sg3lib.data import images as im
    notes = []
    img, _ = im.decode(data)
    return np.asarray(im.to_rgb_or_l(img, channels, background, notes)).astype(int), notes


def test_palette_and_16bit_grey_images_get_their_icc_profile_converted():
    """A palette PNG's profile describes its palette colours, a 16-bit grey PNG's its grey levels:
    both were left as stored (the palette silently, the 16-bit profile dropped when scaling)."""
    levels = np.array([40, 90, 128, 200, 250])
    pal = Image.fromarray(np.repeat(levels, 8)[None].repeat(4, 0).astype(np.uint8)).convert("RGB")
    pal = pal.convert("P", palette=Image.ADAPTIVE, colors=8)
    a, notes = to_rgb(enc(pal, "PNG", icc_profile=linear_rgb_icc()))
    assert np.abs(a[0, ::8, 0] - srgb_of_linear(levels)).max() <= 2 and "icc_converted" in notes
    a, notes = to_rgb(enc(pal, "PNG", icc_profile=linear_rgb_icc(), transparency=0))  # P + tRNS as well
    assert "icc_converted" in notes and "alpha_composited" in notes
    grey16 = Image.fromarray((np.repeat(levels, 8)[None].repeat(4, 0) * 257).astype(np.uint16))
    a, notes = to_rgb(enc(grey16, "PNG", icc_profile=linear_rgb_icc(grey=True)), channels=1)
    assert np.abs(a[0, ::8] - srgb_of_linear(levels)).max() <= 2 and "icc_converted" in notes


def test_a_profile_is_taken_for_srgb_by_its_colours_not_its_name():
    """A profile whose description starts with 'sRGB' was kept as stored, whatever its curve: a linear
    one with sRGB primaries ('sRGB-elle-V2-g10', as Krita ships) gave no conversion and no note. The
    real sRGB profile still converts nothing."""
    from PIL import ImageCms
    levels = np.array([40, 90, 128, 200, 250])
    img = Image.fromarray(np.repeat(levels, 8)[None].repeat(4, 0).astype(np.uint8)).convert("RGB")
    a, notes = to_rgb(enc(img, "PNG", icc_profile=linear_rgb_icc(name="sRGB-elle-V2-g10")))
    assert np.abs(a[0, ::8, 0] - srgb_of_linear(levels)).max() <= 2 and "icc_converted" in notes
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    pixels = picture(3, 32, 32)
    for mode in ("RGB", "RGBA"):
        a, notes = to_rgb(enc(pixels.convert(mode), "PNG", icc_profile=srgb))
        assert "icc_converted" not in notes and (a == np.asarray(pixels)).all(), mode


def test_a_profile_a_few_levels_from_srgb_is_still_converted():
    """Gamma 2.2 is sRGB but for the darks (up to 9 levels): "the same" means within one level."""
    levels = np.array([8, 15, 30, 128, 250])
    img = Image.fromarray(np.repeat(levels, 8)[None].repeat(4, 0).astype(np.uint8)).convert("RGB")
    a, notes = to_rgb(enc(img, "PNG", icc_profile=linear_rgb_icc(gamma=2.2)))
    want = srgb_of_linear(255 * (levels / 255) ** (563 / 256))  # (the curve's 8.8 fixed-point gamma)
    assert "icc_converted" in notes and np.abs(a[0, ::8, 0] - want).max() <= 2
    assert np.abs(want - levels).max() >= 5  # (a change the old pixels would fail)


def test_half_transparent_pixels_are_blended_with_the_background():
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 255, 128  # half-clear red
    a, notes = to_rgb(enc(Image.fromarray(rgba), "PNG"), background=(0, 0, 255))
    assert "alpha_composited" in notes and np.abs(a - [128, 0, 127]).max() <= 1


def test_a_float_image_of_0_to_1_reaches_white():
    a, _ = to_rgb(enc(Image.fromarray(np.array([[0.0, 0.5, 1.0]], np.float32)), "TIFF"), channels=1)
    assert a.tolist() == [[0, 128, 255]]


def test_the_pixel_limit_itself_is_allowed():
    from sg3lib.data import images as im
    data = enc(picture(1, 64, 48), "PNG")
    assert im.decode(data, max_pixels=64 * 48)[1] == (64, 48)
    with pytest.raises(im.Reject, match="decompression_bomb"):
        im.decode(data, max_pixels=64 * 48 - 1)


def test_a_cut_off_exif_block_is_noted():
    """A cut-off EXIF block gives no tag: Pillow keeps the image as stored, and there was no exif_ignored note."""
    exif = Image.Exif()
    exif[0x0112] = 6
    a, notes = to_rgb(enc(picture(4, 20, 10), "JPEG", exif=exif.tobytes()[:12]))
    assert a.shape[:2] == (10, 20) and "exif_ignored" in notes  # as stored
    a, notes = to_rgb(enc(picture(4, 20, 10), "JPEG", exif=exif.tobytes()))
    assert a.shape[:2] == (20, 10) and "exif_ignored" not in notes


def test_a_bomb_past_twice_the_limit_is_named_with_our_limit():
    """Pillow's own error (past twice its MAX_IMAGE_PIXELS) named its doubled threshold, neither the
    --max-pixels given nor the default."""
    from sg3lib.data import images as im
    for max_pixels in (None, 50_000_000, 200_000_000):
        kw = {} if max_pixels is None else {"max_pixels": max_pixels}
        with pytest.raises(im.Reject) as e:
            im.decode(png_bomb(100_000), **kw)
        assert e.value.reason == "decompression_bomb"
        assert f"10000000000 pixels > limit {max_pixels or im.DEFAULT_MAX_PIXELS}. " in str(e.value), str(e.value)


def test_a_transparent_colour_survives_the_icc_conversion():
    """An RGB or grey PNG's tRNS colour and an ICC profile: the converted image lost the tRNS entry,
    so the clear pixels came out as their stored colour (after conversion), not as the background."""
    bg = (0, 128, 255)
    rgb = np.full((4, 8, 3), 128, np.uint8)
    rgb[:, :4] = (10, 20, 30)
    a, notes = to_rgb(enc(Image.fromarray(rgb), "PNG", transparency=(10, 20, 30), icc_profile=linear_rgb_icc()),
                      background=bg)
    assert (a[:, :4] == bg).all() and (np.abs(a[:, 4:] - srgb_of_linear(128)) <= 2).all()
    assert "icc_converted" in notes and "alpha_composited" in notes
    grey = np.full((4, 8), 128, np.uint8)
    grey[:, :4] = 7
    a, notes = to_rgb(enc(Image.fromarray(grey), "PNG", transparency=7, icc_profile=linear_rgb_icc(grey=True)),
                      background=bg)
    assert (a[:, :4] == bg).all() and (np.abs(a[:, 4:] - srgb_of_linear(128)) <= 2).all()
    assert "icc_converted" in notes and "alpha_composited" in notes


def test_grey_images_with_an_rgb_profile_are_converted_not_called_unreadable():
    """Pillow's convert('L') keeps the colour image's profile, so grey files often carry an RGB one:
    the grey transform failed on it and the image was noted `icc_ignored` (an unreadable profile),
    its grey levels left as stored in the profile's space."""
    from PIL import ImageCms
    grey = Image.fromarray(np.repeat(np.array([40, 90, 128, 200, 250], np.uint8), 8)[None].repeat(4, 0))
    want = srgb_of_linear([40, 90, 128, 200, 250])
    for channels in (1, 3):
        a, notes = to_rgb(enc(grey, "PNG", icc_profile=linear_rgb_icc()), channels=channels)
        assert np.abs(a[0, ::8].reshape(5, -1) - want[:, None]).max() <= 2 and notes == ["icc_converted"]
    la = Image.merge("LA", (grey, Image.new("L", grey.size, 255)))
    a, notes = to_rgb(enc(la, "PNG", icc_profile=linear_rgb_icc()))
    assert np.abs(a[0, ::8] - want[:, None]).max() <= 2 and "icc_converted" in notes
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    a, notes = to_rgb(enc(grey, "PNG", icc_profile=srgb), channels=1)  # sRGB already: kept as it is
    assert (a == np.asarray(grey)).all() and notes == []


def grey_png(values, bits, trns):
    """A grey PNG of `bits` per pixel (1/2/4/16, which Pillow cannot all write) with a tRNS grey value."""
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    rows = b""
    for row in values:
        bitstring = "".join(format(int(v), f"0{bits}b") for v in row)
        bitstring += "0" * (-len(bitstring) % 8)
        rows += b"\0" + int(bitstring, 2).to_bytes(len(bitstring) // 8, "big")
    h, w = values.shape
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, bits, 0, 0, 0, 0))
            + chunk(b"tRNS", struct.pack(">H", trns)) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("bits,clear", [(1, 1), (2, 3), (2, 1), (4, 15), (16, 40000)])
def test_grey_png_transparency_at_any_bit_depth(bits, clear):
    """The tRNS grey value is in the file's own bits: 1 is white in a 1-bit file, 40000 a 16-bit grey.
    Those pixels came out as their grey (or white), not as the background."""
    top = (1 << bits) - 1
    values = np.array([[0, clear, top // 2, top, clear, 0, top, clear]] * 4)
    bg = (0, 128, 255)
    a, notes = to_rgb(grey_png(values, bits, clear), background=bg)
    is_clear = values == clear
    assert (a[is_clear] == bg).all() and "alpha_composited" in notes
    opaque = np.round(values[~is_clear] * 255 / top)  # the grey level, scaled to 8 bits
    assert (np.abs(a[~is_clear] - opaque[:, None]) <= 1).all()


def test_16_bit_rgb_png_transparency():
    """A 16-bit RGB PNG's tRNS colour is in 16 bits, where Pillow gives 8-bit pixels (their high
    bytes): no pixel matched (65280, 4660, 0), so the clear ones came out as their colour."""
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    px = np.zeros((4, 6, 3), np.uint16)
    px[:, :2] = (0xFF00, 0x1234, 0)  # the tRNS colour
    px[:, 2:4] = (0x1234, 0xFF00, 0)  # its channels swapped: opaque
    px[:, 4:] = (0xFFFF, 0xFFFF, 0xFFFF)
    rows = b"".join(b"\0" + px[y].astype(">u2").tobytes() for y in range(4))
    data = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 6, 4, 16, 2, 0, 0, 0))
            + chunk(b"tRNS", struct.pack(">HHH", 0xFF00, 0x1234, 0)) + chunk(b"IDAT", zlib.compress(rows))
            + chunk(b"IEND", b""))
    a, notes = to_rgb(data, background=(0, 0, 255))
    assert (a[:, :2] == (0, 0, 255)).all() and "alpha_composited" in notes
    assert (a[:, 2:4] == (0x12, 0xFF, 0)).all() and (a[:, 4:] == 255).all()


def test_32_bit_integer_tiff_is_scaled_from_its_range():
    """A 32-bit integer TIFF was scaled as 16-bit samples: every value above 65535 came out white."""
    values = np.array([[0, 2 ** 29, 2 ** 30, 2 ** 31 - 1]] * 4, dtype=np.int32)
    a, _ = to_rgb(enc(Image.fromarray(values), "TIFF"), channels=1)
    assert (a[0] == [0, 64, 128, 255]).all()
    a, _ = to_rgb(enc(Image.fromarray(np.array([[0, 300, 65535]] * 4, dtype=np.int32)), "TIFF"), channels=1)
    assert (a[0] == [0, 1, 255]).all()  # (values in 16 bits: as before)



def _tiff(values, bits, sample_format):
    """An uncompressed one-row grey TIFF with the given BitsPerSample and SampleFormat (None: no such
    tag; Pillow writes 32-bit grey only as signed, 16-bit only as unsigned)."""
    import struct
    pix = np.asarray(values).astype({(32, 1): "<u4", (16, 2): "<i2"}[bits, sample_format or 1]).tobytes()
    tags = [(256, 4, len(values)), (257, 4, 1), (258, 3, bits), (259, 3, 1), (262, 3, 1), (273, 4, 8),
            (277, 3, 1), (278, 4, 1), (279, 4, len(pix))] + ([(339, 3, sample_format)] if sample_format else [])
    ifd = struct.pack("<H", len(tags)) + b"".join(
        struct.pack("<HHI", t, k, 1) + (struct.pack("<HH", v, 0) if k == 3 else struct.pack("<I", v)) for t, k, v in tags)
    return b"II*\0" + struct.pack("<I", 8 + len(pix)) + pix + ifd + struct.pack("<I", 0)


def test_unsigned_32_bit_and_signed_16_bit_tiffs_use_their_whole_range():
    """Pillow reads both as signed 32-bit 'I': an unsigned 32-bit ramp came out [0, 65, 130, 194, 0, 0,
    0, 0] (the bright half negative, clipped to black), a signed 16-bit one at most 127 (/ 257)."""
    ramp = [0, 2 ** 30, 2 ** 31, 3 * 2 ** 30, 2 ** 32 - 1]
    a, _ = to_rgb(_tiff(ramp, 32, 1), channels=1)
    assert a[0].tolist() == [0, 64, 128, 191, 255]
    a, _ = to_rgb(_tiff([-32768, -1, 0, 16384, 32767], 16, 2), channels=1)
    assert a[0].tolist() == [0, 0, 0, 128, 255]



def test_a_tiff_without_a_sample_format_tag_is_unsigned():
    """The TIFF default (SampleFormat 1): a 32-bit ramp without the tag is read over the unsigned range."""
    a, _ = to_rgb(_tiff([0, 2 ** 31, 2 ** 32 - 1], 32, None), channels=1)
    assert a[0].tolist() == [0, 128, 255]


def test_a_tiff_pillow_cannot_decode_is_an_unsupported_format_not_a_non_image():
    """A 32-bit float RGB TIFF (an HDR merge) is a TIFF Pillow cannot identify: it was filed as
    not_an_image, 'not a format Pillow can identify', where the README's reason is unsupported_format."""
    from sg3lib.data import images as im
    float_rgb = bytearray(_tiff([0, 1, 2, 3], 32, 1))
    ifd = struct.unpack("<I", float_rgb[4:8])[0] + 2
    for tag_at in range(ifd, len(float_rgb) - 12, 12):  # (Pillow has no float RGB mode: refuse at open)
        if float_rgb[tag_at:tag_at + 2] == struct.pack("<H", 339):
            float_rgb[tag_at + 8:tag_at + 10] = struct.pack("<H", 3)  # float samples...
        if float_rgb[tag_at:tag_at + 2] == struct.pack("<H", 262):
            float_rgb[tag_at + 8:tag_at + 10] = struct.pack("<H", 2)  # ...in RGB
    with pytest.raises(im.Reject) as e:
        im.decode(bytes(float_rgb))
    assert e.value.reason == "unsupported_format" and "convert it to 8- or 16-bit RGB" in e.value.detail
    with pytest.raises(im.Reject) as e:
        im.decode(b"just some text, not an image")
    assert e.value.reason == "not_an_image"


def test_float_tiff_is_rounded_not_truncated():
    """0.999 of white is 254.7: 255, not 254 (the float path truncated, a half level darker on average)."""
    a, _ = to_rgb(enc(Image.fromarray(np.full((4, 4), 0.999, np.float32)), "TIFF"), channels=1)
    assert (a == 255).all()
    a, _ = to_rgb(enc(Image.fromarray(np.full((4, 4), 127.6, np.float32)), "TIFF"), channels=1)
    assert (a == 128).all()


def test_exif_orientations_all_come_out_upright():
    """Not a regression test (this worked before): each of the 8 EXIF orientations, stored as the
    camera would, turns a 2x3 pattern of distinct colours back upright (PNG, so exact)."""
    colours = np.array([[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [255, 255, 0]], [[255, 0, 255], [0, 255, 255]]])
    upright = colours.repeat(4, 0).repeat(4, 1).astype(np.uint8)  # 12 high, 8 wide
    # What the camera stores, so that the EXIF instruction gives `upright` (the EXIF 2.3 table).
    stored = {1: upright, 2: upright[:, ::-1], 3: upright[::-1, ::-1], 4: upright[::-1],
              5: upright.transpose(1, 0, 2), 6: np.rot90(upright, 1), 7: upright[::-1, ::-1].transpose(1, 0, 2),
              8: np.rot90(upright, -1)}
    for orientation, pixels in stored.items():
        exif = Image.Exif()
        exif[0x0112] = orientation
        a, _ = to_rgb(enc(Image.fromarray(np.ascontiguousarray(pixels)), "PNG", exif=exif.tobytes()))
        assert a.shape == upright.shape and (a == upright).all(), orientation


def test_jpeg_aliases_are_read_and_other_image_types_named(tmp_path):
    """.jfif/.jpe are JPEG files (browsers save downloads as .jfif): they were 'not an image type',
    as were HEIC photos; an image type curate does not read is unsupported_format, named."""
    from sg3lib.data import images as im
    raw = tmp_path / "raw"
    raw.mkdir()
    for i, name in enumerate(["a.jfif", "b.JPE", "c.jpg"]):
        (raw / name).write_bytes(enc(picture(60 + i, 64, 64), "JPEG", quality=95))
    heic = enc(picture(70, 64, 64), "HEIF", quality=-1) if im._HEIF else b"\0\0\0\x18ftypheic" + b"\0" * 200
    (raw / "d.heic").write_bytes(heic)
    (raw / "e.jxl").write_bytes(b"\xff\x0a" + b"\0" * 200)
    avif = enc(picture(63, 64, 64), "AVIF") if im._AVIF else b"\0" * 200
    (raw / "f.avif").write_bytes(avif)
    rep = curate(raw, tmp_path / "d.zip", 64, workers=0, progress=False)
    full, where = _report_files(rep)
    assert where == {"a.jfif": "accepted", "b.JPE": "accepted", "c.jpg": "accepted",
                     "d.heic": "accepted" if im._HEIF else "unsupported_format",
                     "e.jxl": "unsupported_format", "f.avif": "accepted" if im._AVIF else "unsupported_format"}
    details = {e["path"]: e["detail"] for e in full["files"]["unsupported_format"]}
    assert details["e.jxl"].startswith("JPEG XL (.jxl)")


def test_heic_without_pillow_heif_says_what_reads_it(tmp_path, monkeypatch):
    """Without the pillow-heif plugin a phone's HEIC photos are unsupported_format, with the install
    that reads them; with it (the [notebooks] extra) they are read, turned upright by their EXIF
    orientation."""
    from sg3lib.data import images as im
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "p.heic").write_bytes(b"\0\0\0\x18ftypheic" + b"\0" * 200)
    (raw / "q.png").write_bytes(enc(picture(1, 64, 64), "PNG"))  # (a dataset of none is not written)
    monkeypatch.setattr(im, "IMAGE_EXTS", tuple(e for e in im.IMAGE_EXTS if e not in (".heic", ".heif")))
    full, where = _report_files(curate(raw, tmp_path / "d.zip", 64, workers=0, progress=False))
    detail = full["files"]["unsupported_format"][0]["detail"]
    assert detail == ("HEIC (.heic) is not read by curate; pip install pillow-heif to read them, or convert "
                      "these files to PNG or JPEG first")
    if not im._HEIF:
        pytest.skip("pillow-heif is not installed: the reading half needs it")
    monkeypatch.undo()
    pixels = np.zeros((48, 64, 3), np.uint8)
    pixels[:, :32] = (250, 0, 0)  # red left, blue right; orientation 6: shown turned a quarter clockwise
    pixels[:, 32:] = (0, 0, 250)
    exif = Image.Exif()
    exif[0x0112] = 6
    a, _ = to_rgb(enc(Image.fromarray(pixels), "HEIF", quality=-1, exif=exif.tobytes()))
    assert a.shape == (64, 48, 3)
    assert (np.abs(a[:32].astype(int) - (250, 0, 0)) <= 8).all() and (np.abs(a[32:].astype(int) - (0, 0, 250)) <= 8).all()


INTERRUPT_SCRIPT = r"""
import sys, time
from sg3lib.cli import main
from sg3lib.data.writer import DatasetWriter
real = DatasetWriter.add
def slow_add(self, png, label=None):
    name = real(self, png, label)
    if self.count == 3:
        open(sys.argv[3], "w").close()  # the parent interrupts from here on
    time.sleep(0.2)
    return name
DatasetWriter.add = slow_add
sys.exit(main(["curate", sys.argv[1], sys.argv[2], "--resolution", "32", "--workers", "2"]))
"""


def test_ctrl_c_stops_the_worker_pool_with_one_line(tmp_path):
    """SIGINT to the process group, as a terminal's Ctrl-C and Jupyter's interrupt send it, reaches
    the pool's workers too: the main process stops them, and the user sees one line, not one
    traceback per worker; no dataset, partial file or process is left."""
    raw = tmp_path / "raw"
    raw.mkdir()
    for s in range(40):
        (raw / f"{s:02d}.png").write_bytes(enc(picture(s, 64, 64), "PNG"))
    out, marker = tmp_path / "out", tmp_path / "writing"
    proc = start_in_a_session([sys.executable, "-c", INTERRUPT_SCRIPT, str(raw), str(out / "d.zip"), str(marker)],
                              cwd=os.path.dirname(os.path.dirname(__file__)), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
    err = interrupt_group_when(proc, marker.exists, "curation (its third image)", 120, 60)
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == "sg3 curate: interrupted", err
    assert not (out / "d.zip").exists() and not list(out.glob(".d.zip.*")), sorted(out.iterdir())
    assert not list((out / "d_report").glob(".report-*")), "the report's temporary folder is left"
    time.sleep(0.5)  # (a worker that outlived its parent would be reparented, still in the group)
    with pytest.raises(ProcessLookupError):
        os.killpg(proc.pid, 0)


@pytest.mark.parametrize("key, value", [("max_aspect", float("nan")), ("max_upscale", float("nan")),
                                        ("max_aspect", -1.0), ("max_upscale", 0.5), ("max_aspect", float("inf"))])
def test_ratio_filters_out_of_range_are_refused(tmp_path, key, value):
    """A nan --max-aspect/--max-upscale compared False and turned the filter off without a word; below
    1 every image would be rejected (a long/short ratio and an enlargement are at least 1)."""
    from sg3lib.cli import main as sg3_main
    with pytest.raises(CurateError, match=rf"{key} \(--{key.replace('_', '-')}\) must be a finite ratio >= 1"):
        curate(tmp_path, tmp_path.parent / "out.zip", 16, **{key: value})
    assert sg3_main(["curate", str(tmp_path), str(tmp_path.parent / "out.zip"), "--resolution", "16",
                     f"--{key.replace('_', '-')}={value}"]) == 2  # as every CurateError


def two_pictures(raw):
    """A folder with one picture and an exact copy of it (another file format)."""
    raw.mkdir(parents=True)
    (raw / "a.png").write_bytes(enc(picture(70, 64, 48), "PNG"))
    (raw / "b_copy.bmp").write_bytes(enc(picture(70, 64, 48), "BMP"))
    return raw


@pytest.mark.parametrize("options, flags, said", [
    (dict(channels=1, reject_grayscale=True), ["--channels", "1", "--reject-grayscale"], "reject_grayscale"),
    (dict(pad_color="red"), ["--pad-color", "red"], "pad_color .*square is 'crop'"),
    (dict(pad_color="red", square="reflect"), ["--pad-color", "red", "--square", "reflect"], "square is 'reflect'"),
    (dict(dedupe=False), ["--no-dedupe"], r"still rejects them .*--near-dup -1"),
])
def test_options_that_would_do_nothing_are_refused(tmp_path, capsys, options, flags, said):
    """--reject-grayscale with --channels 1 and --pad-color without --square pad were ignored without a
    word; --no-dedupe alone kept no duplicate (the near-duplicate filter, 0 bits, rejected it instead)."""
    from sg3lib.cli import main
    raw = two_pictures(tmp_path / "raw")
    with pytest.raises(CurateError, match=said):
        curate(raw, tmp_path / "o.zip", 32, workers=0, progress=False, **options)
    assert main(["curate", str(raw), str(tmp_path / "o.zip"), "--resolution", "32", *flags]) == 2
    assert "sg3 curate: error:" in capsys.readouterr().err and not (tmp_path / "o_report").exists()
    # what each asked for works when said whole
    rep = curate(raw, tmp_path / "k.zip", 32, workers=0, progress=False, dedupe=False, near_dup_threshold=None)
    assert rep["counts"] == {"accepted": 2}
    rep = curate(raw, tmp_path / "p.zip", 32, workers=0, progress=False, square="pad", pad_color=(255, 0, 0))
    assert tuple(ImageDataset(tmp_path / "p.zip").load_image(0)[:, 0, 0]) == (255, 0, 0)


@pytest.mark.parametrize("options, flags, said", [
    (dict(max_pixels=0), ["--max-pixels", "0"], "max_pixels .* >= 1"),
    (dict(png_compress_level=12), None, "png_compress_level .* 0 to 9"),
    (dict(png_compress_level=10), None, "png_compress_level .* 0 to 9"),
    (dict(near_dup_threshold=100), ["--near-dup", "100"], "near_dup_threshold .* 0 to 32"),
    (dict(near_dup_threshold=33), ["--near-dup", "33"], "near_dup_threshold .* 0 to 32"),
])
def test_numbers_that_reject_every_image_are_refused_before_the_work(tmp_path, options, flags, said):
    """max_pixels=0 called every image a decompression bomb, png_compress_level=12 made each an 'error',
    a near-dup distance of 100 bits made every image after the first a near duplicate: found at the end."""
    from sg3lib.cli import main
    raw = two_pictures(tmp_path / "raw")
    with pytest.raises(CurateError, match=said):
        curate(raw, tmp_path / "o.zip", 32, workers=0, progress=False, **options)
    if flags:
        assert main(["curate", str(raw), str(tmp_path / "o.zip"), "--resolution", "32", *flags]) == 2
    assert not (tmp_path / "o_report").exists()


@pytest.mark.parametrize("key, value", [("min_size", -5), ("min_bytes", -1), ("min_colors", 2.5),
                                        ("min_size", float("nan"))])
def test_lower_limits_that_are_no_whole_count_are_refused(tmp_path, key, value):
    """A negative --min-size or --min-bytes (or a nan) compared False and turned the filter off without a
    word; each is a whole count >= 0 (0 or None: off)."""
    raw = two_pictures(tmp_path / "raw")
    with pytest.raises(CurateError, match=rf"{key} \(--{key.replace('_', '-')}\) must be a whole number >= 0"):
        curate(raw, tmp_path / "o.zip", 32, workers=0, progress=False, **{key: value})
    assert curate(raw, tmp_path / "k.zip", 32, workers=0, progress=False, **{key: 0})["accepted"] >= 1  # 0: off


def test_animations_and_multi_page_files_are_noted_as_first_frame_only(tmp_path):
    """An animated GIF/WebP/PNG or a multi-page TIFF gave its first frame without a word in the report."""
    raw = tmp_path / "raw"
    raw.mkdir()
    frames = [picture(80, 64, 64), picture(81, 64, 64)]
    for i, (name, fmt) in enumerate([("a.gif", "GIF"), ("b.webp", "WEBP"), ("c.png", "PNG"), ("d.tiff", "TIFF")]):
        f0, f1 = picture(82 + 2 * i, 64, 64), picture(83 + 2 * i, 64, 64)
        (raw / name).write_bytes(enc(f0, fmt, save_all=True, append_images=[f1]))
    (raw / "e_still.gif").write_bytes(enc(frames[0], "GIF"))
    # a camera's MPO: the second picture is a preview (or depth map), not more of the image
    (raw / "f_camera.jpg").write_bytes(enc(picture(95, 64, 64), "MPO", save_all=True, append_images=[frames[1]]))
    rep = curate(raw, tmp_path / "o.zip", 32, workers=0, progress=False)
    assert rep["counts"] == {"accepted": 6} and rep["notes"]["first_frame_only"] == 4
    full, _ = _report_files(rep)
    noted = {e["path"] for e in full["files"]["accepted"] if "first_frame_only" in e.get("notes", [])}
    assert noted == {"a.gif", "b.webp", "c.png", "d.tiff"}


def test_overwrite_never_replaces_the_source_or_a_folder_that_is_not_a_dataset(tmp_path):
    """dest = the folder holding the source, with --overwrite, deleted the source images once the new
    dataset was in place; a source zip given as dest was replaced by the dataset."""
    photos = tmp_path / "photos"
    raw = two_pictures(photos / "raw")
    with pytest.raises(CurateError, match="source .*raw is inside the destination .*photos"):
        curate(raw, photos, 32, workers=0, progress=False, overwrite=True, report_dir=tmp_path / "r")
    assert sorted(p.name for p in raw.iterdir()) == ["a.png", "b_copy.bmp"]
    src_zip = tmp_path / "in.zip"
    with zipfile.ZipFile(src_zip, "w") as z:
        z.writestr("a.png", enc(picture(71, 64, 64), "PNG"))
    with pytest.raises(CurateError, match="source .*in.zip is the destination"):
        curate(src_zip, src_zip, 32, workers=0, progress=False, overwrite=True)
    assert zipfile.ZipFile(src_zip).namelist() == ["a.png"]
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.pdf").write_bytes(b"%PDF")
    with pytest.raises(CurateError, match="not a dataset .*thesis.pdf"):
        curate(raw, tmp_path / "mine", 32, workers=0, progress=False, overwrite=True)
    assert (tmp_path / "mine" / "thesis.pdf").exists()
    (tmp_path / "notes").write_bytes(b"my notes")  # a file named like a folder dataset: not replaced
    with pytest.raises(CurateError, match="notes is a file, not a dataset folder"):
        curate(raw, tmp_path / "notes", 32, workers=0, progress=False, overwrite=True)
    assert (tmp_path / "notes").read_bytes() == b"my notes"
    (tmp_path / "d.zip").mkdir()
    with pytest.raises(CurateError, match="d.zip is a folder"):  # was an IsADirectoryError after the work
        curate(raw, tmp_path / "d.zip", 32, workers=0, progress=False, overwrite=True)
    curate(raw, tmp_path / "ds", 32, workers=0, progress=False)  # a dataset folder is still replaced,
    (tmp_path / "ds" / ".DS_Store").write_bytes(b"\0")  # also after a file browser has looked into it
    rep = curate(raw, tmp_path / "ds", 32, workers=0, progress=False, overwrite=True, min_colors=None)
    assert rep["accepted"] == 1 and len(ImageDataset(tmp_path / "ds")) == 1


def test_report_folder_inside_a_folder_dataset_is_refused(tmp_path):
    raw = two_pictures(tmp_path / "raw")
    with pytest.raises(CurateError, match="report folder .* inside the dataset folder"):
        curate(raw, tmp_path / "ds", 32, workers=0, progress=False, report_dir=tmp_path / "ds" / "report")
    assert not (tmp_path / "ds").exists()


def test_a_refused_call_creates_no_destination_folder(tmp_path):
    """The destination's folder was created before the other checks: a refused call (here labels
    from one class folder) left a new, empty folder tree behind."""
    raw = tmp_path / "raw"
    two_pictures(raw / "only_class")
    with pytest.raises(CurateError, match="labels='folders'"):
        curate(raw, tmp_path / "new" / "sub" / "d.zip", 32, labels="folders", workers=0, progress=False)
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("name", ["d.zip", "d"])
def test_a_dataset_is_written_into_folders_that_do_not_exist_yet(tmp_path, name):
    dest = tmp_path / "new" / "sub" / name
    with DatasetWriter(dest) as w:
        w.add(enc(picture(73, 8, 8), "PNG"))
    assert w.close() == dest and len(ImageDataset(dest)) == 1
    assert sorted(p.name for p in dest.parent.iterdir()) == [name]  # no temporary left beside it


def old_and_new(tmp_path):
    dest = tmp_path / "ds"
    (dest / "00000").mkdir(parents=True, exist_ok=True)
    (dest / "00000" / "img00000000.png").write_bytes(b"old")
    w = DatasetWriter(dest, overwrite=True)
    w.add(enc(picture(72, 8, 8), "PNG"))
    return dest, w


def test_a_folder_dataset_is_swapped_into_place_in_one_step(tmp_path, monkeypatch):
    """Two renames left a moment with no dataset under dest; where the system swaps in one step, the
    old one is never moved away from dest."""
    from sg3lib import files
    (tmp_path / "x").mkdir(), (tmp_path / "y").mkdir()
    if not files.exchange(tmp_path / "x", tmp_path / "y"):
        pytest.skip("this file system cannot swap two folders (the fallback is tested below)")
    dest, w = old_and_new(tmp_path)
    real = os.replace

    def no_move_of_dest(a, b):
        assert Path(a) != dest, "the old dataset was moved away from dest"
        return real(a, b)
    monkeypatch.setattr(os, "replace", no_move_of_dest)
    w.close()
    assert len(ImageDataset(dest)) == 1 and sorted(p.name for p in tmp_path.iterdir()) == ["ds", "x", "y"]


def test_a_failed_folder_replacement_puts_the_old_dataset_back(tmp_path, monkeypatch):
    """Where folders cannot be swapped: the old one is moved aside; when the new one cannot take its
    place, the old one went missing (under a hidden .old name); now it is moved back."""
    from sg3lib import files
    monkeypatch.setattr(files, "exchange", lambda a, b: False)
    dest, w = old_and_new(tmp_path)
    real = os.replace

    def failing(a, b):
        if Path(b) == dest and Path(a) == w.tmp:
            raise OSError(5, "Input/output error")
        return real(a, b)
    monkeypatch.setattr(os, "replace", failing)
    with pytest.raises(OSError, match="Input/output"), w:
        w.close()
    assert (dest / "00000" / "img00000000.png").read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]  # no temporary, no .old left
    monkeypatch.setattr(os, "replace", real)
    dest, w = old_and_new(tmp_path)
    w.close()  # the fallback itself
    assert len(ImageDataset(dest)) == 1 and sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def test_default_workers_follow_the_cpus_this_process_may_use(tmp_path, monkeypatch):
    """curate counted the host's CPUs (os.cpu_count), not the affinity or a container's quota as
    training does: 4 processes on a job pinned to one core."""
    from sg3lib import cpus
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(cpus, "CGROUP_ROOT", tmp_path / "no_cgroup")
    assert cpus.usable_cpus() == 1
    raw = two_pictures(tmp_path / "raw")
    rep = curate(raw, tmp_path / "o.zip", 32, progress=False, near_dup_threshold=None)
    assert rep["workers"] == 1 and rep["accepted"] == 1
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))
    v2, v1 = tmp_path / "v2", tmp_path / "v1"
    v2.mkdir(), (v1 / "cpu").mkdir(parents=True)
    (v2 / "cpu.max").write_text("250000 100000\n")
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("300000\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cpus.usable_cpus(v2) == 3 and cpus.usable_cpus(v1) == 3
    (v2 / "cpu.max").write_text("max 100000\n")
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert cpus.usable_cpus(v2) == 16 and cpus.usable_cpus(v1) == 16


def test_the_same_input_gives_a_byte_identical_zip(tmp_path, monkeypatch):
    """The zip members carried the time of writing, so two curations of the same folder (in process,
    then with workers) gave different zips: a dataset's checksum changed with every run."""
    raw = tmp_path / "raw"
    raw.mkdir()
    for i in range(3):
        (raw / f"{i}.png").write_bytes(enc(picture(i, 64, 64), "PNG"))
    curate(raw, tmp_path / "a.zip", 32, workers=0, progress=False)
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 3 * 86400)  # a later day
    curate(raw, tmp_path / "b.zip", 32, workers=2, progress=False)
    assert (tmp_path / "a.zip").read_bytes() == (tmp_path / "b.zip").read_bytes()


def test_a_link_loop_in_the_source_is_a_file_reported_not_the_end_of_the_curation(tmp_path):
    """DirEntry.is_dir() raised ELOOP for l1.png -> l2.png -> l1.png outside the folder listing's try:
    the whole curation ended with "cannot read the source folder ... check its permissions"."""
    raw = tmp_path / "raw"
    (raw / "sub").mkdir(parents=True)
    (raw / "x.png").write_bytes(enc(picture(1, 64, 64), "PNG"))
    os.symlink("l2.png", raw / "sub" / "l1.png")
    os.symlink("l1.png", raw / "sub" / "l2.png")
    rep = curate(raw, tmp_path / "d.zip", 64, workers=0, progress=False)
    full, _ = _report_files(rep)
    assert rep["accepted"] == 1 and rep["total"] == 3
    listed = sorted(e["path"] for reason, entries in full["files"].items() if reason != "accepted" for e in entries)
    assert listed == ["sub/l1.png", "sub/l2.png"]


def test_a_zip_with_windows_separators_keeps_its_classes_and_folder_order(tmp_path):
    """PowerShell's Compress-Archive writes `\\` between folders: --labels folders found no class
    folder in such a zip. And a zip's whole names sort ' ' and '-' before '/', so 'Summer 2/' came
    before 'Summer/' there but not in the folder: a folder and a zip of it gave different datasets
    (order, which duplicate is kept, what --max-images keeps)."""
    raw = tmp_path / "raw"
    pics = {"Summer/a.png": 1, "Summer 2/b.png": 2, "Summer 2/copy.png": 1, "2023/d.png": 4, "2023-trip/c.png": 3}
    for rel, seed in pics.items():
        (raw / rel).parent.mkdir(parents=True, exist_ok=True)
        (raw / rel).write_bytes(enc(picture(seed, 64, 64), "PNG"))
    folder = curate(raw, tmp_path / "f.zip", 64, labels="folders", workers=0, progress=False)
    for sep, name in (("/", "slash.zip"), ("\\", "backslash.zip")):
        with zipfile.ZipFile(tmp_path / name, "w") as z:
            for rel in sorted(pics):
                z.writestr(rel.replace("/", sep), (raw / rel).read_bytes())
        rep = curate(tmp_path / name, tmp_path / f"d-{name}", 64, labels="folders", workers=0, progress=False)
        assert rep["counts"] == folder["counts"] == {"accepted": 4, "duplicate": 1}
        assert _accepted(rep) == _accepted(folder) and rep["images_per_class"] == folder["images_per_class"]
        assert (tmp_path / f"d-{name}").read_bytes() == (tmp_path / "f.zip").read_bytes()


def test_a_class_max_images_did_not_reach_is_said_to_be_unread(tmp_path):
    """The warning for a class with no image said none was kept and to remove the folder, when its
    files had not been read at all (max_images was reached first)."""
    raw = tmp_path / "raw"
    for c, seeds in (("cats", (1, 2)), ("dogs", (3, 4))):
        (raw / c).mkdir(parents=True)
        for s in seeds:
            (raw / c / f"{s}.png").write_bytes(enc(picture(s, 64, 64), "PNG"))
    with pytest.warns(UserWarning, match=r"class 'dogs' .* max_images=2 images were kept before its files were "
                                         r"reached .*raise max_images"):
        rep = curate(raw, tmp_path / "d.zip", 64, labels="folders", max_images=2, workers=0, progress=False)
    assert rep["images_per_class"] == {"cats": 2, "dogs": 0}


def bmp_with_alpha(img, alpha):
    """A 32-bit BMP (BITMAPV4HEADER with an alpha mask) of the RGB `img`, every alpha `alpha`."""
    rgb = np.asarray(img)
    h, w = rgb.shape[:2]
    bgra = np.concatenate([rgb[..., ::-1], np.full((h, w, 1), alpha, np.uint8)], -1)[::-1].tobytes()  # bottom-up
    dib = struct.pack("<IiiHHIIiiII", 108, w, h, 1, 32, 3, len(bgra), 2835, 2835, 0, 0)
    dib += struct.pack("<IIII", 0xFF0000, 0xFF00, 0xFF, 0xFF000000) + b"sRGB"[::-1] + b"\0" * 48
    off = 14 + len(dib)
    return b"BM" + struct.pack("<IHHI", off + len(bgra), 0, 0, off) + dib + bgra


def test_a_32_bit_bmp_with_an_unused_alpha_channel_is_opaque(tmp_path):
    """BMP v4/v5 headers with an alpha mask and every alpha 0 (Windows and clipboard tools: 'unused',
    shown opaque by browsers) were laid over the background: blank, then rejected as monochrome."""
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "clip.bmp").write_bytes(bmp_with_alpha(picture(5, 64, 64), 0))
    assert Image.open(raw / "clip.bmp").mode == "RGBA"  # Pillow reads the alpha mask
    rep = curate(raw, tmp_path / "d.zip", 64, workers=0, progress=False)
    assert rep["counts"] == {"accepted": 1} and rep["notes"].get("alpha_unused") == 1
    ds = ImageDataset(tmp_path / "d.zip")
    assert np.array_equal(ds.load_image(0).transpose(1, 2, 0), np.asarray(picture(5, 64, 64)))


@pytest.mark.parametrize("mode", ["pad", "reflect"])
def test_a_panorama_is_shrunk_before_it_is_squared(tmp_path, monkeypatch, mode):
    """pad and reflect built the max(w, h)² canvas before the resize: a 12000 x 400 panorama took a
    144 Mpx canvas (1 GB with reflect), a 40000 x 1000 one 5 GB in each worker (worker_crashed)."""
    from sg3lib.data import images as im
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "pano.png").write_bytes(enc(picture(7, 2000, 100), "PNG"))
    sides = []
    real_new, real_pad = Image.new, np.pad
    monkeypatch.setattr(Image, "new", lambda m, size, *a, **k: sides.append(max(size)) or real_new(m, size, *a, **k))
    monkeypatch.setattr(np, "pad", lambda a, *x, **k: (lambda out: sides.append(max(out.shape[:2])) or out)(real_pad(a, *x, **k)))
    rep = curate(raw, tmp_path / "d.zip", 64, square=mode, max_aspect=None, min_colors=None, workers=0, progress=False)
    assert rep["counts"] == {"accepted": 1} and sides and max(sides) < 2000, sides  # (contact sheets: 240 px)
    monkeypatch.undo()
    a = ImageDataset(tmp_path / "d.zip").load_image(0).transpose(1, 2, 0)
    band = np.asarray(picture(7, 2000, 100).resize((64, 3), Image.LANCZOS, reducing_gap=3.0))
    mid = (64 - 3) // 2
    assert np.abs(a[mid:mid + 3].astype(int) - band).max() <= 2  # the picture, shrunk, in the middle


def test_a_half_transparent_bmp_is_laid_over_the_background():
    """Only an alpha of 0 everywhere means 'unused': a BMP drawn at half opacity (an overlay) is blended."""
    data = bmp_with_alpha(Image.new("RGB", (8, 8), (200, 0, 0)), 128)
    a, notes = to_rgb(data, background=(0, 0, 200))
    assert (a == (100, 0, 100)).all() and "alpha_composited" in notes and "alpha_unused" not in notes


def test_a_source_zip_member_zipfile_cannot_open_says_what_to_do(tmp_path):
    """Deflate64/PPMd (Windows' and 7-Zip's large zips) or a password: each file was reported as
    'NotImplementedError: That compression method is not supported' or a bare RuntimeError."""
    for what, detail in (("method", "compression method Python's zipfile does not read.*re-zip the source"),
                         ("password", "encrypted .*password.*unpack it")):
        src = tmp_path / f"{what}.zip"
        with zipfile.ZipFile(src, "w") as z:
            z.writestr("a.png", enc(picture(1, 64, 64), "PNG"))
            z.writestr("b.png", enc(picture(2, 64, 64), "PNG"))
        b = bytearray(src.read_bytes())
        local, central = b.rfind(b"PK\x03\x04"), b.rfind(b"PK\x01\x02")  # b.png's headers
        if what == "method":
            b[local + 8:local + 10] = b[central + 10:central + 12] = struct.pack("<H", 9)  # Deflate64
        else:
            b[local + 6] |= 1
            b[central + 8] |= 1
        src.write_bytes(bytes(b))
        rep = curate(src, tmp_path / f"d-{what}.zip", 64, workers=0, progress=False)
        full, _ = _report_files(rep)
        assert rep["counts"] == {"accepted": 1, "error": 1}
        assert re.search(detail, full["files"]["error"][0]["detail"]), full["files"]["error"]


def test_a_named_pipe_in_the_source_is_reported_not_skipped_or_opened(tmp_path):
    """FIFOs, sockets and devices named *.png were left out of the count and the report (every input
    is filed under one reason); opening a FIFO would block the curation."""
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "a.png").write_bytes(enc(picture(1, 64, 64), "PNG"))
    os.mkfifo(raw / "pipe.png")
    rep = curate(raw, tmp_path / "d.zip", 64, workers=0, progress=False)
    full, _ = _report_files(rep)
    assert rep["total"] == 2 and rep["counts"] == {"accepted": 1, "error": 1}
    assert full["files"]["error"][0]["path"] == "pipe.png" and "named pipe (FIFO)" in full["files"]["error"][0]["detail"]


class _FlaglessUtf8(zipfile.ZipInfo):
    def _encodeFilenameFlags(self):  # (zipfile itself flags every non-ASCII name as UTF-8)
        return self.filename.encode("utf-8"), self.flag_bits & ~0x800


def _info_zip(path, files):
    """A zip as Info-ZIP's `zip -r` writes one (Linux, Colab): UTF-8 names without the UTF-8 flag."""
    with zipfile.ZipFile(path, "w") as z:
        for rel, data in files.items():
            z.writestr(_FlaglessUtf8(rel, date_time=(1980, 1, 1, 0, 0, 0)), data)
    with zipfile.ZipFile(path) as z:
        assert not any(i.flag_bits & 0x800 for i in z.infolist())
    return path


def test_a_zip_of_utf8_names_without_the_flag_keeps_its_class_names(tmp_path):
    """zipfile read such names as cp437: the class 'é class' came out as '├⌐ class', so a folder and a
    zip of it gave different datasets. A real cp437 name (not UTF-8 bytes) stays as zipfile reads it."""
    raw = tmp_path / "raw"
    pics = {"cats/a.png": 1, "é class/b.png": 2, "猫/c.png": 3}
    for rel, seed in pics.items():
        (raw / rel).parent.mkdir(parents=True, exist_ok=True)
        (raw / rel).write_bytes(enc(picture(seed, 64, 64), "PNG"))
    folder = curate(raw, tmp_path / "f.zip", 64, labels="folders", workers=0, progress=False)
    src = _info_zip(tmp_path / "src.zip", {rel: (raw / rel).read_bytes() for rel in sorted(pics)})
    rep = curate(src, tmp_path / "z.zip", 64, labels="folders", workers=0, progress=False)
    assert rep["images_per_class"] == folder["images_per_class"] and "猫" in rep["images_per_class"]
    assert (tmp_path / "z.zip").read_bytes() == (tmp_path / "f.zip").read_bytes()
    class Cp437(zipfile.ZipInfo):  # as DOS-era tools wrote names: cp437 bytes, no flag
        def _encodeFilenameFlags(self):
            return self.filename.encode("cp437"), self.flag_bits & ~0x800
    with zipfile.ZipFile(tmp_path / "dos.zip", "w") as z:
        z.writestr(Cp437("café.png"), (raw / "cats/a.png").read_bytes())  # b'caf\x82.png'
    from sg3lib.data.writer import zip_file_names
    with zipfile.ZipFile(tmp_path / "dos.zip") as z:
        assert zip_file_names(z) == (["café.png"], {})


def test_colours_of_two_values_and_counts_given_as_booleans_are_refused():
    """(1, 2) is no colour (it failed on every image, each reported as an error); True is no count
    (max_pixels=True refused every image as a decompression bomb, min_size=True kept only 1 px)."""
    from sg3lib.data.curate import _settings
    with pytest.raises(CurateError, match=r"background must be a colour name, .* got \(1, 2\)"):
        _settings(64, dict(background=(1, 2)))
    for key in ("max_pixels", "png_compress_level", "near_dup_threshold", "min_size"):
        with pytest.raises(CurateError, match=rf"{key} \(--"):
            _settings(64, {key: True})


def test_a_folder_datasets_report_goes_beside_it_under_its_whole_name(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "a.png").write_bytes(enc(picture(1, 64, 64), "PNG"))
    rep = curate(raw, tmp_path / "faces.v2", 32, workers=0, progress=False)
    assert Path(rep["report_json"]).parent == tmp_path / "faces.v2_report"
