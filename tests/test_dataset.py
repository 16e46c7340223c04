"""ImageDataset reads the official format (zip or folder) and refuses non-uniform data clearly."""
import io
import json
import os
import re
import shutil
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import damage_compressed_bytes, open_in_this_process
from sg3lib.data import DatasetError, ImageDataset


def png(a):
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG", compress_level=0)
    return buf.getvalue()


def pictures(n, size=8, channels=3, seed=0):
    rng = np.random.default_rng(seed)
    shape = (size, size, channels) if channels > 1 else (size, size)
    return [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(n)]


def official_zip(path, imgs, labels):
    """A zip laid out the way the official dataset tool writes it."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as z:
        names = []
        for i, a in enumerate(imgs):
            name = f"{i // 1000:05d}/img{i:08d}.png"
            z.writestr(name, png(a))
            names.append(name)
        z.writestr("dataset.json", json.dumps({"labels": None if labels is None else
                                               [[n, l] for n, l in zip(names, labels)]}))
    return path


def test_official_zip_with_labels_and_xflip(tmp_path):
    imgs = pictures(5)
    ds = ImageDataset(official_zip(tmp_path / "ds.zip", imgs, [0, 2, 1, 2, 0]), use_labels=True, xflip=True)
    assert len(ds) == 10 and ds.resolution == 8 and ds.num_channels == 3 and ds.name == "ds"
    assert ds.has_labels and ds.label_dim == 3 and ds.label_shape == [3] and ds.image_shape == [3, 8, 8]
    img, label = ds[1]
    assert img.dtype == np.uint8 and img.shape == (3, 8, 8)
    assert (img == imgs[1].transpose(2, 0, 1)).all()
    assert label.tolist() == [0, 0, 1] and label.dtype == np.float32
    flipped, label2 = ds[6]  # second half: mirrored copies of the first half
    assert (flipped == imgs[1].transpose(2, 0, 1)[:, :, ::-1]).all() and label2.tolist() == [0, 0, 1]
    assert (ds[-1][0] == ds[9][0]).all() and (ds[-10][0] == ds[0][0]).all()  # as a list counts from the end
    for past in (10, -11):
        with pytest.raises(IndexError):
            ds[past]
    no_labels = ImageDataset(tmp_path / "ds.zip")
    assert no_labels.label_dim == 0 and no_labels[0][1].shape == (0,)
    t, lt = ImageDataset(tmp_path / "ds.zip", as_tensor=True, use_labels=True)[3]
    assert isinstance(t, torch.Tensor) and t.dtype == torch.uint8 and lt.tolist() == [0, 0, 1]


def test_folder_grayscale_and_null_labels(tmp_path):
    imgs = pictures(3, size=16, channels=1)
    for i, a in enumerate(imgs):
        (tmp_path / "00000").mkdir(exist_ok=True)
        (tmp_path / "00000" / f"img{i:08d}.png").write_bytes(png(a))
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": None}))
    ds = ImageDataset(tmp_path, resolution=16, use_labels=True)
    assert len(ds) == 3 and ds.num_channels == 1 and not ds.has_labels and ds.label_dim == 0
    assert (ds[2][0][0] == imgs[2]).all()
    # Pillow's read-only buffer came through for grey images: torch warned "The given NumPy array is
    # not writable" for every batch the DataLoader made of them
    assert all(ds[i][0].flags.writeable for i in range(3))
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        next(iter(torch.utils.data.DataLoader(ds, batch_size=3)))


def test_odd_file_is_named(tmp_path):
    imgs = pictures(4)
    imgs[2] = pictures(1, size=16)[0]
    with pytest.raises(DatasetError, match=r"img00000002\.png is 16x16 with 3 channel\(s\), but .*img00000000\.png"):
        ImageDataset(official_zip(tmp_path / "a.zip", imgs, None))
    imgs = pictures(4)
    imgs[3] = pictures(1, channels=1)[0]
    with pytest.raises(DatasetError, match=r"img00000003\.png is 8x8 with 1 channel"):
        ImageDataset(official_zip(tmp_path / "b.zip", imgs, None))
    with pytest.raises(DatasetError, match="resolution=64"):
        ImageDataset(official_zip(tmp_path / "c.zip", pictures(2), None), resolution=64)
    with pytest.raises(DatasetError, match="not found: .*missing.zip"):
        ImageDataset(tmp_path / "missing.zip")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no images"):
        ImageDataset(tmp_path / "empty")
    with zipfile.ZipFile(tmp_path / "d.zip", "w") as z:
        z.writestr("00000/img00000000.png", png(pictures(1)[0]))
        z.writestr("00000/img00000001.png", png(pictures(1)[0]))
        z.writestr("dataset.json", json.dumps({"labels": [["00000/img00000000.png", 1]]}))
    with pytest.raises(DatasetError, match="no label for 00000/img00000001.png"):
        ImageDataset(tmp_path / "d.zip", use_labels=True)


def test_labels_as_the_official_reader_takes_them(tmp_path):
    """Class indices may be written as whole floats (3.0, as a pandas column writes them), as the
    official reader takes them; 2.5, a negative index, a non-number, a NaN in a label vector and a
    label that is no flat vector are refused naming the image."""
    imgs = pictures(3)
    ds = ImageDataset(official_zip(tmp_path / "floats.zip", imgs, [0.0, 2.0, 1]), use_labels=True)
    assert ds.label_dim == 3 and [ds.get_label(i).argmax() for i in range(3)] == [0, 2, 1]
    ds = ImageDataset(official_zip(tmp_path / "vec.zip", imgs, [[0.5, 1], [0, 0], [1, 0.25]]), use_labels=True)
    assert ds.label_dim == 2 and ds.get_label(2).tolist() == [1, 0.25]
    for i, (labels, message) in enumerate((([0, 2.5, 1], r"img00000001.png has 2.5"),
                                           ([0, -1, 1], r"img00000001.png has -1"),
                                           ([0, 1, None], r"img00000002.png has None"),
                                           ([[0, 1], [float("nan"), 0], [1, 0]], r"img00000001.png .* not finite"),
                                           ([[[0, 1]], [[1, 0]], [[1, 1]]], r"class indices or vectors of numbers"))):
        path = official_zip(tmp_path / f"bad{i}.zip", imgs, labels)
        with pytest.raises(DatasetError, match=message):
            ImageDataset(path, use_labels=True)


def test_pickle_and_dataloader_workers(tmp_path):
    imgs = pictures(6)
    ds = ImageDataset(official_zip(tmp_path / "ds.zip", imgs, [0, 1, 0, 1, 0, 1]), use_labels=True)
    ds[0]  # opens the zip in this process; pickling must still work
    clone = pickle.loads(pickle.dumps(ds))
    assert (clone[4][0] == ds[4][0]).all()
    loader = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=2, shuffle=False)
    batches = list(loader)
    got = torch.cat([b[0] for b in batches]).numpy()
    assert got.shape == (6, 3, 8, 8) and (got == np.stack([a.transpose(2, 0, 1) for a in imgs])).all()
    assert torch.cat([b[1] for b in batches])[:, 1].tolist() == [0, 1, 0, 1, 0, 1]


def raw_png(size, depth, colour_type):
    """A PNG of zeros with any bit depth (Pillow writes no 16-bit colour PNGs)."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    row = bytes(1 + (size * depth * {0: 1, 2: 3, 4: 2, 6: 4}[colour_type] + 7) // 8)
    ihdr = struct.pack(">IIBBBBB", size, size, depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(row * size)) + chunk(b"IEND", b"")


def test_pixels_training_cannot_use_are_refused_when_the_dataset_opens(tmp_path):
    """A zip not made by curate with a 16-bit grey, 1-bit, float or CMYK image passed the check of
    every header and failed when training first drew the image (or, CMYK alone, trained on CMYK as
    if RGBA); now opening the dataset names the file. 16-bit colour PNGs load as 8-bit RGB(A)."""
    grey = pictures(1, channels=1)[0]
    float_tiff, cmyk_jpeg = io.BytesIO(), io.BytesIO()
    Image.fromarray(grey.astype(np.float32)).save(float_tiff, format="TIFF")
    Image.fromarray(pictures(1)[0]).convert("CMYK").save(cmyk_jpeg, format="JPEG")
    for first, odd, ext, kind in ((png(grey), raw_png(8, 16, 0), "png", "16-bit grey"),
                                  (png(grey), raw_png(8, 1, 0), "png", "1-bit"),
                                  (png(grey), float_tiff.getvalue(), "tif", "floating-point grey"),
                                  (png(pictures(1, channels=4)[0]), cmyk_jpeg.getvalue(), "jpg", "CMYK")):
        path = tmp_path / f"{ext}{len(kind)}.zip"
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("00000/img00000000.png", first)
            z.writestr(f"00000/img00000001.{ext}", odd)
        with pytest.raises(DatasetError, match=rf"img00000001\.{ext} of .*{path.name} is a {kind}.*sg3 curate"):
            ImageDataset(path)
    with zipfile.ZipFile(tmp_path / "rgb16.zip", "w") as z:
        z.writestr("00000/img00000000.png", png(pictures(1)[0]))
        z.writestr("00000/img00000001.png", raw_png(8, 16, 2))
    ds = ImageDataset(tmp_path / "rgb16.zip")
    assert ds[1][0].dtype == np.uint8 and ds[1][0].shape == (3, 8, 8) and not ds[1][0].any()


def test_grey_alpha_16_bit_and_transparent_palette_images_are_refused(tmp_path):
    """Pillow opens a 16-bit grey+alpha PNG as RGBA: it trained as 4 channels where its 8-bit twin
    gives 2. A palette image with a transparent colour was read as RGB, its transparent pixels
    trained as whatever colour the palette held there; curate converts both properly."""
    paletted = io.BytesIO()
    Image.fromarray(pictures(1)[0]).convert("P").save(paletted, format="PNG", transparency=0)
    for odd, kind in ((raw_png(8, 16, 4), r"16-bit grey\+alpha PNG"), (paletted.getvalue(), "palette image with transparency")):
        path = tmp_path / f"{len(kind)}.zip"
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("00000/img00000000.png", png(pictures(1, channels=4)[0]))
            z.writestr("00000/img00000001.png", odd)
        with pytest.raises(DatasetError, match=rf"img00000001\.png of .*{path.name} is a {kind}.*sg3 curate"):
            ImageDataset(path)
        ds = ImageDataset(path, check=False)  # unchecked headers: found when the image is read
        if "palette" in kind:
            with pytest.raises(DatasetError, match="img00000001.png of .* is a palette image with transparency"):
                ds[1]
    opaque = io.BytesIO()  # a palette image without transparency is RGB, as before
    Image.fromarray(pictures(1)[0]).convert("P").save(opaque, format="PNG")
    with zipfile.ZipFile(tmp_path / "p.zip", "w") as z:
        z.writestr("00000/img00000000.png", opaque.getvalue())
    assert ImageDataset(tmp_path / "p.zip")[0][0].shape == (3, 8, 8)


