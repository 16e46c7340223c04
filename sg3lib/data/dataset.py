"""The official StyleGAN dataset format: reading it (ImageDataset; writing is in writer.py).

Format (a fact shared with the official dataset tool, so zips go both ways): a ZIP of
uncompressed PNGs (or a folder of them), all the same size and channel count, named
`00000/img00000000.png` (1000 per folder), plus an optional `dataset.json`
`{"labels": [["00000/img00000000.png", 3], ...]}` with integer class labels or vectors of numbers
(or null).
We add `"class_names"` (index -> sub-folder name); other readers ignore the extra key.
"""
import json
import math
import os
import struct
import unicodedata
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from .images import IMAGE_EXTS, is_macos_metadata
from .writer import DatasetWriter, image_name  # noqa: F401 (re-exported: the format's two halves)
from .writer import looks_like_a_network, why_not_a_dataset, zip_file_names

try:
    import torch
    _Base = torch.utils.data.Dataset
except ImportError:  # reading data does not need torch
    torch, _Base = None, object


class DatasetError(ValueError):
    """A dataset that cannot be read as one uniform set of images; the message says why."""


_PNG_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}  # PNG colour type -> channels (3, palette, handled apart)
# Pillow modes that load_image returns as 8-bit pixels -> channels (palette images as RGB).
_MODE_CHANNELS = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4, "P": 3}
_MODE_WORDS = {"1": "1-bit black-and-white", "I": "32-bit grey", "F": "floating-point grey", "CMYK": "CMYK",
               **{m: "16-bit grey" for m in ("I;16", "I;16B", "I;16L", "I;16N")}}


def _header_shape(head, fname, open_full):
    """(channels, height, width) from a file's first bytes; 8-bit PNG parsed directly (fast),
    anything else through Pillow's header reader. Pixels that are not 8-bit grey/RGB(A) (16-bit
    grey, 1-bit, float, CMYK) are refused here, not when training first draws the image."""
    if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
        w, h, depth, ctype = struct.unpack(">IIBB", head[16:26])
        if depth == 8 and ctype in _PNG_CHANNELS:
            return _PNG_CHANNELS[ctype], h, w
        if depth == 16 and ctype == 4:  # Pillow opens it as RGBA: grey+alpha would train as 4 channels
            raise DatasetError(f"image {fname} is a 16-bit grey+alpha PNG; a dataset holds 8-bit grey, RGB "
                               "or RGBA images: re-run `sg3 curate` on the source images (it converts them)")
    with open_full() as f:
        try:
            img = Image.open(f)
        except Exception as e:  # not an image, or a broken header
            raise DatasetError(f"image {fname} cannot be read ({type(e).__name__}: {e}); remove it "
                               "or re-run `sg3 curate` on the source images")
        if img.mode not in _MODE_CHANNELS:
            # (Pillow before 11 opens a 16-bit grey PNG as 'I', which is 32-bit grey elsewhere)
            kind = "16-bit grey" if img.mode == "I" and img.format == "PNG" else _MODE_WORDS.get(img.mode, img.mode)
            raise DatasetError(f"image {fname} is a {kind} image (Pillow mode {img.mode}); a dataset holds "
                               "8-bit grey, RGB or RGBA images: re-run `sg3 curate` on the source images "
                               "(it converts 16-bit, 1-bit, float and CMYK images)")
        _check_palette(img, fname)
        return _MODE_CHANNELS[img.mode], img.size[1], img.size[0]


def _check_palette(img, fname):
    """A palette image with a transparent colour is refused: read as RGB, its transparent pixels
    would train as whatever colour the palette holds there (curate lays them over a background)."""
    if img.mode == "P" and "transparency" in img.info:
        raise DatasetError(f"image {fname} is a palette image with transparency; a dataset holds 8-bit "
                           "grey, RGB or RGBA images: re-run `sg3 curate` on the source images (it "
                           "converts palette images and their transparency)")


