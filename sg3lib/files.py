"""Temporary names beside a destination, for files that are written whole and renamed into place,
the folder fsync that makes such a rename survive a crash, `atomic_write`, which does both, and
`remove_stale` for what killed writes left behind, `check_folder_writable` for output folders,
`user_path` (a command line's `~`), `exchange`, which swaps two folders in one step where the system
can, `local_copy` (a file copied once to a fast disk) and `cache_home`, sg3lib's cache folder.

`tempfile.mkstemp` / `mkdtemp` create private files (0600 / 0700), and a rename keeps the mode:
a snapshot, dataset or download written that way could not be read by a colleague on a shared
machine or by a container running as another user. These create them as `open()` and `mkdir()`
do (0666 / 0777 less the umask). Standard library only: curation imports this without torch.
"""
import contextlib
import ctypes
import errno
import glob
import hashlib
import os
import secrets
import shutil
import time
import warnings
from pathlib import Path


def _names(path, tag, suffix):
    path = Path(path)
    while True:
        yield path.with_name(f".{path.name}.{tag}-{secrets.token_hex(4)}{suffix}")


def temp_file_beside(path, tag="tmp", suffix=""):
    """(fd, tmp path) of a new empty file `.<name>.<tag>-<random><suffix>` in `path`'s folder."""
    for tmp in _names(path, tag, suffix):
        try:
            return os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666), str(tmp)
        except FileExistsError:  # 2**32 names: only ever a coincidence
            continue


def temp_dir_beside(path, tag="tmp", suffix=""):
    """A new empty folder `.<name>.<tag>-<random><suffix>` in `path`'s folder (a Path)."""
    for tmp in _names(path, tag, suffix):
        try:
            os.mkdir(tmp, 0o777)
            return tmp
        except FileExistsError:
            continue