def test_labels_match_names_in_either_unicode_form(tmp_path):
    """A Mac's file system writes names decomposed (NFD), a hand-made dataset.json is composed (NFC):
    the labels were refused as 'no label for café.png', naming a file that looked the same."""
    import unicodedata
    root = tmp_path / "ds"
    root.mkdir()
    for i, a in enumerate(pictures(2)):
        (root / unicodedata.normalize("NFD", f"café{i}.png")).write_bytes(png(a))
    (root / "dataset.json").write_text(json.dumps({"labels": [[f"café{i}.png", i] for i in range(2)]}))
    ds = ImageDataset(root, use_labels=True)
    assert [ds.get_label(i).tolist() for i in range(2)] == [[1, 0], [0, 1]]
    # and the other way: names composed on disk, a dataset.json written on a Mac from its listing
    other = tmp_path / "nfc"
    other.mkdir()
    for i, a in enumerate(pictures(2)):
        (other / f"café{i}.png").write_bytes(png(a))
    (other / "dataset.json").write_text(json.dumps({"labels": [[unicodedata.normalize("NFD", f"café{i}.png"), 1 - i]
                                                               for i in range(2)]}))
    assert [ImageDataset(other, use_labels=True).get_label(i).tolist() for i in range(2)] == [[0, 1], [1, 0]]


def test_a_damaged_image_is_named_when_it_is_read(tmp_path):
    """Data broken behind a good header (a truncated file) is found only when the image is read:
    the error used to be Pillow's 'image file is truncated' alone, inside a loader worker's
    traceback, with no word of which of the dataset's images it was."""
    imgs = pictures(3, size=32)
    with zipfile.ZipFile(tmp_path / "cut.zip", "w") as z:
        for i, a in enumerate(imgs):
            z.writestr(f"00000/img{i:08d}.png", png(a)[:-200] if i == 1 else png(a))
    ds = ImageDataset(tmp_path / "cut.zip")
    assert (ds[2][0] == imgs[2].transpose(2, 0, 1)).all()
    with pytest.raises(DatasetError, match=r"cut\.zip: image 00000/img00000001\.png cannot be read \(OSError"):
        ds[1]
    loader = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=1)
    with pytest.raises(DatasetError, match=r"img00000001\.png cannot be read"):
        next(iter(loader))


def test_a_damaged_zip_member_is_named_when_the_dataset_opens(tmp_path):
    """A zip damaged in a copy (a member's header overwritten, or its compressed bytes) stopped the
    dataset, and sg3 train, with zipfile's bare 'Bad magic number for file header' or 'Bad CRC-32'."""
    for what in ("header", "data"):
        path = tmp_path / f"{what}.zip"
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
            for i, a in enumerate(pictures(3)):
                z.writestr(f"00000/img{i:08d}.png", png(a))
        b = bytearray(path.read_bytes())
        at = [i for i in range(len(b)) if b[i:i + 4] == b"PK\x03\x04"][1]  # the second image's header
        if what == "header":
            b[at:at + 4] = b"XXXX"
        else:
            b[at + 60:at + 80] = b"\xff" * 20
        path.write_bytes(bytes(b))
        with pytest.raises(DatasetError, match=rf"img00000001\.png of .*{what}\.zip cannot be read \(BadZipFile"):
            ImageDataset(path)


def test_linked_sub_folders_of_a_folder_dataset_are_read(tmp_path):
    """A folder dataset put together from links (`ln -s /data/part1 ds/00001`) used to lose the
    images of every linked sub-folder without a word (curate reads them); a link back to a
    folder above is not followed (it would never end)."""
    import os
    imgs = pictures(3)
    for i, a in enumerate(imgs):
        folder = tmp_path / ("ds/00000" if i == 0 else "elsewhere")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"img{i:08d}.png").write_bytes(png(a))
    os.symlink(tmp_path / "elsewhere", tmp_path / "ds" / "00001")
    os.symlink(tmp_path / "ds", tmp_path / "elsewhere" / "back")  # ds/00001/back/00001/back/...
    ds = ImageDataset(tmp_path / "ds")
    assert ds.image_names == ["00000/img00000000.png", "00001/img00000001.png", "00001/img00000002.png"]
    assert (ds[2][0] == imgs[2].transpose(2, 0, 1)).all()


# -- discriminator ranking (sg3lib.data.rank) ---------------------------------------------------

def tiny_d(c_dim=0, mbstd=True):
    from sg3lib.networks import build_network
    torch.manual_seed(0)
    epi = {} if mbstd else {"mbstd_num_channels": 0}
    return build_network("training.networks_stylegan2.Discriminator",
                         dict(c_dim=c_dim, img_resolution=8, img_channels=3, channel_base=64, channel_max=16,
                              num_fp16_res=0, epilogue_kwargs=epi)).eval()


def test_rank_scores_sort_and_drop_bottom(tmp_path):
    from sg3lib.data.rank import rank
    torch.set_num_threads(1)
    imgs = pictures(8, seed=3)
    labels = [0, 1, 0, 1, 0, 1, 0, 1]
    ds_path = official_zip(tmp_path / "ds.zip", imgs, labels)
    D = tiny_d(mbstd=False)  # without minibatch std, a score is D of the image alone
    res = rank(D, ds_path, tmp_path / "r", passes=2, batch_size=3, drop_bottom=0.25, progress=False)
    with torch.no_grad():
        x = torch.from_numpy(np.stack([a.transpose(2, 0, 1) for a in imgs])).float() / 127.5 - 1
        direct = D(x).flatten().numpy()
    names = [f"00000/img{i:08d}.png" for i in range(8)]
    want = [names[i] for i in np.argsort(-direct, kind="stable")]
    assert res["names"] == want
    assert np.allclose(res["scores"], np.sort(direct)[::-1], atol=1e-5) and np.allclose(res["stds"], 0, atol=1e-4)
    rows = (tmp_path / "r" / "rank.csv").read_text().splitlines()
    assert rows[0] == "rank,name,score,std,label" and [r.split(",")[1] for r in rows[1:]] == want
    assert (tmp_path / "r" / "rank_top.png").exists() and (tmp_path / "r" / "rank_bottom.png").exists()
    assert not [p.name for p in (tmp_path / "r").iterdir() if p.name.startswith(".")]  # no temporaries left
    kept = ImageDataset(res["dest"], use_labels=True)
    assert len(kept) == 6 and sorted(res["dropped"]) == sorted(want[-2:])
    kept_src = [n for n in names if n not in res["dropped"]]
    for j, src in enumerate(kept_src):  # same pixels and labels, in the original order
        img, onehot = kept[j]
        i = names.index(src)
        assert (img == imgs[i].transpose(2, 0, 1)).all() and onehot.argmax() == labels[i]


def test_rank_shuffles_minibatch_std_groups_and_rounds_the_batch_to_them(tmp_path, monkeypatch):
    """With minibatch std a score depends on the image's group: each pass shuffles the groups (the same
    groups every pass would report no spread), and --batch 6 with groups of 4 is scored 4 at a time
    (a batch of 6 cannot be split into groups of 4). The bottom sheet starts with the worst image."""
    from sg3lib.data import rank as rank_module
    drawn = {}

    def recording_sheet(tiles, tile, title):
        drawn[title.split()[0]] = [caption for _, caption in tiles]
        return Image.new("RGB", (8, 8))
    monkeypatch.setattr(rank_module, "contact_sheet", recording_sheet)
    ds_path = official_zip(tmp_path / "ds.zip", pictures(8, seed=5), None)
    res = rank_module.rank(tiny_d(), ds_path, tmp_path / "r", passes=4, batch_size=6, progress=False)
    assert (res["stds"] > 1e-6).sum() >= 6, res["stds"]
    scores = [f"{v:.2f}" for v in res["scores"]]
    assert drawn["top"] == scores and drawn["bottom"] == scores[::-1]


class _PositionD(torch.nn.Module):
    """A stand-in D whose score of an image is its mean plus 1000 x its place in the batch."""
    c_dim, img_channels, img_resolution = 0, 3, 8

    def forward(self, imgs, c=None):
        return imgs.mean((1, 2, 3)) + 1000 * torch.arange(len(imgs))


def test_rank_counts_no_score_of_the_images_that_fill_the_last_batch(tmp_path):
    """5 images in batches of 4: the last batch is filled up with 3 others, whose scores (at other
    places, so other scores here) are not counted: each image has its one score of the pass."""
    from sg3lib.data.rank import rank
    imgs = pictures(5, seed=7)
    res = rank(_PositionD(), official_zip(tmp_path / "ds.zip", imgs, None), tmp_path / "r", passes=1,
               batch_size=4, progress=False, device="cpu")
    means = {f"00000/img{i:08d}.png": a.astype(np.float64).mean() / 127.5 - 1 for i, a in enumerate(imgs)}
    places = sorted(np.round((s - means[n]) / 1000).astype(int) for n, s in zip(res["names"], res["scores"]))
    assert places == [0, 0, 1, 2, 3] and np.allclose(res["stds"], 0, atol=1e-3)


def test_rank_copies_a_folder_of_jpegs_as_pngs(tmp_path):
    """The official format's images are PNGs named .png: a JPEG's bytes under that name are no PNG."""
    from sg3lib.data.rank import rank
    root = tmp_path / "ds"
    root.mkdir()
    for i, a in enumerate(pictures(4, seed=6)):
        Image.fromarray(a).save(root / f"{i}.jpg", quality=95)
    res = rank(tiny_d(mbstd=False), root, tmp_path / "r", passes=1, drop_bottom=0.25, progress=False)
    with zipfile.ZipFile(res["dest"]) as z:
        pngs = [n for n in z.namelist() if n.endswith(".png")]
        assert len(pngs) == 3 and all(z.read(n).startswith(b"\x89PNG") for n in pngs)
    kept = ImageDataset(res["dest"])
    originals = {n: np.asarray(Image.open(root / n)).transpose(2, 0, 1) for n in os.listdir(root)}
    for j, name in enumerate(sorted(set(originals) - set(res["dropped"]))):  # the decoded pixels, unchanged
        assert (kept[j][0] == originals[name]).all()