def _folder_files(root):
    """Relative posix paths of the files under root; an unreadable sub-folder is an error
    (pathlib's rglob would skip it silently, and its images would be missing from training).
    Linked sub-folders are read too, as curate reads them (not a link to a folder above). What is
    no file (a dangling link, a pipe) is left out with a warning that counts and names it."""
    def fail(e):
        raise DatasetError(f"cannot read the folder {e.filename} of dataset {root} ({e.strerror}); "
                           "fix its permissions or move it out of the dataset")
    names, others = [], []
    chains = {root: frozenset([os.path.realpath(root)])}  # folder -> the real folders above
    for d, dirs, files in os.walk(root, onerror=fail, followlinks=True):
        chain, kept = chains.pop(d), []
        for s in dirs:
            real = os.path.realpath(os.path.join(d, s))
            if real not in chain:  # a link to a folder it is in would never end
                kept.append(s)
                chains[os.path.join(d, s)] = chain | {real}
        dirs[:] = kept
        rel = os.path.relpath(d, root)
        for f in files:
            name = f if rel == "." else f"{Path(rel).as_posix()}/{f}"
            (names if os.path.isfile(os.path.join(d, f)) else others).append(name)
    if others:
        warnings.warn(f"{root}: skipped {len(others)} entr{'y' if len(others) == 1 else 'ies'} that "
                      f"{'is' if len(others) == 1 else 'are'} no file (a dangling link, a pipe): "
                      f"{sorted(others)[:5]}", stacklevel=3)
    return names


def _without_macos_metadata(names, path):
    """Drop `__MACOSX/` and `._*` files (a dataset zipped again on a Mac), saying how many."""
    kept = [n for n in names if not is_macos_metadata(n)]
    if len(kept) < len(names):
        warnings.warn(f"{path}: skipped {len(names) - len(kept)} macOS metadata file(s) "
                      "(__MACOSX/ or ._ files), they are not images", stacklevel=3)
    return kept