def fsync_dir(folder):
    """Flush `folder`'s entries to disk: after `os.replace(tmp, dest)`, a crash can otherwise leave
    the folder without `dest` (or with the old file) although its data was fsynced."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows; the rename itself is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems (and Windows) cannot fsync a folder
        pass
    finally:
        os.close(fd)


def move_into_place(tmp, path):
    """atomic_write's ending for a temporary another writer filled (zipfile, ffmpeg): flush it to
    disk, rename it to `path` and flush the folder, so a crash leaves the old file or the new one."""
    with open(tmp, "rb+") as f:  # rb+: Windows cannot flush a file opened only for reading
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(Path(path).parent)


@contextlib.contextmanager
def atomic_write(path, mode="wb", sync=True, **open_kwargs):
    """`with atomic_write(path) as f:` writes `path` whole or not at all: into a temporary beside
    it, then (with `sync`) fsynced, renamed into place and the folder fsynced. An exception in the
    block leaves the old file, if any, and no temporary."""
    fd, tmp = temp_file_beside(path)
    try:
        with os.fdopen(fd, mode, **open_kwargs) as f:
            yield f
            if sync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
        if sync:
            fsync_dir(Path(path).parent)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


_AT_FDCWD, _RENAME_EXCHANGE = -100, 2  # Linux's <fcntl.h> and <linux/fs.h>


def _renameat2():
    try:
        return getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    except (OSError, TypeError):  # no C library to load by that name (Windows)
        return None


def exchange(a, b):
    """Swap the paths `a` and `b` (folders or files) in one step: Linux's renameat2(RENAME_EXCHANGE).
    A folder cannot be replaced by os.replace, and two renames leave a moment where neither is in
    place. False, with nothing changed, where the system or the file system cannot swap."""
    fn = _renameat2()
    if fn is None:
        return False
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):  # old kernel, some file systems
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


_DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EFBIG}


def is_disk_full(e):
    """Whether the OSError `e` says the disk (or a quota, or the file size limit) is full."""
    return getattr(e, "errno", None) in _DISK_FULL


def remove_stale(folder, pattern, stale_s=None):
    """Remove what killed writes left: the files, or folders with their contents, matching `pattern`
    in `folder` and untouched for more than `stale_s` seconds (None: of any age). A younger one may
    be a write still in progress. Returns the removed Paths, in name order."""
    now, removed = time.time(), []
    for p in sorted(Path(folder).glob(pattern)):
        try:
            newest = max([p.stat().st_mtime] + ([c.stat().st_mtime for c in p.iterdir()] if p.is_dir() else []))
        except OSError:  # renamed into place or removed meanwhile, or not ours to read
            continue
        if stale_s is None or now - newest > stale_s:
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def remove_leftovers(folder, pattern, stale_s, what):
    """remove_stale, saying what it removed: a warning '<folder>: removed N <what> [names]'. Returns
    the removed names."""
    removed = [p.name for p in remove_stale(folder, pattern, stale_s)]
    if removed:
        warnings.warn(f"{folder}: removed {len(removed)} {what} {removed}")
    return removed


STALE_COPY_S = 600


def local_copy(src, folder, progress=True):
    """`folder`/<src's folder>-<hash of src's path>/<src's name>, a copy of the file `src` (e.g. a
    dataset zip on a mounted Google Drive, which reads slowly every epoch), made whole with a progress
    bar, or the copy made before while `src` keeps its size and modification time (the copy has both).
    The sub-folder is src's own: cats/dataset-64.zip and dogs/dataset-64.zip are two copies (training
    tells a run's own dataset from another by its path, and would continue a cats run on dogs)."""
    src = Path(src)
    where = hashlib.sha1(str(src.expanduser().resolve()).encode()).hexdigest()[:8]
    dest = Path(folder) / f"{src.parent.name or 'root'}-{where}" / src.name
    if not src.is_file():
        raise FileNotFoundError(f"{src}: no such file to copy")
    # A copy killed midway (Colab's "Restart runtime" keeps /content) left a hidden temporary of up to
    # the dataset's size; one untouched for STALE_COPY_S is no copy still running (they write constantly).
    remove_leftovers(dest.parent, f".{glob.escape(dest.name)}.tmp-*", STALE_COPY_S,
                     f"leftover(s) of interrupted copies of {src.name}")
    st = src.stat()
    have = dest.stat() if dest.is_file() else None
    if have and (have.st_size, have.st_mtime_ns) == (st.st_size, st.st_mtime_ns):
        return dest
    from tqdm.auto import tqdm
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(src, "rb") as f, atomic_write(dest) as out, \
            tqdm(total=st.st_size, unit="B", unit_scale=True, desc=f"copying {src.name}", disable=not progress) as bar:
        while chunk := f.read(1 << 22):
            out.write(chunk)
            bar.update(len(chunk))
    os.utime(dest, ns=(st.st_atime_ns, st.st_mtime_ns))  # what the next call compares
    return dest


def cache_home():
    """sg3lib's cache folder (downloads/, kernels/): $SG3LIB_CACHE, else $XDG_CACHE_HOME/sg3lib,
    else ~/.cache/sg3lib. One rule for both, so that moving the cache moves all of it."""
    base = os.environ.get("SG3LIB_CACHE")
    if base:  # '~/x' set from Python (os.environ) reaches here unexpanded, as TORCH_HOME may
        return Path(base).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "sg3lib"


def user_path(text):
    """A path given on the command line, with a leading ~ read as the home folder: the shell leaves
    `--out=~/x` and a quoted '~/x' as they are, and a folder named '~' would be made here."""
    return os.path.expanduser(text)


def check_folder_writable(folder, what):
    """ValueError naming `what` (the argument or flag) unless files can be written in `folder`, or
    it can be created: a file where a folder on the way should be, or no write permission, found
    before long work rather than as an OSError at its end. Creates nothing."""
    folder = Path(folder)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"{what}: cannot create the folder {folder} ({existing} is a file); choose another")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{what}: cannot write to {existing} (permission denied); choose a folder you can "
                         "write to")
    return folder