def test_rank_copy_shows_progress(tmp_path, capsys):
    """Writing the filtered copy of a large dataset takes as long as scoring it: it gets a bar too."""
    from sg3lib.data.rank import rank
    ds_path = official_zip(tmp_path / "ds.zip", pictures(4, seed=1), None)
    rank(tiny_d(mbstd=False), ds_path, tmp_path / "r", passes=1, drop_bottom=0.25, progress=True)
    err = capsys.readouterr().err
    assert "ranking ds" in err and "writing ds-top75.zip" in err and "3/3" in err
    rank(tiny_d(mbstd=False), ds_path, tmp_path / "q", passes=1, drop_bottom=0.25, progress=False)
    assert "writing" not in capsys.readouterr().err


def test_rank_conditional_with_minibatch_std_and_cli(tmp_path, capsys):
    from sg3lib.checkpoint import save_snapshot, snapshot_from_networks
    from sg3lib.cli import main
    from sg3lib.data.rank import rank
    torch.set_num_threads(1)
    ds_path = official_zip(tmp_path / "ds.zip", pictures(10, seed=4), [i % 2 for i in range(10)])
    snap = save_snapshot(tmp_path / "snapshot-000001000.pt", snapshot_from_networks({"D": tiny_d(c_dim=2)}))
    assert main(["rank", "--network", str(snap), "--data", str(ds_path), "--out", str(tmp_path / "r"),
                 "--passes", "3", "--batch", "4", "--drop-bottom", "20"]) == 0
    assert "ranked 10 images" in capsys.readouterr().out
    rows = [r.split(",") for r in (tmp_path / "r" / "rank.csv").read_text().splitlines()[1:]]
    assert sorted(r[1] for r in rows) == [f"00000/img{i:08d}.png" for i in range(10)]
    scores = [float(r[2]) for r in rows]
    assert scores == sorted(scores, reverse=True)
    assert any(float(r[3]) > 0 for r in rows)  # minibatch std: scores move with their companions
    assert len(ImageDataset(tmp_path / "r" / "ds-top80.zip")) == 8
    # an unconditional dataset for a conditional D: a clear error, not a traceback
    plain = official_zip(tmp_path / "plain.zip", pictures(4), None)
    assert main(["rank", "--network", str(snap), "--data", str(plain), "--out", str(tmp_path / "r2")]) == 2
    err = capsys.readouterr().err  # errors go to stderr
    assert "conditional (2 classes), but" in err and "plain.zip has no labels (dataset.json)" in err
    # labels for another number of classes: said as such, not as missing labels
    three = official_zip(tmp_path / "three.zip", pictures(4), [0, 1, 2, 0])
    assert main(["rank", "--network", str(snap), "--data", str(three), "--out", str(tmp_path / "r3")]) == 2
    assert "three.zip has labels for 3 classes: rank a dataset labelled with the same 2" in capsys.readouterr().err
    with pytest.raises(ValueError, match="labels, but the dataset was opened without use_labels=True"):
        rank(str(snap), ImageDataset(ds_path), tmp_path / "r4", progress=False)




def test_an_interrupted_rank_keeps_neither_the_dataset_open_nor_its_discriminator(tmp_path, monkeypatch):
    """An interrupt while scoring, the traceback kept as a notebook keeps it: the dataset zip rank
    opened is closed (Windows could not delete or replace it) and the D it loaded is freed."""
    import gc
    import weakref
    import sg3lib.data.rank as rank_mod
    from sg3lib.checkpoint import save_snapshot, snapshot_from_networks
    ds_path = official_zip(tmp_path / "ds.zip", pictures(8), None)
    snap = save_snapshot(tmp_path / "snapshot-000001000.pt", snapshot_from_networks({"D": tiny_d()}))
    loaded, reads = [], []
    real_discriminator, real_load = rank_mod._discriminator, ImageDataset.load_image

    def discriminator(*a, **k):
        D, device = real_discriminator(*a, **k)
        loaded.append(weakref.ref(D))
        return D, device

    def load_image(self, i):
        reads.append(i)
        if len(reads) == 5:  # in the second batch
            raise KeyboardInterrupt
        return real_load(self, i)

    monkeypatch.setattr(rank_mod, "_discriminator", discriminator)
    monkeypatch.setattr(ImageDataset, "load_image", load_image)
    with pytest.raises(KeyboardInterrupt) as caught:
        rank_mod.rank(str(snap), ds_path, tmp_path / "r", passes=1, batch_size=4, progress=False)
    kept = caught.value  # held, with its traceback, as a notebook holds the last error
    assert not open_in_this_process(ds_path)
    gc.collect()
    assert len(loaded) == 1 and loaded[0]() is None, "the traceback keeps the discriminator alive"
    del kept


def test_rank_refuses_an_empty_copy_and_zero_passes(tmp_path):
    from sg3lib.data.rank import rank
    torch.set_num_threads(1)
    ds_path = official_zip(tmp_path / "ds.zip", pictures(3), None)
    with pytest.raises(ValueError, match="would drop all of them"):  # round(0.9 * 3) == 3
        rank(tiny_d(), ds_path, tmp_path / "r", passes=1, drop_bottom=0.9, progress=False)
    assert not (tmp_path / "r" / "ds-top10.zip").exists()
    with pytest.raises(ValueError, match="passes must be >= 1"):
        rank(tiny_d(), ds_path, tmp_path / "r", passes=0, progress=False)
    # named by its flag, and before the network is loaded (a missing one is not what is said)
    with pytest.raises(ValueError, match=r"passes must be >= 1 \(sg3 rank --passes"):
        rank(tmp_path / "missing.pt", ds_path, tmp_path / "r", passes=0, progress=False)


def test_rank_takes_a_run_folder_and_refuses_dest_without_drop_bottom(tmp_path, capsys):
    """As README's `sg3 rank --network runs/x --data dataset.zip [--drop-bottom 5 --dest cleaner.zip]`."""
    from sg3lib.checkpoint import save_snapshot, snapshot_from_networks
    from sg3lib.cli import main
    torch.set_num_threads(1)
    ds_path = official_zip(tmp_path / "ds.zip", pictures(4), None)
    run = tmp_path / "run"
    run.mkdir()
    for n in (4, 8):
        save_snapshot(run / f"snapshot-{n:09d}.pt", snapshot_from_networks({"D": tiny_d()}))
    args = ["rank", "--network", str(run), "--data", str(ds_path), "--out", str(tmp_path / "r"), "--passes", "1"]
    assert main(args + ["--drop-bottom", "25", "--dest", str(tmp_path / "cleaner.zip")]) == 0
    assert len(ImageDataset(tmp_path / "cleaner.zip")) == 3
    capsys.readouterr()
    assert main(args + ["--dest", str(tmp_path / "other.zip")]) == 2  # the copy needs --drop-bottom
    assert "--drop-bottom" in capsys.readouterr().err and not (tmp_path / "other.zip").exists()


def test_unconditional_use_does_not_need_the_labels_file(tmp_path):
    imgs = pictures(3)
    mismatched = tmp_path / "m.zip"  # labels for 1 of 3 images
    with zipfile.ZipFile(mismatched, "w") as z:
        for i, a in enumerate(imgs):
            z.writestr(f"00000/img{i:08d}.png", png(a))
        z.writestr("dataset.json", json.dumps({"labels": [["00000/img00000000.png", 1]]}))
    with pytest.warns(UserWarning, match="no label for 00000/img00000001.png.*labels ignored"):
        ds = ImageDataset(mismatched)
    assert len(ds) == 3 and not ds.has_labels and ds.label_dim == 0 and (ds[2][0] == imgs[2].transpose(2, 0, 1)).all()
    with pytest.raises(DatasetError, match="no label for"):  # needed: still an error
        ImageDataset(mismatched, use_labels=True)
    broken = tmp_path / "b.zip"
    with zipfile.ZipFile(broken, "w") as z:
        z.writestr("00000/img00000000.png", png(imgs[0]))
        z.writestr("dataset.json", "{not json")
    with pytest.warns(UserWarning, match="not valid JSON"):
        assert len(ImageDataset(broken)) == 1


def test_malformed_labels_are_a_dataset_error(tmp_path):
    for i, labels in enumerate(({"00000/img00000000.png": 1}, [["00000/img00000000.png", [1, 2]],
                                                                 ["00000/img00000001.png", [1]]])):
        path = tmp_path / f"{i}.zip"
        with zipfile.ZipFile(path, "w") as z:
            for j, a in enumerate(pictures(2)):
                z.writestr(f"00000/img{j:08d}.png", png(a))
            z.writestr("dataset.json", json.dumps({"labels": labels}))
        with pytest.raises(DatasetError, match=f"{i}.zip: .*labels"):
            ImageDataset(path, use_labels=True)