class ImageDataset(_Base):
    """Images of a dataset zip or folder (official format) as uint8 CHW arrays + labels.

    ImageDataset(path, resolution=None, use_labels=False, xflip=False, check=True,
                 as_tensor=False)
    dataset[i] -> (image uint8 [C,H,W], label float32 [label_dim]); with xflip the length
    doubles and the second half is mirrored. `check=True` reads every image's header once
    and raises DatasetError naming the first file whose size/channels differ.
    Picklable: the zip is opened lazily in each process (DataLoader workers).
    """

    def __init__(self, path, resolution=None, use_labels=False, xflip=False, check=True, as_tensor=False):
        self.path = os.path.expanduser(str(path))  # '~/data.zip' is in the home folder
        self._use_labels, self._xflip, self._as_tensor = bool(use_labels), bool(xflip), bool(as_tensor)
        self._zip, self._zip_pid, self._zip_names = None, None, {}
        self.labels_problem = None  # why dataset.json was not used, when it only warned (use_labels=False)
        if os.path.isdir(self.path):
            self._type = "dir"
            names = _folder_files(self.path)
        elif zipfile.is_zipfile(self.path):
            self._type = "zip"
            names = self._zip_members()
        elif not os.path.exists(self.path):
            raise DatasetError(f"dataset not found: {self.path} (expected a .zip or a folder)")
        else:
            raise DatasetError(f"{self.path} {why_not_a_dataset(self.path)}")
        names = _without_macos_metadata(names, self.path)
        self._names = sorted(n for n in names if os.path.splitext(n)[1].lower() in IMAGE_EXTS)
        self._non_images = sorted(n for n in names if os.path.splitext(n)[1].lower() not in IMAGE_EXTS)
        if not self._names and self._type == "zip" and looks_like_a_network(names):
            raise DatasetError(f"{self.path} is a PyTorch file (a network snapshot?), not a dataset; give a "
                               "dataset .zip or folder (sg3 curate makes one)")
        if not self._names:
            raise DatasetError(f"no images (png/jpg/webp/bmp/tiff/gif) found in {self.path}")
        self._raw_labels, self._class_names = self._labels_or_none(set(names))
        self._label_dim = self._count_label_dim()  # once: get_label needs it for every image
        self._shape = self._check_shapes(check)
        if resolution is not None and (self._shape[1] != resolution or self._shape[2] != resolution):
            raise DatasetError(f"{self.path}: images are {self._shape[2]}x{self._shape[1]}, "
                               f"but resolution={resolution} was asked for")

    # -- file access -------------------------------------------------------------------
    def _get_zip(self):
        if self._zip is None or self._zip_pid != os.getpid():  # one handle per process
            self._zip, self._zip_pid = zipfile.ZipFile(self.path), os.getpid()
        return self._zip

    def _zip_members(self):
        """The zip's file names with `/` between folders, UTF-8 where Info-ZIP stored it (zip_file_names)."""
        names, self._zip_names = zip_file_names(self._get_zip())
        return names

    def _open(self, name):
        if self._type == "dir":
            return open(os.path.join(self.path, name), "rb")
        z = self._get_zip()
        info = z.getinfo(self._zip_names.get(name, name))
        # zipfile raises a bare RuntimeError / NotImplementedError for these, naming no file or fix
        if info.flag_bits & 0x1:
            raise DatasetError(f"{self.path}: {name} is encrypted (the zip has a password); re-zip the "
                               "dataset without one (or make it with `sg3 curate`)")
        try:
            return z.open(info, "r")
        except NotImplementedError:
            raise DatasetError(f"{self.path}: {name} is stored with a compression method Python's zipfile "
                               f"does not read (method {info.compress_type}, e.g. Deflate64 or PPMd); re-zip "
                               "the dataset with Store or Deflate (or make it with `sg3 curate`)") from None

    def __getstate__(self):
        return dict(self.__dict__, _zip=None, _zip_pid=None)

    def close(self):
        if self._zip is not None:
            self._zip.close()
        self._zip = None

    # -- labels and shapes ----------------------------------------------------------------
    def _labels_or_none(self, all_names):
        """Labels of dataset.json; without use_labels a broken file only warns (not needed then)."""
        try:
            return self._load_labels(all_names)
        except DatasetError as e:
            if self._use_labels:
                raise
            warnings.warn(f"{e}; labels ignored (use_labels=False)", stacklevel=3)
            self.labels_problem = str(e)
            return None, None

    def _labels_file(self, all_names):
        """(dataset.json's name, the folder its image names leave out). A dataset folder zipped as
        a folder (the OS's "Compress"; every name starts with `ds/`) has it in that folder."""
        if "dataset.json" in all_names:
            return "dataset.json", ""
        top = self._names[0].split("/", 1)[0] + "/"
        if top + "dataset.json" in all_names and all(n.startswith(top) for n in self._names):
            return top + "dataset.json", top
        return None, ""

    def _load_labels(self, all_names):
        labels_file, folder = self._labels_file(all_names)
        if labels_file is None:
            return None, None
        try:
            with self._open(labels_file) as f:
                meta = json.load(f)
        except ValueError as e:
            raise DatasetError(f"{self.path}: dataset.json is not valid JSON ({e})")
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as e:  # (damaged by a copy: a CRC failure)
            raise DatasetError(f"{self.path}: its dataset.json cannot be read ({type(e).__name__}: {e}); the "
                               "file is damaged: copy the dataset again")
        labels = meta.get("labels") if isinstance(meta, dict) else None
        if labels is None:
            return None, None
        class_names = meta.get("class_names")  # with the labels, it decides label_dim
        if class_names is not None and not (isinstance(class_names, list)
                                            and all(isinstance(c, str) for c in class_names)):
            raise DatasetError(f"{self.path}: class_names in dataset.json must be a list of names (class "
                               f"index -> name), not {type(class_names).__name__} {class_names!r:.40}")
        try:
            # NFC: names from a Mac's file system are decomposed, a hand-made dataset.json composed
            table = dict((unicodedata.normalize("NFC", str(k)), v) for k, v in labels)
        except (TypeError, ValueError):
            raise DatasetError(f"{self.path}: 'labels' in dataset.json must be a list of [image name, label] "
                               "pairs, as the official dataset tool writes it")
        keys = [unicodedata.normalize("NFC", n[len(folder):]) for n in self._names]
        missing = [n for n, k in zip(self._names, keys) if k not in table]
        if missing:
            raise DatasetError(f"{self.path}: dataset.json has no label for {missing[0]} "
                               f"({len(missing)} images unlabelled)")
        try:
            raw = np.array([table[k] for k in keys])
        except ValueError:  # ragged vectors
            raise DatasetError(f"{self.path}: labels in dataset.json must all have the same length")
        if raw.ndim == 1:
            return self._class_indices(raw), class_names
        try:  # float64, as parsed: a copy (sg3 rank --drop-bottom) writes them back unchanged
            raw = raw.astype(np.float64)
        except (TypeError, ValueError):
            raw = None
        if raw is None or raw.ndim != 2:
            raise DatasetError(f"{self.path}: labels in dataset.json must be class indices or vectors of numbers")
        if raw.shape[1] == 0:  # label_dim 0: a conditional run would train an unconditional network
            raise DatasetError(f"{self.path}: labels in dataset.json are empty vectors ([]); give each image "
                               "a class index or a vector of numbers, or \"labels\": null for none")
        if not np.isfinite(raw).all():  # a NaN label makes every output NaN: nothing would train
            bad = self._names[int(np.flatnonzero(~np.isfinite(raw).all(axis=1))[0])]
            raise DatasetError(f"{self.path}: the label of {bad} in dataset.json is not finite (NaN or infinity)")
        return raw, class_names

    def _class_indices(self, raw):
        """Class labels as int64. Whole numbers written as floats (3.0) are class indices too, as
        the official reader takes them; 2.5, a negative number or a non-number is refused."""
        for name, v in zip(self._names, raw.tolist()):
            number = isinstance(v, (int, float)) and not isinstance(v, bool)
            if not (number and math.isfinite(v) and v >= 0 and v == int(v)):
                raise DatasetError(f"{self.path}: labels in dataset.json must be class indices >= 0; "
                                   f"{name} has {v!r}")
        return raw.astype(np.int64)

    def _check_shapes(self, check):
        names = self._names if check else self._names[:1]
        it = names
        if len(names) > 5000:
            from tqdm.auto import tqdm
            it = tqdm(names, desc=f"checking {os.path.basename(self.path)}", unit="img")
        first = None
        for n in it:
            try:
                with self._open(n) as f:
                    head = f.read(32)
            except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as e:  # damaged in a copy, unreadable
                raise DatasetError(f"image {n} of {self.path} cannot be read ({type(e).__name__}: {e}); copy "
                                   "the dataset again, or re-run `sg3 curate` on the source images") from None
            shape = _header_shape(head, f"{n} of {self.path}", lambda n=n: self._open(n))
            if first is None:
                first = (n, shape)
            elif shape != first[1]:
                c, h, w = shape
                fc, fh, fw = first[1]
                raise DatasetError(
                    f"{self.path}: image {n} is {w}x{h} with {c} channel(s), but {first[0]} "
                    f"(and all before it) is {fw}x{fh} with {fc}; every image of a dataset must have the "
                    f"same size and channels (re-run `sg3 curate` to make it uniform)")
        return first[1]

    # -- torch Dataset ------------------------------------------------------------------
    def __len__(self):
        return len(self._names) * (2 if self._xflip else 1)

    def load_image(self, raw_idx):
        """uint8 [C,H,W] numpy array of image number raw_idx (no flip)."""
        name = self._names[raw_idx]
        try:
            with self._open(name) as f:
                img = Image.open(f)
                if img.mode == "P":
                    _check_palette(img, f"{name} of {self.path}")
                    img = img.convert("RGB")
                a = np.asarray(img)
        except (MemoryError, DatasetError):  # (a DatasetError of _open names the file and the fix)
            raise
        except Exception as e:  # damaged data behind a good header (truncated, bad CRC), a file gone
            raise DatasetError(f"{self.path}: image {name} cannot be read ({type(e).__name__}: {e}); "
                               "remove it or re-run `sg3 curate` on the source images") from e
        a = a[:, :, None] if a.ndim == 2 else a
        if a.dtype != np.uint8:
            raise DatasetError(f"{self.path}: image {name} has {a.dtype} pixels; expected 8-bit "
                               "(re-run `sg3 curate` on the source images)")
        a = a.transpose(2, 0, 1)
        if a.shape != self._shape:
            raise DatasetError(f"{self.path}: image {name} has shape {a.shape}, expected {self._shape}")
        return a

    def get_label(self, idx):
        raw_idx = idx % len(self._names)
        if not self._use_labels or self._raw_labels is None:
            return np.zeros([0], dtype=np.float32)
        if self._raw_labels.dtype == np.int64:
            onehot = np.zeros([self.label_dim], dtype=np.float32)
            onehot[self._raw_labels[raw_idx]] = 1
            return onehot
        return self._raw_labels[raw_idx].astype(np.float32)

    def __getitem__(self, idx):
        if idx < 0:
            idx += len(self)
        if not 0 <= idx < len(self):
            raise IndexError(idx)
        raw_idx = idx % len(self._names)
        img = self.load_image(raw_idx)
        if idx >= len(self._names):
            img = img[:, :, ::-1]
        # A copy of its own: a grey image's array is Pillow's read-only buffer (already contiguous, so
        # ascontiguousarray kept it), which torch warns about in every DataLoader batch.
        img, label = np.array(img, order="C"), self.get_label(idx)
        if self._as_tensor:
            return torch.from_numpy(img), torch.from_numpy(label)
        return img, label

    # -- properties ---------------------------------------------------------------------
    @property
    def name(self):
        """The dataset's file name without .zip, or its folder's own name (a dot in it stays: faces.v2;
        '.' is the folder it stands for)."""
        base = os.path.basename(os.path.abspath(self.path))
        return base[:-4] if self._type == "zip" and base.lower().endswith(".zip") else base

    @property
    def image_shape(self):
        return list(self._shape)

    @property
    def num_channels(self):
        return self._shape[0]

    @property
    def resolution(self):
        if self._shape[1] != self._shape[2]:
            raise DatasetError(f"{self.path}: images are {self._shape[2]}x{self._shape[1]}, not square; make a "
                               "dataset of them with `sg3 curate` (it crops or pads them to squares)")
        return self._shape[1]

    @property
    def has_labels(self):
        return self._raw_labels is not None

    @property
    def label_dim(self):
        return self._label_dim

    def _count_label_dim(self):
        if not self._use_labels or self._raw_labels is None:
            return 0
        if self._raw_labels.dtype == np.int64:
            return int(max(self._raw_labels.max() + 1, len(self._class_names or [])))
        return int(self._raw_labels.shape[1])

    @property
    def label_shape(self):
        return [self.label_dim]

    def other_files(self):
        """{name as stored: name in a copy} of the files that are neither images nor dataset.json (a
        licence, notes; not macOS metadata), which a copy of the dataset keeps. The copy's names leave
        out the folder of a dataset folder zipped as a folder (found by its dataset.json), as its
        image names do."""
        labels_file, folder = self._labels_file(set(self._non_images))
        out, taken = {}, set()
        for n in self._non_images:
            if n != labels_file:
                short = n[len(folder):] if folder and n.startswith(folder) else n
                out[n] = short if short not in taken and short != "dataset.json" else n
                taken.add(out[n])
        return out

    def _file_size(self, name):
        if self._type == "dir":
            return os.path.getsize(os.path.join(self.path, name))
        return self._get_zip().getinfo(self._zip_names.get(name, name)).file_size

    @property
    def class_names(self):
        return self._class_names

    @property
    def image_names(self):
        return list(self._names)
