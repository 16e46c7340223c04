"""Writing the official StyleGAN dataset format (see dataset.py for the format itself).

Kept apart from dataset.py so that curation does not import torch.
"""
import glob
import json
import os
import re
import shutil
import zipfile
from pathlib import Path, PurePosixPath

from .. import files
from ..files import fsync_dir, move_into_place, remove_leftovers, temp_dir_beside, temp_file_beside


def image_name(index):
    """Name of image number `index` inside a dataset, as the official tool names it."""
    return f"{index // 1000:05d}/img{index:08d}.png"


def _member(name):
    """A zip entry with a fixed date (zip's earliest), not the time of writing: the same images give
    the same zip bytes, run after run. Read and write for the owner, as writestr gives by default."""
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type, info.external_attr = zipfile.ZIP_STORED, 0o600 << 16
    return info


# Archive suffixes that are not .zip: a dataset named so would be written as a folder under that
# name (dataset.tar a folder), which neither tar nor the user expects.
OTHER_ARCHIVES = (".tar", ".tgz", ".gz", ".bz2", ".xz", ".zst", ".7z", ".rar")


def check_dest_name(dest):
    """ValueError for a destination named like an archive the official format is not."""
    dest = Path(dest)
    stem = dest
    while stem.suffix.lower() in OTHER_ARCHIVES:  # dataset.tar.gz -> dataset
        stem = stem.with_suffix("")
    if stem != dest:
        raise ValueError(f"{dest}: a dataset is written as NAME.zip (the official format) or as a folder, "
                         f"not as {dest.name[len(stem.name):]}; use {stem.with_name(stem.name + '.zip')}")