def test_unreadable_sub_folder_is_an_error_not_fewer_images(tmp_path, monkeypatch):
    import os
    for i, a in enumerate(pictures(3)):
        (tmp_path / "ds" / f"{i // 2:05d}").mkdir(parents=True, exist_ok=True)
        (tmp_path / "ds" / f"{i // 2:05d}" / f"img{i:08d}.png").write_bytes(png(a))
    assert len(ImageDataset(tmp_path / "ds")) == 3
    real = os.scandir

    def scandir(path="."):  # as chmod 000 on 00001 (tests may run as root, where it does not block)
        if not isinstance(path, int) and os.fspath(path).rstrip("/").endswith("00001"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real(path)
    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(DatasetError, match="cannot read the folder .*00001 .*Permission denied"):
        ImageDataset(tmp_path / "ds")


def test_zip_made_again_on_a_mac_and_a_file_that_is_no_image(tmp_path):
    imgs = pictures(2)
    with zipfile.ZipFile(tmp_path / "mac.zip", "w") as z:
        for i, a in enumerate(imgs):
            z.writestr(f"ds/00000/img{i:08d}.png", png(a))
            z.writestr(f"__MACOSX/ds/00000/._img{i:08d}.png", b"\0\5\26\7" + b"\0" * 60)  # AppleDouble
    with pytest.warns(UserWarning, match="skipped 2 macOS metadata"):
        ds = ImageDataset(tmp_path / "mac.zip")
    assert ds.image_names == ["ds/00000/img00000000.png", "ds/00000/img00000001.png"]
    with zipfile.ZipFile(tmp_path / "bad.zip", "w") as z:
        z.writestr("00000/img00000000.png", png(imgs[0]))
        z.writestr("00000/img00000001.png", b"not a picture" * 10)
    with pytest.raises(DatasetError, match=r"img00000001\.png of .*bad\.zip cannot be read"):
        ImageDataset(tmp_path / "bad.zip")


def test_labels_of_a_dataset_folder_zipped_as_a_folder(tmp_path):
    """curate's folder output zipped by the OS's "Compress" (and again on a Mac) holds ds/dataset.json
    beside ds/00000/: its labels used to be lost without a word, and a conditional run was refused
    as having no labels."""
    imgs = pictures(3)
    with zipfile.ZipFile(tmp_path / "ds.zip", "w") as z:
        for i, a in enumerate(imgs):
            z.writestr(f"ds/00000/img{i:08d}.png", png(a))
        z.writestr("ds/dataset.json", json.dumps({"labels": [[f"00000/img{i:08d}.png", i % 2] for i in range(3)],
                                                  "class_names": ["cats", "dogs"]}))
        z.writestr("__MACOSX/ds/._dataset.json", b"\0\5\26\7" + b"\0" * 60)
    with pytest.warns(UserWarning, match="macOS metadata"):
        ds = ImageDataset(tmp_path / "ds.zip", use_labels=True)
    assert ds.has_labels and ds.class_names == ["cats", "dogs"]
    assert [ds.get_label(i).tolist() for i in range(3)] == [[1, 0], [0, 1], [1, 0]]


def test_a_sub_folders_dataset_json_is_not_the_labels_of_images_outside_it(tmp_path):
    imgs = pictures(3)
    with zipfile.ZipFile(tmp_path / "ds.zip", "w") as z:
        for i, a in enumerate(imgs[:2]):
            z.writestr(f"a/img{i}.png", png(a))
        z.writestr("a/dataset.json", json.dumps({"labels": [[f"img{i}.png", i] for i in range(2)]}))
        z.writestr("b/img2.png", png(imgs[2]))  # not under a/: a/dataset.json is some other dataset's
    ds = ImageDataset(tmp_path / "ds.zip")
    assert not ds.has_labels and len(ds) == 3 and ds.labels_problem is None


def test_a_copy_never_gives_two_other_files_one_name(tmp_path):
    """A dataset folder zipped as a folder keeps its files' short names in a copy, unless one is taken."""
    with zipfile.ZipFile(tmp_path / "ds.zip", "w") as z:
        z.writestr("ds/00000/img00000000.png", png(pictures(1)[0]))
        z.writestr("ds/dataset.json", json.dumps({"labels": None}))
        z.writestr("ds/LICENSE.txt", "the images' licence")
        z.writestr("LICENSE.txt", "the zip's own")
        z.writestr("ds/notes.md", "notes")
    assert ImageDataset(tmp_path / "ds.zip").other_files() == {
        "LICENSE.txt": "LICENSE.txt", "ds/LICENSE.txt": "ds/LICENSE.txt", "ds/notes.md": "notes.md"}


def test_images_are_named_as_the_official_tool_names_them_a_thousand_to_a_folder():
    from sg3lib.data.writer import image_name
    assert [image_name(i) for i in (0, 999, 1000, 123456)] == [
        "00000/img00000000.png", "00000/img00000999.png", "00001/img00001000.png", "00123/img00123456.png"]


@pytest.mark.parametrize("name", ["../escape.txt", "a/../../escape.txt", "/etc/passwd", "C:/x.txt", "dataset.json", ""])
def test_a_file_beside_the_images_must_be_a_relative_path_inside_the_dataset(tmp_path, name):
    from sg3lib.data.writer import DatasetWriter
    w = DatasetWriter(tmp_path / "ds.zip")
    with pytest.raises(ValueError, match="cannot be a file of a dataset"):
        w.add_file(name, io.BytesIO(b"x"))
    w.abort()


def test_a_zip_with_windows_separators_keeps_its_labels(tmp_path):
    """Windows PowerShell's Compress-Archive writes `00000\\img00000000.png`: on Linux (Colab) such a
    dataset was refused with use_labels ('no label for 00000\\img00000000.png'), and a nested one lost
    the labels of ds\\dataset.json; the official reader takes `\\` as `/` too."""
    imgs = pictures(3)
    with zipfile.ZipFile(tmp_path / "win.zip", "w") as z:
        for i, a in enumerate(imgs):
            z.writestr(f"ds\\00000\\img{i:08d}.png", png(a))
        z.writestr("ds\\dataset.json", json.dumps({"labels": [[f"00000/img{i:08d}.png", i % 2] for i in range(3)]}))
    ds = ImageDataset(tmp_path / "win.zip", use_labels=True)
    assert ds.image_names == [f"ds/00000/img{i:08d}.png" for i in range(3)]
    assert [ds.get_label(i).tolist() for i in range(3)] == [[1, 0], [0, 1], [1, 0]]
    assert (ds[2][0] == imgs[2].transpose(2, 0, 1)).all()


def _mark_last_member_encrypted(path):
    """Set flag bit 0 (encrypted) in both headers of the zip's last member, as a password would."""
    b = bytearray(path.read_bytes())
    local, central = b.rfind(b"PK\x03\x04"), b.rfind(b"PK\x01\x02")
    b[local + 6] |= 1
    b[central + 8] |= 1
    path.write_bytes(bytes(b))


def test_a_zip_member_that_zipfile_cannot_open_is_a_dataset_error(tmp_path):
    """A zip made with a password, or by 7-Zip with Deflate64/PPMd, stopped the dataset (and sg3 train)
    with a bare 'That compression method is not supported' or RuntimeError naming no fix."""
    import struct
    for what, message in (("method", r"img00000001\.png .*compression method.* re-zip"),
                          ("password", r"img00000001\.png .*password.* re-zip")):
        path = tmp_path / f"{what}.zip"
        with zipfile.ZipFile(path, "w") as z:
            for i, a in enumerate(pictures(2)):
                z.writestr(f"00000/img{i:08d}.png", png(a))
        if what == "method":  # 9: Deflate64
            b = bytearray(path.read_bytes())
            local, central = b.rfind(b"PK\x03\x04"), b.rfind(b"PK\x01\x02")  # the last image's headers
            b[local + 8:local + 10] = b[central + 10:central + 12] = struct.pack("<H", 9)
            path.write_bytes(bytes(b))
        else:
            _mark_last_member_encrypted(path)
        with pytest.raises(DatasetError, match=message):
            ImageDataset(path)


def test_labels_that_would_give_a_wrong_class_count_are_refused(tmp_path):
    """class_names decides label_dim with the labels: a string there counted its letters ('cats': 4
    classes), a number failed with a TypeError; labels that are empty vectors gave label_dim 0, so a
    conditional run (--cond) trained an unconditional network without a word."""
    imgs = pictures(3)
    for i, (labels, class_names, message) in enumerate((
            ([0, 1, 0], "cats", "class_names .* list of names"),
            ([0, 1, 0], 2, "class_names .* list of names"),
            ([[], [], []], None, "empty"))):
        path = tmp_path / f"{i}.zip"
        with zipfile.ZipFile(path, "w") as z:
            for j, a in enumerate(imgs):
                z.writestr(f"00000/img{j:08d}.png", png(a))
            pairs = [[f"00000/img{j:08d}.png", x] for j, x in enumerate(labels)]
            z.writestr("dataset.json", json.dumps({"labels": pairs, "class_names": class_names}))
        with pytest.raises(DatasetError, match=message):
            ImageDataset(path, use_labels=True)


def windows_replace(monkeypatch):
    """os.replace as on Windows: a file that this process holds open cannot be replaced."""
    real = os.replace

    def replace(src, dst):
        if open_in_this_process(dst):
            raise PermissionError(13, "The process cannot access the file because it is being used by "
                                      "another process", str(dst))
        real(src, dst)
    monkeypatch.setattr(os, "replace", replace)


def test_rank_can_replace_the_dataset_it_ranks_on_windows(tmp_path, monkeypatch):
    """`sg3 rank --data ds.zip --drop-bottom 25 --dest ds.zip --overwrite` cleans a dataset in place.
    Its zip was still open for reading when the copy was renamed over it, which Windows refuses
    (PermissionError, after all the scoring); Linux does not mind."""
    from sg3lib.data.rank import rank
    torch.set_num_threads(1)
    ds_path = official_zip(tmp_path / "ds.zip", pictures(4), None)
    windows_replace(monkeypatch)
    for own in (False, True):  # a path, or the caller's own dataset
        before = len(ImageDataset(ds_path))
        data = ImageDataset(ds_path) if own else ds_path
        rank(tiny_d(), data, tmp_path / "r", passes=1, drop_bottom=0.25, dest=ds_path, overwrite=True,
             progress=False)
        assert len(ImageDataset(ds_path)) == before - 1


def test_rank_refuses_an_existing_dest_unless_overwrite(tmp_path, capsys):
    from sg3lib.checkpoint import save_snapshot, snapshot_from_networks
    from sg3lib.cli import main
    torch.set_num_threads(1)
    ds_path = official_zip(tmp_path / "ds.zip", pictures(4), None)
    snap = save_snapshot(tmp_path / "snapshot-000000004.pt", snapshot_from_networks({"D": tiny_d()}))
    (tmp_path / "keep.zip").write_bytes(b"precious")
    args = ["rank", "--network", str(snap), "--data", str(ds_path), "--out", str(tmp_path / "r"), "--passes", "1",
            "--drop-bottom", "25", "--dest", str(tmp_path / "keep.zip")]
    assert main(args) == 2
    assert "already exists: " in capsys.readouterr().err and (tmp_path / "keep.zip").read_bytes() == b"precious"
    assert not (tmp_path / "r" / "rank.csv").exists()  # refused before scoring
    assert main(args + ["--overwrite"]) == 0 and len(ImageDataset(tmp_path / "keep.zip")) == 3
    assert main(args[:-2]) == 0  # the default copy in the out folder: new the first time...
    assert main(args[:-2]) == 2 and "ds-top75.zip" in capsys.readouterr().err  # ...refused the second


def test_rank_drop_bottom_is_checked_as_a_percentage(tmp_path, capsys):
    """--drop-bottom takes percent: 150 is refused in those words (not 'a fraction in [0, 1), got 1.5'),
    before the network or the dataset is read."""
    from sg3lib.cli import main
    for bad in ("150", "100", "-5", "nan", "five"):
        with pytest.raises(SystemExit):
            main(["rank", "--network", str(tmp_path / "none.pt"), "--data", str(tmp_path / "none.zip"),
                  "--drop-bottom", bad])
        err = capsys.readouterr().err
        assert "argument --drop-bottom" in err and "fraction" not in err, (bad, err)


def test_rank_refuses_a_dest_named_like_another_archive_before_scoring(tmp_path, capsys):
    from sg3lib.checkpoint import save_snapshot, snapshot_from_networks
    from sg3lib.cli import main
    ds_path = official_zip(tmp_path / "ds.zip", pictures(4), None)
    snap = save_snapshot(tmp_path / "snapshot-000000004.pt", snapshot_from_networks({"D": tiny_d()}))
    assert main(["rank", "--network", str(snap), "--data", str(ds_path), "--out", str(tmp_path / "r"),
                 "--drop-bottom", "25", "--dest", str(tmp_path / "clean.tar")]) == 2
    assert "use " + str(tmp_path / "clean.zip") in capsys.readouterr().err
    assert not (tmp_path / "clean.tar").exists() and not (tmp_path / "r" / "rank.csv").exists()


def test_a_folder_of_raw_non_square_images_points_at_sg3_curate(tmp_path):
    """`sg3 train --data RAW_FOLDER` (a typical first mistake) says how to make a dataset of it."""
    for i in range(2):
        Image.new("RGB", (48, 32), (i * 90, 10, 10)).save(tmp_path / f"{i}.png")
    with pytest.raises(DatasetError, match="48x32, not square; make a dataset of them with `sg3 curate`"):
        ImageDataset(tmp_path).resolution


def test_rank_contact_sheets_shrink_big_images_into_their_tiles(tmp_path):
    """A 128 px dataset: each 64 px tile shows its own image, shrunk (pasted at full size, the
    images covered each other and the captions)."""
    from sg3lib.data.rank import rank
    from sg3lib.networks import build_network
    torch.set_num_threads(1)
    torch.manual_seed(0)
    D = build_network("training.networks_stylegan2.Discriminator",
                      dict(c_dim=0, img_resolution=128, img_channels=3, channel_base=512, channel_max=4,
                           num_fp16_res=0)).eval()
    rng = np.random.default_rng(0)
    imgs = [np.kron(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8), np.ones((32, 32, 1), np.uint8))
            for _ in range(3)]  # 4x4 blocks of colour: the same picture at any size
    res = rank(D, official_zip(tmp_path / "big.zip", imgs, None), tmp_path / "r", passes=1, progress=False)
    sheet = np.asarray(Image.open(res["sheets"]["top"]).convert("RGB")).astype(int)
    for k, name in enumerate(res["names"]):
        want = np.asarray(Image.fromarray(imgs[int(name[-12:-4])]).resize((64, 64), Image.NEAREST)).astype(int)
        x = k * 68 + 2  # cells of tile + 4 px, after a 16 px title
        got = sheet[18:82, x:x + 64]
        assert np.abs(got - want)[4:-4, 4:-4].mean() < 8, (k, name)  # block edges may blur


def test_rank_drop_bottom_rounds_half_up_and_refuses_dropping_none(tmp_path):
    from sg3lib.data.rank import rank
    torch.set_num_threads(1)
    ds_path = official_zip(tmp_path / "ten.zip", pictures(10), None)
    res = rank(tiny_d(), ds_path, tmp_path / "r", passes=1, drop_bottom=0.25, progress=False)
    assert len(res["dropped"]) == 3 and len(ImageDataset(res["dest"])) == 7  # 2.5 images: 3 (round() gave 2)
    res = rank(tiny_d(), ds_path, tmp_path / "r", passes=1, drop_bottom=0.15, progress=False)
    assert len(res["dropped"]) == 2  # 1.5 images: 2
    with pytest.raises(ValueError, match=r"less than half an image.*at least 5% \(half an image, rounded up"):
        rank(tiny_d(), ds_path, tmp_path / "r", passes=1, drop_bottom=0.04, progress=False)
    assert not (tmp_path / "r" / "ten-top96.zip").exists()  # a copy of everything was written
    res = rank(tiny_d(), ds_path, tmp_path / "r", passes=1, drop_bottom=0.05, progress=False)
    assert len(res["dropped"]) == 1  # the least the message names: half an image, rounded up
    seven = official_zip(tmp_path / "seven.zip", pictures(7), None)  # 50/7 = 7.142857...%: 7.14% drops none
    with pytest.raises(ValueError, match=r"drop at least 7\.15%"):
        rank(tiny_d(), seven, tmp_path / "r7", passes=1, drop_bottom=0.0714, progress=False)
    assert len(rank(tiny_d(), seven, tmp_path / "r7", passes=1, drop_bottom=0.0715, progress=False)["dropped"]) == 1


def test_rank_refuses_bad_batch_device_and_size_clearly(tmp_path, capsys, monkeypatch):
    from sg3lib.checkpoint import save_snapshot, snapshot_from_networks
    from sg3lib.cli import main
    torch.set_num_threads(1)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    ds_path = official_zip(tmp_path / "ds.zip", pictures(4), None)
    snap = save_snapshot(tmp_path / "snapshot-000000004.pt", snapshot_from_networks({"D": tiny_d()}))
    args = ["rank", "--network", str(snap), "--data", str(ds_path), "--out", str(tmp_path / "r"), "--passes", "1"]
    for extra, message in ((["--batch", "0"], "batch_size must be >= 1 (sg3 rank --batch), got 0"),
                           (["--device", "cuda"], "torch sees no CUDA GPU here; use cpu (--device cpu)"),
                           (["--device", "gpu0"], "'gpu0' is not a torch device; use cpu, cuda or cuda:N")):
        assert main(args + extra) == 2, extra  # (--batch 0 ranked; a bad --device was a traceback)
        assert message in capsys.readouterr().err
    assert not (tmp_path / "r" / "rank.csv").exists()
    big = official_zip(tmp_path / "big.zip", pictures(2, size=16), None)
    assert main(args[:3] + ["--data", str(big)]) == 2
    assert "expects 8px with 3; rank with a network trained at this size, or curate the images to 8px " \
           "(sg3 curate --resolution 8)" in capsys.readouterr().err


def test_rank_leaves_the_callers_discriminator_as_it_was(tmp_path):
    """A notebook's own D (a module or in a load() dict) keeps its training mode and gradients."""
    from sg3lib.data.rank import rank
    torch.set_num_threads(1)
    ds_path = official_zip(tmp_path / "ds.zip", pictures(4), None)
    D = tiny_d(mbstd=False).train()
    first = rank(D, ds_path, tmp_path / "r", passes=1, progress=False)
    assert D.training and all(p.requires_grad for p in D.parameters())
    again = rank({"D": D}, ds_path, tmp_path / "r", passes=1, progress=False)
    assert D.training and all(p.requires_grad for p in D.parameters())
    assert first["names"] == again["names"] and np.array_equal(first["scores"], again["scores"])


def test_rank_overwrite_never_replaces_a_folder_holding_the_dataset_or_other_files(tmp_path, capsys):
    """`--dest datasets --overwrite` (the folder the zip is in) replaced that folder whole with the
    copy: the dataset zip and every other file in it were deleted. Refused before scoring now."""
    from sg3lib.data.rank import rank
    torch.set_num_threads(1)
    (tmp_path / "datasets").mkdir()
    ds_path = official_zip(tmp_path / "datasets" / "ds.zip", pictures(4), None)
    (tmp_path / "datasets" / "notes.txt").write_text("precious")
    with pytest.raises(ValueError, match="inside the destination"):
        rank(tiny_d(), ds_path, tmp_path / "r", passes=1, drop_bottom=0.25, dest=tmp_path / "datasets",
             overwrite=True, progress=False)
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "holiday.jpg").write_bytes(b"precious")
    with pytest.raises(ValueError, match="not a dataset"):
        rank(tiny_d(), ds_path, tmp_path / "r", passes=1, drop_bottom=0.25, dest=tmp_path / "photos",
             overwrite=True, progress=False)
    assert sorted(os.listdir(tmp_path / "datasets")) == ["ds.zip", "notes.txt"]
    assert (tmp_path / "photos" / "holiday.jpg").read_bytes() == b"precious"
    assert not (tmp_path / "r" / "rank.csv").exists()  # refused before scoring
    with pytest.raises(ValueError, match="would replace the ranking"):  # a folder copy over the ranking
        rank(tiny_d(), ds_path, tmp_path / "r", passes=1, drop_bottom=0.25, dest=tmp_path / "r", progress=False)
    # another dataset folder may be replaced, and so may the dataset itself (cleaned in place)
    official_zip(tmp_path / "other.zip", pictures(2), None)
    old = ImageDataset(tmp_path / "other.zip")
    folder = tmp_path / "old_copy"
    from sg3lib.data.writer import DatasetWriter
    with DatasetWriter(folder) as w:
        for i in range(len(old)):
            w.add(png(old[i][0].transpose(1, 2, 0)))
        w.close()
    res = rank(tiny_d(), ds_path, tmp_path / "r", passes=1, drop_bottom=0.25, dest=folder, overwrite=True,
               progress=False)
    assert len(ImageDataset(res["dest"])) == 3


def test_rank_refuses_writing_its_output_into_a_folder_dataset(tmp_path):
    """--out inside a folder dataset put rank_top.png / rank_bottom.png among its images: the next
    run read them as images (and refused the dataset for their other size)."""
    from sg3lib.data.rank import rank
    from sg3lib.data.writer import DatasetWriter
    torch.set_num_threads(1)
    folder = tmp_path / "ds"
    with DatasetWriter(folder) as w:
        for a in pictures(4):
            w.add(png(a))
        w.close()
    for out, dest in ((folder / "rank", None), (tmp_path / "r", folder / "clean")):
        with pytest.raises(ValueError, match="inside the dataset folder"):
            rank(tiny_d(), folder, out, passes=1, drop_bottom=0.25 if dest else 0, dest=dest, progress=False)
    assert sorted(os.listdir(folder)) == ["00000", "dataset.json"] and len(ImageDataset(folder)) == 4
    res = rank(tiny_d(), folder, tmp_path / "r", passes=1, drop_bottom=0.25, dest=folder, overwrite=True,
               progress=False)  # in place: allowed, as for a zip
    assert len(ImageDataset(folder)) == 3 and res["dest"] == str(folder)