def why_not_a_dataset(path):
    """What `path`, an existing file that zipfile does not take, is instead: said as the rest of a
    sentence that starts with its name (a dataset cut off in a download says so, not 'not a zip')."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as e:
        return f"cannot be read ({e.strerror or e}); check its permissions"
    if not head:
        return "is empty (0 bytes): an interrupted download or copy? Copy it again"
    if head.startswith(b"PK"):
        return ("is a damaged or truncated zip (its directory at the end is missing or unreadable): "
                "an interrupted download, upload or copy? Copy it again")
    if head[:1] == b"\x80":
        return "is a Python pickle (a network .pkl?), not a dataset; give a dataset .zip or folder"
    return "is neither a folder nor a zip file; give a dataset .zip or folder"


def zip_file_names(z):
    """(the file names of zip `z` as the dataset format reads them, {such a name: the name as stored}
    for those that differ). Folders are separated by `/`: Windows PowerShell's Compress-Archive writes
    `\\` (the official reader takes both). A name without the UTF-8 flag is decoded by zipfile as
    cp437, the format's old code page, but Info-ZIP's `zip` (Linux, Colab's `!zip -r`) stores UTF-8
    there without the flag: read as UTF-8 where its bytes are that ('猫/a.png', not 'τî½/a.png')."""
    names, stored = [], {}
    for info in z.infolist():
        name = info.filename
        if not info.flag_bits & 0x800 and not name.isascii():
            try:
                name = name.encode("cp437").decode("utf-8")
            except UnicodeError:  # a real cp437 name ('\x82' alone is no UTF-8)
                pass
        name = name.replace("\\", "/")
        if not name.endswith("/"):
            names.append(name)
            if name != info.filename:
                stored[name] = info.filename
    return names, stored


def looks_like_a_network(names):
    """Whether the names in a zip are a PyTorch file's (an sg3lib snapshot .pt is a zip)."""
    return any(n.endswith("/data.pkl") or n == "data.pkl" for n in names)


# A dataset folder holds these besides its NNNNN/ folders (the others: what a file browser leaves).
_DATASET_FILES = {"dataset.json", ".DS_Store", "Thumbs.db", "desktop.ini"}


def _zip_over_folder(dest):
    return f"destination {dest} is a folder, which a dataset .zip cannot replace; remove it or choose another name"


def check_replaceable(src, dest):
    """overwrite replaces `dest` whole (a folder with all it holds): only ever a dataset, never the
    source nor a folder of other files (ValueError naming what it holds). Used by curate and rank."""
    s, d = src.resolve(), dest.resolve()
    if s == d or s.is_relative_to(d):
        raise ValueError(f"the source {src} is {'the destination' if s == d else 'inside the destination'} {dest}, "
                         f"which overwrite (--overwrite) would replace, source and all; choose another destination")
    if dest.suffix.lower() == ".zip":
        if dest.is_dir():
            raise ValueError(_zip_over_folder(dest))
        return
    if not dest.is_dir():
        raise ValueError(f"destination {dest} is a file, not a dataset folder; remove it or choose another name")
    names = os.listdir(dest)
    others = sorted(n for n in names if n not in _DATASET_FILES
                    and not (re.fullmatch(r"\d{5}", n) and (dest / n).is_dir()))
    if "dataset.json" in names and any(re.fullmatch(r"\d{5}", n) for n in names):
        # a dataset as sg3lib writes one, with the other files a copy keeps beside its images (a licence)
        others = [n for n in others if (dest / n).is_dir()]
    if others:
        raise ValueError(f"destination {dest} is a folder that is not a dataset (it holds "
                         f"{', '.join(map(repr, others[:3]))}{', ...' if len(others) > 3 else ''}); overwrite "
                         "(--overwrite) would delete it all; empty it yourself or choose another name")


STALE_PARTIAL_S = 3600  # a write in progress adds an image far more often than this


def _remove_stale_partials(dest):
    """The temporaries killed writes of `dest` left beside it (a dataset's size each: a Colab disconnect
    or an out-of-memory kill during `sg3 curate` leaves one per try)."""
    remove_leftovers(dest.parent, f".{glob.escape(dest.name)}.tmp-*.partial", STALE_PARTIAL_S,
                     f"leftover(s) of interrupted writes of {dest.name}")


def _flush_to_disk(paths):
    """Flush the files a folder dataset was written as, before it replaces the old one: renamed into
    place unflushed, a crash could leave empty images where the old dataset was."""
    if hasattr(os, "sync"):  # one call (POSIX), where fsyncing each of 100k small files takes minutes
        os.sync()
        return
    for p in paths:
        with open(p, "rb+") as f:  # rb+: Windows cannot flush a file opened only for reading
            os.fsync(f.fileno())


class DatasetWriter:
    """Write the official format to a temporary name; `close()` renames it into place.

    Used as a context manager: an exception (or a killed process) leaves no file under
    the destination name; after an exception the temporary file is removed as well, and
    what a killed write left (an hour untouched) is removed by the next write of `dest`.
    """

    def __init__(self, dest, overwrite=False):
        check_dest_name(dest)
        self.dest = Path(dest)
        self.kind = "zip" if self.dest.suffix.lower() == ".zip" else "dir"
        if self.dest.exists() and not overwrite:
            raise FileExistsError(f"destination already exists: {self.dest} (pass overwrite=True / --overwrite)")
        if self.kind == "zip" and self.dest.is_dir():  # found at the end by os.replace, after all the work
            raise FileExistsError(_zip_over_folder(self.dest))
        parent = self.dest.parent
        parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_partials(self.dest)
        if self.kind == "zip":
            fd, tmp = temp_file_beside(self.dest, suffix=".partial")
            os.close(fd)
            self.tmp = Path(tmp)
            self._zip = zipfile.ZipFile(self.tmp, "w", compression=zipfile.ZIP_STORED)
        else:
            self.tmp = temp_dir_beside(self.dest, suffix=".partial")
        self.count, self.labels = 0, []

    def add(self, png, label=None):
        """Append one encoded PNG; returns its name inside the dataset."""
        name = image_name(self.count)
        if self.kind == "zip":
            self._zip.writestr(_member(name), png)
        else:
            p = self.tmp / name
            p.parent.mkdir(exist_ok=True)
            p.write_bytes(png)
        self.labels.append(label)
        self.count += 1
        return name

    def add_file(self, name, src, size=None):
        """Copy a file that is not an image (a licence, notes) from the open binary file `src` into the
        dataset as `name` (a relative posix path; not dataset.json, which close() writes). `size`, its
        length where known, lets a zip hold one over 2 GiB."""
        parts = PurePosixPath(name).parts
        if not parts or name.startswith("/") or ".." in parts or ":" in parts[0] or name == "dataset.json":
            raise ValueError(f"{name!r} cannot be a file of a dataset (it must be a relative path inside it)")
        if self.kind == "zip":
            info = _member(name)
            info.file_size = size or 0
            with self._zip.open(info, "w") as out:
                shutil.copyfileobj(src, out)
        else:
            p = self.tmp / name
            p.parent.mkdir(parents=True, exist_ok=True)
            with open(p, "wb") as out:
                shutil.copyfileobj(src, out)

    def close(self, class_names=None):
        labels = None
        if any(x is not None for x in self.labels):
            labels = [[image_name(i), x] for i, x in enumerate(self.labels)]
        meta = json.dumps({"labels": labels, "class_names": class_names}).encode()
        if self.kind == "zip":
            self._zip.writestr(_member("dataset.json"), meta)
            self._zip.close()
            move_into_place(self.tmp, self.dest)
        else:
            (self.tmp / "dataset.json").write_bytes(meta)
            _flush_to_disk(p for p in self.tmp.rglob("*") if p.is_file())
            self._put_folder_in_place()
            fsync_dir(self.dest.parent)
        return self.dest

    def _put_folder_in_place(self):
        """os.replace cannot put a folder where another one is. Swapped in one step where the system
        can; else the old one is moved aside, and moved back if the new one cannot take its place."""
        if not (self.dest.exists() or self.dest.is_symlink()):
            os.replace(self.tmp, self.dest)
            return
        if files.exchange(self.tmp, self.dest):
            old = self.tmp  # the old dataset, now under the temporary name
        else:
            old = self.dest.with_name(f".{self.dest.name}.old-{os.getpid()}")
            os.replace(self.dest, old)
            try:
                os.replace(self.tmp, self.dest)
            except BaseException:
                os.replace(old, self.dest)  # never neither: the old dataset goes back
                raise
        self.tmp = old  # (an abort from here on removes the old one, not the new)
        shutil.rmtree(old) if old.is_dir() and not old.is_symlink() else old.unlink()

    def abort(self):
        if self.kind == "zip":
            try:
                self._zip.close()
            except Exception:
                pass
            self.tmp.unlink(missing_ok=True)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self.abort()
        return False