def test_rank_says_how_to_fix_a_channel_mismatch(tmp_path):
    """A grey dataset for an RGB discriminator: the advice was `sg3 curate --resolution 8`, which the
    images already have; the fix is --channels 3."""
    from sg3lib.data.rank import rank
    grey = official_zip(tmp_path / "grey.zip", pictures(2, channels=1), None)
    with pytest.raises(ValueError) as e:
        rank(tiny_d(), grey, tmp_path / "r", passes=1, progress=False)
    assert "1 channel(s), but the discriminator expects 8px with 3" in str(e.value)
    assert "sg3 curate --channels 3" in str(e.value) and "--resolution" not in str(e.value)
    big_grey = official_zip(tmp_path / "bg.zip", pictures(2, size=16, channels=1), None)
    with pytest.raises(ValueError, match=r"sg3 curate --resolution 8 --channels 3\)"):
        rank(tiny_d(), big_grey, tmp_path / "r", passes=1, progress=False)


def test_rank_refuses_a_discriminator_that_scores_nan(tmp_path, capsys):
    """A snapshot of a run that diverged gives NaN logits: the ranking was written anyway (all 'nan',
    in file order) and --drop-bottom dropped the last files, as if they were the worst."""
    from sg3lib.checkpoint import save_snapshot, snapshot_from_networks
    from sg3lib.cli import main
    torch.set_num_threads(1)
    D = tiny_d()
    with torch.no_grad():
        next(iter(D.parameters())).fill_(float("nan"))
    ds_path = official_zip(tmp_path / "ds.zip", pictures(4), None)
    snap = save_snapshot(tmp_path / "snapshot-000000004.pt", snapshot_from_networks({"D": D}))
    assert main(["rank", "--network", str(snap), "--data", str(ds_path), "--out", str(tmp_path / "r"),
                 "--passes", "1", "--drop-bottom", "25"]) == 2
    err = capsys.readouterr().err
    assert "no finite score (NaN or infinity) for 4 of 4 images" in err and "earlier snapshot" in err
    assert not (tmp_path / "r" / "rank.csv").exists() and not (tmp_path / "r" / "ds-top75.zip").exists()


def test_rank_default_out_folder_for_the_current_folder(tmp_path, monkeypatch, capsys):
    """`sg3 rank --data .` (run inside a folder dataset) was a traceback (Path('.') has no name to put
    _rank after); the ranking goes beside the folder, as for any other path."""
    from sg3lib.checkpoint import save_snapshot, snapshot_from_networks
    from sg3lib.cli import main
    from sg3lib.data.writer import DatasetWriter
    torch.set_num_threads(1)
    snap = save_snapshot(tmp_path / "snapshot-000000004.pt", snapshot_from_networks({"D": tiny_d()}))
    with DatasetWriter(tmp_path / "faces") as w:
        for a in pictures(4):
            w.add(png(a))
        w.close()
    monkeypatch.chdir(tmp_path / "faces")
    assert main(["rank", "--network", str(snap), "--data", ".", "--passes", "1", "--drop-bottom", "25"]) == 0
    assert (tmp_path / "faces_rank" / "rank.csv").exists()
    assert sorted(os.listdir(tmp_path / "faces")) == ["00000", "dataset.json"]
    assert os.listdir(tmp_path / "faces_rank" ).count("faces-top75.zip") == 1  # (was the hidden .-top75.zip)
    # A folder named with a dot keeps its whole name: faces.v2 and faces.v3 ranked into one
    # faces_rank/ and faces-top75.zip, the second refused or replacing the first's copy.
    for version in ("v2", "v3"):
        (tmp_path / "faces").rename(tmp_path / f"faces.{version}") if version == "v2" else \
            shutil.copytree(tmp_path / "faces.v2", tmp_path / "faces.v3")
        monkeypatch.chdir(tmp_path)
        assert main(["rank", "--network", str(snap), "--data", f"faces.{version}", "--passes", "1",
                     "--drop-bottom", "25"]) == 0
        assert (tmp_path / f"faces.{version}_rank" / f"faces.{version}-top75.zip").is_file()
    # a zip's ranking is named without its .zip; one image dropped is said in the singular
    official_zip(tmp_path / "ds.zip", pictures(4), None)
    capsys.readouterr()
    assert main(["rank", "--network", str(snap), "--data", "ds.zip", "--passes", "1", "--drop-bottom", "25"]) == 0
    assert (tmp_path / "ds_rank" / "ds-top75.zip").is_file()
    assert "(1 image)" in capsys.readouterr().out


def test_a_local_copy_of_a_dataset_is_made_once_and_renewed_when_it_changes(tmp_path, capsys):
    """Colab reads a dataset zip on Drive through a slow network file system, every epoch again:
    notebook 02 trains from a local copy. The copy is made whole (temporary name, then renamed),
    reused while the source is unchanged (size and time), made again when the source changes."""
    import time
    from sg3lib.files import local_copy
    src = tmp_path / "drive" / "data.zip"
    src.parent.mkdir()
    official_zip(src, pictures(3), None)
    copy = local_copy(src, tmp_path / "local", progress=False)
    assert copy.parent.parent == tmp_path / "local" and re.fullmatch(r"drive-[0-9a-f]{8}", copy.parent.name)
    assert copy.name == "data.zip" and copy.read_bytes() == src.read_bytes()
    assert _count(copy) == 3 and os.listdir(copy.parent) == ["data.zip"]
    mtime, inode = copy.stat().st_mtime_ns, copy.stat().st_ino
    time.sleep(0.01)
    assert local_copy(src, tmp_path / "local", progress=False) == copy and copy.stat().st_mtime_ns == mtime
    assert copy.stat().st_ino == inode  # not copied again (a copy renamed into place is a new file)
    official_zip(src, pictures(5), None)  # the user uploaded a new version under the same name
    os.utime(src, ns=(mtime + 10 ** 9, mtime + 10 ** 9))
    local_copy(src, tmp_path / "local", progress=False)
    assert _count(copy) == 5 and os.listdir(copy.parent) == ["data.zip"]
    # curated again from other images of the same size: a PNG of level 0 has the size of its pixels,
    # so the new zip has the old one's size to the byte; its time tells them apart
    size = src.stat().st_size
    official_zip(src, pictures(5, seed=9), None)
    assert src.stat().st_size == size
    os.utime(src, ns=(mtime + 2 * 10 ** 9, mtime + 2 * 10 ** 9))
    local_copy(src, tmp_path / "local", progress=False)
    assert copy.read_bytes() == src.read_bytes()
    with pytest.raises(FileNotFoundError, match="no-such.zip"):
        local_copy(tmp_path / "no-such.zip", tmp_path / "local", progress=False)
    with pytest.raises(FileNotFoundError, match="drive: no such file to copy"):  # a folder dataset is read in place
        local_copy(tmp_path / "drive", tmp_path / "local", progress=False)
    # Another dataset of the same name (notebook 01 names every zip dataset-<RES>.zip) is another copy:
    # one copy for both made a transfer from a cats run to dogs continue the cats run.
    other = tmp_path / "dogs" / "data.zip"
    other.parent.mkdir()
    official_zip(other, pictures(2), None)
    dogs = local_copy(other, tmp_path / "local", progress=False)
    assert dogs != copy and dogs.parent.name.startswith("dogs-") and _count(dogs) == 2 and _count(copy) == 5


@pytest.mark.parametrize("name", ["data.zip", "faces[64].zip"])
def test_a_killed_local_copy_leaves_nothing_the_next_call_keeps(tmp_path, name):
    """Colab's "Restart runtime" during the copy keeps /content: the hidden temporary (up to the
    dataset's size) stayed there, one per try. (Brackets in a name are no glob pattern.)"""
    import time
    from sg3lib.files import local_copy
    src = official_zip(tmp_path / name, pictures(2), None)
    here = local_copy(src, tmp_path / "local", progress=False).parent  # (the copy's folder)
    (here / name).unlink()
    killed = here / f".{name}.tmp-0badf00d"
    killed.write_bytes(b"PK half")
    old = time.time() - 3600
    os.utime(killed, (old, old))
    running = here / f".{name}.tmp-0000cafe"  # another process copying now
    running.write_bytes(b"PK")
    with pytest.warns(UserWarning, match="removed 1 leftover"):
        local_copy(src, tmp_path / "local", progress=False)
    assert sorted(os.listdir(here)) == [f".{name}.tmp-0000cafe", name]


def test_the_cache_folder_from_python_may_start_with_a_tilde(monkeypatch, tmp_path):
    from sg3lib.files import cache_home
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("SG3LIB_CACHE", "~/sg3cache")
    assert cache_home() == tmp_path / "sg3cache"
    monkeypatch.delenv("SG3LIB_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", "~/xdg")
    assert cache_home() == tmp_path / "xdg" / "sg3lib"


def _count(path):
    ds = ImageDataset(path)
    n = len(ds)
    ds.close()
    return n


def test_rank_cleaning_in_place_keeps_the_datasets_other_files(tmp_path, capsys):
    """`--dest` the dataset itself replaced it with images and dataset.json only: a licence or notes
    file in the folder or zip was deleted without a word (a copy elsewhere left them out too)."""
    from sg3lib.checkpoint import save_snapshot, snapshot_from_networks
    from sg3lib.cli import main
    from sg3lib.data.rank import rank
    torch.set_num_threads(1)
    snap = save_snapshot(tmp_path / "snapshot-000000004.pt", snapshot_from_networks({"D": tiny_d()}))
    zpath = official_zip(tmp_path / "ds.zip", pictures(4), None)
    with zipfile.ZipFile(zpath, "a") as z:
        z.writestr("LICENSE.txt", "CC-BY 4.0")
    folder = tmp_path / "dsdir"
    with zipfile.ZipFile(zpath) as z:
        z.extractall(folder)
    (folder / "00000" / "sources.csv").write_text("img,url\n")
    for ds_path in (zpath, folder):
        args = ["rank", "--network", str(snap), "--data", str(ds_path), "--out", str(tmp_path / "r"),
                "--passes", "1", "--drop-bottom", "25", "--dest", str(ds_path), "--overwrite"]
        assert main(args) == 0
        assert "it keeps the dataset's" in capsys.readouterr().out
        ds = ImageDataset(ds_path)
        assert len(ds) == 3 and ds.other_files() == ({"LICENSE.txt": "LICENSE.txt"} if ds_path == zpath else
                                                     {"00000/sources.csv": "00000/sources.csv",
                                                      "LICENSE.txt": "LICENSE.txt"})
        with ds._open("LICENSE.txt") as f:
            assert f.read() == b"CC-BY 4.0"
        ds.close()
    assert (folder / "00000" / "sources.csv").read_text() == "img,url\n"
    # a dataset folder zipped as a folder: its files are kept under the copy's own layout
    nested = tmp_path / "nested.zip"
    with zipfile.ZipFile(nested, "w") as z:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                z.write(p, f"ds/{p.relative_to(folder).as_posix()}")
    res = rank(tiny_d(), nested, tmp_path / "r", passes=1, drop_bottom=0.34, progress=False)
    assert res["other_files"] == ["00000/sources.csv", "LICENSE.txt"] and len(ImageDataset(res["dest"])) == 2


def test_rank_copy_keeps_the_number_of_classes_when_the_last_class_is_dropped(tmp_path):
    """Official datasets have no class_names: the class count is the highest label + 1. A copy that
    dropped every image of the last class had one class fewer, so the D it was ranked with refused it."""
    from sg3lib.data.rank import rank
    torch.set_num_threads(1)
    imgs = pictures(6, seed=5)
    D = tiny_d(mbstd=False)
    with torch.no_grad():
        x = torch.from_numpy(np.stack([a.transpose(2, 0, 1) for a in imgs])).float() / 127.5 - 1
        worst = int(D(x).flatten().argmin())
    labels = [0 if i % 2 else 1 for i in range(6)]
    labels[worst] = 2  # the only image of class 2 is the one dropped
    ds_path = official_zip(tmp_path / "ds.zip", imgs, labels)
    res = rank(D, ds_path, tmp_path / "r", passes=1, drop_bottom=0.17, progress=False)
    assert res["dropped"] == [f"00000/img{worst:08d}.png"]
    copy = ImageDataset(res["dest"], use_labels=True)
    assert copy.label_dim == 3 and copy.class_names == ["0", "1", "2"]
    # a copy that keeps every class is written as the official tool writes it (no class_names)
    labels[worst], labels[(worst + 1) % 6] = 0, 2
    other = official_zip(tmp_path / "other.zip", imgs, labels)
    res = rank(D, other, tmp_path / "q", passes=1, drop_bottom=0.17, progress=False)
    copy = ImageDataset(res["dest"], use_labels=True)
    assert copy.label_dim == 3 and copy.class_names is None


def test_rank_csv_is_utf8_on_every_system_and_holds_vector_labels(tmp_path, monkeypatch):
    """rank.csv was written in the locale's encoding: on Windows (cp1252) a name like 猫.png failed
    after all the scoring, with nothing written; vector labels left the label column empty."""
    import csv
    import subprocess
    import sys
    root = tmp_path / "ds.zip"  # (a zip: its names are UTF-8 whatever the locale, as Windows' file names are)
    names = ["猫.png", "café.png", "b,c.png"]
    with zipfile.ZipFile(root, "w") as z:
        for name, a in zip(names, pictures(3)):
            z.writestr(name, png(a))
        z.writestr("dataset.json", json.dumps({"labels": [[n, [0.5, i]] for i, n in enumerate(names)]}))
    from sg3lib.checkpoint import save_snapshot, snapshot_from_networks
    snap = save_snapshot(tmp_path / "snapshot-000000004.pt", snapshot_from_networks({"D": tiny_d(c_dim=2)}))
    # A system whose locale encoding cannot write these names (ASCII here, as cp1252 for 猫 on Windows)
    code = (f"from sg3lib.data.rank import rank; rank({str(snap)!r}, {str(root)!r}, {str(tmp_path / 'r')!r}, "
            "passes=1, progress=False)")
    env = dict(os.environ, LC_ALL="C", LANG="C", PYTHONCOERCECLOCALE="0", PYTHONUTF8="0", OMP_NUM_THREADS="1",
               PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    done = subprocess.run([sys.executable, "-X", "utf8=0", "-c", code], env=env, capture_output=True, text=True,
                          encoding="utf-8", errors="replace", timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    with open(tmp_path / "r" / "rank.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["name"] for r in rows) == sorted(names)
    assert {r["name"]: json.loads(r["label"]) for r in rows} == {n: [0.5, i] for i, n in enumerate(names)}


def test_rank_copy_keeps_vector_labels_as_written(tmp_path):
    """Vector labels came back through float32: 0.1 was written as 0.10000000149011612."""
    from sg3lib.data.rank import rank
    torch.set_num_threads(1)
    labels = [[0.1, 0.7], [0.3, 0.001], [2.2, 0.0], [1e-7, 16777217.0]]
    ds_path = official_zip(tmp_path / "ds.zip", pictures(4), labels)
    res = rank(tiny_d(), ds_path, tmp_path / "r", passes=1, drop_bottom=0.25, progress=False)
    with zipfile.ZipFile(res["dest"]) as z:
        written = [lab for _, lab in json.loads(z.read("dataset.json"))["labels"]]
    kept = [labels[int(n[-12:-4])] for n in sorted(set(f"00000/img{i:08d}.png" for i in range(4)) - set(res["dropped"]))]
    assert written == kept
    img, lab = ImageDataset(ds_path, use_labels=True)[0]
    assert lab.dtype == np.float32 and np.allclose(lab, [0.1, 0.7])  # what training sees is unchanged


def test_a_killed_dataset_write_leaves_nothing_the_next_write_keeps(tmp_path):
    """A killed `sg3 curate` (a Colab disconnect) left a hidden dataset-sized temporary per try, which
    nothing removed. The next write of that dataset removes those an hour old, not a write in progress."""
    import time
    from sg3lib.data.writer import DatasetWriter
    old = time.time() - 2 * 3600
    leftovers = [tmp_path / ".ds.zip.tmp-0badf00d.partial", tmp_path / ".dsdir.tmp-0badf00d.partial"]
    leftovers[0].write_bytes(b"x" * 100)
    (leftovers[1] / "00000").mkdir(parents=True)
    (leftovers[1] / "00000" / "img00000000.png").write_bytes(png(pictures(1)[0]))
    for p in (leftovers[1] / "00000" / "img00000000.png", leftovers[1] / "00000", *leftovers):
        os.utime(p, (old, old))
    young = tmp_path / ".ds.zip.tmp-0000cafe.partial"
    young.write_bytes(b"y")
    other = tmp_path / ".other.zip.tmp-0badf00d.partial"
    other.write_bytes(b"z")
    os.utime(other, (old, old))
    for dest in ("ds.zip", "dsdir"):
        with pytest.warns(UserWarning, match="removed 1 leftover"):
            with DatasetWriter(tmp_path / dest) as w:
                w.add(png(pictures(1)[0]))
                w.close()
    assert not any(p.exists() for p in leftovers) and young.exists() and other.exists()


def test_a_folder_dataset_is_on_disk_before_it_replaces_the_old_one(tmp_path, monkeypatch):
    """The zip was fsynced before its rename; a folder's images were not, so a power cut just after an
    in-place clean could leave empty images where the old dataset had been deleted."""
    from sg3lib.data import writer
    seen = []
    monkeypatch.setattr(writer.os, "sync", lambda: seen.append(sorted(p.name for p in (tmp_path / "ds").iterdir())))
    (tmp_path / "ds").mkdir()
    with writer.DatasetWriter(tmp_path / "ds", overwrite=True) as w:
        w.add(png(pictures(1)[0]))
        w.close()
    assert seen == [[]]  # flushed once, while the old (here: empty) folder was still in place
    monkeypatch.delattr(writer.os, "sync")  # Windows: each file is fsynced
    synced = []
    real = os.fsync
    monkeypatch.setattr(writer.os, "fsync", lambda fd: (synced.append(fd), real(fd)))
    with writer.DatasetWriter(tmp_path / "ds", overwrite=True) as w:
        w.add(png(pictures(1)[0]))
        w.add(png(pictures(1)[0]))
        w.close()
    assert len(synced) == 4  # two images and dataset.json, then the folder that holds the dataset


def test_a_dataset_zipped_by_info_zip_keeps_its_labels(tmp_path):
    """Info-ZIP's `zip -r` of a labelled folder with a non-ASCII name: 'dataset.json has no label for
    τî½/a.png' (zipfile's cp437 reading of the UTF-8 bytes of 猫/a.png)."""
    from test_curate import _info_zip
    imgs = pictures(2)
    names = ["猫/a.png", "b.png"]
    files = {n: png(a) for n, a in zip(names, imgs)}
    files["dataset.json"] = json.dumps({"labels": [[n, i] for i, n in enumerate(names)]}).encode()
    ds = ImageDataset(_info_zip(tmp_path / "ds.zip", files), use_labels=True)
    assert ds.image_names == ["b.png", "猫/a.png"] and [int(ds.get_label(i).argmax()) for i in range(2)] == [1, 0]
    assert np.array_equal(ds[1][0], imgs[0].transpose(2, 0, 1))


def test_rank_copy_into_a_folder_can_be_replaced_by_the_same_command(tmp_path):
    """The folder copy keeps the dataset's licence beside its images, and that licence made the copy
    'a folder that is not a dataset': the same command with overwrite was refused."""
    from sg3lib.data.rank import rank
    torch.set_num_threads(1)
    zpath = official_zip(tmp_path / "ds.zip", pictures(8), None)
    with zipfile.ZipFile(zpath, "a") as z:
        z.writestr("LICENSE.txt", "CC-BY 4.0")
    for _ in range(2):
        res = rank(tiny_d(), zpath, tmp_path / "r", passes=1, drop_bottom=0.25, dest=tmp_path / "clean",
                   overwrite=True, progress=False)
        assert res["other_files"] == ["LICENSE.txt"] and len(ImageDataset(tmp_path / "clean")) == 6
    (tmp_path / "clean" / "photos").mkdir()  # a sub-folder of other files is still refused
    with pytest.raises(ValueError, match="not a dataset .*'photos'"):
        rank(tiny_d(), zpath, tmp_path / "r", passes=1, drop_bottom=0.25, dest=tmp_path / "clean",
             overwrite=True, progress=False)


def test_a_broken_dataset_json_is_not_dropped_by_a_ranked_copy(tmp_path):
    """An unconditional D opens the data without labels, so a dataset.json fault only warned and the
    copy was written with labels and class_names null: cleaned in place, the labels were gone."""
    from sg3lib.data.rank import rank
    torch.set_num_threads(1)
    zpath = official_zip(tmp_path / "ds.zip", pictures(4), [0, 1, 0, 1])
    with zipfile.ZipFile(zpath) as z:
        files = {n: z.read(n) for n in z.namelist()}
    meta = json.loads(files["dataset.json"])
    meta["labels"] = meta["labels"][:3]  # one image without a label
    files["dataset.json"] = json.dumps(meta).encode()
    with zipfile.ZipFile(zpath, "w") as z:
        for n, data in files.items():
            z.writestr(n, data)
    before = zpath.read_bytes()
    with pytest.warns(UserWarning, match="no label for"):
        with pytest.raises(ValueError, match="no label for 00000/img00000003.png .*would lose the labels; fix "
                                             "dataset.json"):
            rank(tiny_d(), zpath, tmp_path / "r", passes=1, drop_bottom=0.25, dest=zpath, overwrite=True,
                 progress=False)
    assert zpath.read_bytes() == before


def test_a_damaged_dataset_json_entry_is_named(tmp_path):
    """A bit flipped inside dataset.json's stored bytes (a bad copy) was zipfile's BadZipFile traceback,
    also with use_labels=False, where a broken dataset.json only warns."""
    zpath = official_zip(tmp_path / "ds.zip", pictures(3), [0, 1, 0])
    with zipfile.ZipFile(zpath) as z:
        info = z.getinfo("dataset.json")
    b = bytearray(zpath.read_bytes())
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    b[start + 3] ^= 0x01
    zpath.write_bytes(bytes(b))
    with pytest.raises(DatasetError, match=r"its dataset.json cannot be read \(BadZipFile: .*copy the dataset again"):
        ImageDataset(zpath, use_labels=True)
    with pytest.warns(UserWarning, match="dataset.json cannot be read"):
        assert len(ImageDataset(zpath)) == 3


def test_grey_alpha_pngs_are_two_channel_images(tmp_path):
    imgs = pictures(2, channels=2)
    ds = ImageDataset(official_zip(tmp_path / "la.zip", imgs, None))
    assert ds.num_channels == 2 and (ds[1][0] == imgs[1].transpose(2, 0, 1)).all()


def test_a_home_relative_path_and_a_non_square_resolution_mismatch(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    official_zip(tmp_path / "ds.zip", pictures(1), None)
    assert ImageDataset("~/ds.zip").path == str(tmp_path / "ds.zip")
    wide = [np.zeros((8, 16, 3), np.uint8)]
    with pytest.raises(DatasetError, match="images are 16x8, but resolution=8 was asked for"):
        ImageDataset(official_zip(tmp_path / "wide.zip", wide, None), resolution=8)


def test_a_torch_file_given_as_a_dataset_is_named_as_one(tmp_path):
    with zipfile.ZipFile(tmp_path / "net.zip", "w") as z:
        z.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
        z.writestr("archive/version", b"3\n")
    with pytest.raises(DatasetError, match="is a PyTorch file"):
        ImageDataset(tmp_path / "net.zip")


def test_a_forked_process_opens_its_own_zip_handle(tmp_path):
    """DataLoader workers are forked with the parent's dataset: one shared file offset would mix their
    reads, so a process that is not the one that opened the zip opens it again."""
    ds = ImageDataset(official_zip(tmp_path / "ds.zip", pictures(2), None))
    first = ds._get_zip()
    assert ds._get_zip() is first
    ds._zip_pid = -1  # as a forked child sees it: opened by another process
    assert ds._get_zip() is not first and ds._zip_pid == os.getpid()


def _deflated_and_damaged(path, damaged):
    """A dataset zip whose member `damaged` is deflated with its compressed bytes broken."""
    imgs = pictures(2, size=32)
    with zipfile.ZipFile(path, "w") as z:
        for i, a in enumerate(imgs):
            z.writestr(f"00000/img{i:08d}.png", png(a), compress_type=zipfile.ZIP_DEFLATED)
        labels = [["00000/img00000000.png", 0], ["00000/img00000001.png", 1]]
        z.writestr("dataset.json", json.dumps({"labels": labels, "notes": "x" * 2000}),  # a long stream
                   compress_type=zipfile.ZIP_DEFLATED)
    damage_compressed_bytes(path, damaged)
    return path


def test_deflated_members_damaged_inside_are_named(tmp_path):
    """zipfile raises zlib.error for a damaged Deflate stream (not BadZipFile): it came out bare."""
    with pytest.raises(DatasetError, match="its dataset.json cannot be read"):
        ImageDataset(_deflated_and_damaged(tmp_path / "a.zip", "dataset.json"), use_labels=True)
    with pytest.raises(DatasetError, match=r"image 00000/img00000001\.png of .* cannot be read \(error"):
        ImageDataset(_deflated_and_damaged(tmp_path / "b.zip", "00000/img00000001.png"))


def test_dataset_json_that_is_no_labels_object_or_has_odd_class_names(tmp_path):
    listed = tmp_path / "list"
    listed.mkdir()
    for i, a in enumerate(pictures(2)):
        (listed / f"img{i}.png").write_bytes(png(a))
    (listed / "dataset.json").write_text("[1, 2]")  # valid JSON, but no {"labels": ...}
    assert not ImageDataset(listed, use_labels=True).has_labels
    (listed / "dataset.json").write_text(json.dumps({"labels": [["img0.png", 0], ["img1.png", 1]],
                                                      "class_names": [1, 2]}))
    with pytest.raises(DatasetError, match="class_names in dataset.json must be a list of names"):
        ImageDataset(listed, use_labels=True)
    (listed / "dataset.json").write_text(json.dumps({"labels": [["img0.png", True], ["img1.png", False]]}))
    with pytest.raises(DatasetError, match="must be class indices >= 0; img0.png has True"):
        ImageDataset(listed, use_labels=True)


def test_an_image_unlike_the_first_is_refused_when_it_is_drawn(tmp_path):
    """check=False reads only the first header: an image of another size, or 16-bit, is refused by name
    when training draws it, not passed on."""
    folder = tmp_path / "ds"
    folder.mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(folder / "a.png")
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(folder / "b.png")
    Image.fromarray(np.full((8, 8), 1000, np.uint16)).save(folder / "c.png")
    ds = ImageDataset(folder, check=False)
    with pytest.raises(DatasetError, match=r"image b\.png has shape \(1, 16, 16\), expected \(1, 8, 8\)"):
        ds.load_image(1)
    with pytest.raises(DatasetError, match=r"image c\.png has uint16 pixels; expected 8-bit"):
        ds.load_image(2)


def test_a_dataset_error_of_a_member_is_raised_as_it_is(tmp_path):
    """An encrypted image drawn later says so, not 'cannot be read (DatasetError: ...)' around it."""
    path = tmp_path / "enc.zip"
    with zipfile.ZipFile(path, "w") as z:
        for i, a in enumerate(pictures(2)):
            z.writestr(f"00000/img{i:08d}.png", png(a))
    _mark_last_member_encrypted(path)
    ds = ImageDataset(path, check=False)
    with pytest.raises(DatasetError, match="is encrypted") as e:
        ds.load_image(1)
    assert "cannot be read" not in str(e.value)


def test_names_and_vector_labels_of_mirrored_copies(tmp_path):
    """A zip not named .zip keeps its whole name; a mirrored copy has its original's vector label; a
    file stored with Windows separators is found by its '/' name."""
    path = tmp_path / "faces.v2"
    names = [f"00000/img{i:08d}.png" for i in range(2)]
    with zipfile.ZipFile(path, "w") as z:
        for name, a in zip(names, pictures(2)):
            z.writestr(name, png(a))
        z.writestr("docs\\LICENSE", b"mine")
        z.writestr("dataset.json", json.dumps({"labels": [[names[0], [0.5, 1.0]], [names[1], [2.0, -1.0]]]}))
    ds = ImageDataset(path, use_labels=True, xflip=True)
    assert ds.name == "faces.v2"
    assert [ds[i][1].tolist() for i in range(4)] == [[0.5, 1.0], [2.0, -1.0], [0.5, 1.0], [2.0, -1.0]]
    assert ds.other_files() == {"docs/LICENSE": "docs/LICENSE"} and ds._file_size("docs/LICENSE") == 4


def test_rank_counts_the_images_to_drop_half_up_despite_float_error():
    from sg3lib.data.rank import _count_to_drop
    assert 0.29 * 50 == 14.499999999999998  # 14.5 images: half up is 15
    assert _count_to_drop(0.29, 50) == 15 and _count_to_drop(0.27, 50) == 14 and _count_to_drop(0.5, 3) == 2
    with pytest.raises(ValueError, match=r"drop_bottom is a fraction in \[0, 1\)"):
        _count_to_drop(1.0, 10)  # (not "would drop all of them": 100% is no fraction to keep)


def test_rank_gives_an_eval_mode_discriminator_back_as_it_was_and_ranks_from_1(tmp_path):
    from sg3lib.data.rank import rank
    torch.set_num_threads(1)
    ds_path = official_zip(tmp_path / "ds.zip", pictures(4), None)
    D = tiny_d(mbstd=False).eval()
    rank(D, ds_path, tmp_path / "r", passes=1, progress=False)
    assert not D.training
    rows = (tmp_path / "r" / "rank.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows] == [1, 2, 3, 4]


def test_rank_copy_keeps_the_class_names_it_was_given(tmp_path):
    from sg3lib.data.rank import rank
    torch.set_num_threads(1)
    path = tmp_path / "ds.zip"
    names = [f"00000/img{i:08d}.png" for i in range(4)]
    with zipfile.ZipFile(path, "w") as z:  # labelled as sg3 curate --labels folders writes
        for n, a in zip(names, pictures(4, seed=2)):
            z.writestr(n, png(a))
        z.writestr("dataset.json", json.dumps({"labels": [[n, i % 2] for i, n in enumerate(names)],
                                               "class_names": ["cat", "dog"]}))
    res = rank(tiny_d(mbstd=False), path, tmp_path / "r", passes=1, drop_bottom=0.25, progress=False)
    copy = ImageDataset(res["dest"], use_labels=True)
    assert len(copy) == 3 and copy.class_names == ["cat", "dog"]


def test_rank_says_a_network_of_other_channels_is_none_curate_makes():
    from types import SimpleNamespace
    from sg3lib.data.rank import _mismatch_fix
    fix = _mismatch_fix(SimpleNamespace(resolution=8, num_channels=3), SimpleNamespace(img_resolution=8, img_channels=4))
    assert fix.startswith("rank with a network trained on 3-channel images (4-channel datasets are not made")


def test_a_folder_dataset_names_the_entries_it_skips_that_are_no_files(tmp_path):
    """A dangling link named like an image was left out without a word."""
    folder = tmp_path / "ds"
    folder.mkdir()
    for i, a in enumerate(pictures(2)):
        (folder / f"img{i}.png").write_bytes(png(a))
    os.symlink(tmp_path / "gone.png", folder / "img2.png")
    with pytest.warns(UserWarning, match=r"skipped 1 entry that is no file .*\['img2\.png'\]"):
        ds = ImageDataset(folder)
    assert ds.image_names == ["img0.png", "img1.png"]
