"""sg3lib.files: temporary names beside a destination, atomic writes, leftovers of killed writes,
disk-full errors, the cache folder and output-folder checks."""
import errno
import os
import stat
import time
import warnings

import pytest

from sg3lib import files
from sg3lib.files import remove_stale


def _age(path, seconds):
    t = time.time() - seconds
    os.utime(path, (t, t))


def test_a_leftover_goes_once_untouched_and_a_folder_counts_its_newest_file(tmp_path):
    old_file, new_file = tmp_path / ".a.tmp-1", tmp_path / ".a.tmp-2"
    old_file.write_bytes(b"x")
    new_file.write_bytes(b"x")
    _age(old_file, 3600)
    busy, dead = tmp_path / ".a.tmp-3", tmp_path / ".a.tmp-4"  # folders (a folder dataset being written)
    for folder in (busy, dead):
        folder.mkdir()
        (folder / "img.png").write_bytes(b"x")
    _age(dead / "img.png", 3600)
    _age(dead, 3600)
    _age(busy, 3600)  # an old folder, but a file in it was written just now: a write still going on
    (tmp_path / "a").write_bytes(b"the real file")
    assert remove_stale(tmp_path, ".a.tmp-*", 60) == [old_file, dead]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".a.tmp-2", ".a.tmp-3", "a"]
    assert remove_stale(tmp_path, ".a.tmp-*") == [new_file, busy]  # None: of any age
    assert os.listdir(tmp_path) == ["a"]


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_temporaries_are_hidden_beside_their_destination_and_as_readable_as_open_makes_them(tmp_path, umask_022):
    """Not mkstemp's 0600 / mkdtemp's 0700: a snapshot renamed from it must be readable by others."""
    dest = tmp_path / "run" / "snapshot.pt"
    dest.parent.mkdir()
    fd, tmp = files.temp_file_beside(dest, tag="part", suffix=".zip")
    os.close(fd)
    folder = files.temp_dir_beside(dest)
    assert os.path.dirname(tmp) == str(dest.parent) and folder.parent == dest.parent
    name = os.path.basename(tmp)
    assert name.startswith(".snapshot.pt.part-") and name.endswith(".zip") and len(name) == len(".snapshot.pt.part-") + 8 + 4
    assert folder.name.startswith(".snapshot.pt.tmp-") and folder.is_dir() and not any(folder.iterdir())
    assert os.path.getsize(tmp) == 0 and _mode(tmp) == 0o644 and _mode(folder) == 0o755
    names = set()
    for _ in range(20):
        fd, t = files.temp_file_beside(dest)
        os.close(fd)
        names.add(t)
    assert len(names) == 20


def test_a_temporary_name_never_reuses_an_existing_file(tmp_path, monkeypatch):
    """O_EXCL: a name that is taken is skipped, the file there left as it was."""
    taken = tmp_path / ".a.tmp-00000000"
    taken.write_bytes(b"someone else's")
    tries = iter(["00000000", "00000000", "11111111"])
    monkeypatch.setattr(files.secrets, "token_hex", lambda n: next(tries))
    fd, tmp = files.temp_file_beside(tmp_path / "a")
    os.close(fd)
    assert tmp == str(tmp_path / ".a.tmp-11111111") and taken.read_bytes() == b"someone else's"
    tries = iter(["00000000", "22222222"])
    assert files.temp_dir_beside(tmp_path / "a") == tmp_path / ".a.tmp-22222222"


def test_atomic_write_replaces_the_file_whole_or_leaves_the_old_one(tmp_path, umask_022):
    dest = tmp_path / "stats.json"
    dest.write_text("old")
    with pytest.raises(RuntimeError, match="midway"):
        with files.atomic_write(dest, "w") as f:
            f.write("half of the new")
            raise RuntimeError("midway")
    assert dest.read_text() == "old" and os.listdir(tmp_path) == ["stats.json"]
    for sync in (True, False):
        with files.atomic_write(dest, "w", sync=sync, encoding="utf-8") as f:
            f.write(f"new ü {sync}")
            assert dest.read_text() == "old" or not sync  # nothing in place before the block ends
        assert dest.read_text(encoding="utf-8") == f"new ü {sync}" and os.listdir(tmp_path) == ["stats.json"]
        dest.write_text("old")
    with files.atomic_write(tmp_path / "fresh.bin") as f:
        f.write(b"\x00\x01")
    assert (tmp_path / "fresh.bin").read_bytes() == b"\x00\x01" and _mode(tmp_path / "fresh.bin") == 0o644


@pytest.fixture
def synced(monkeypatch):
    """The inode numbers os.fsync is called on, in order (the calls still go through)."""
    inodes, real_fsync = [], os.fsync
    monkeypatch.setattr(files.os, "fsync", lambda fd: (inodes.append(os.fstat(fd).st_ino), real_fsync(fd))[1])
    return inodes


def test_atomic_write_syncs_the_file_then_its_folder_only_when_asked(tmp_path, synced):
    with files.atomic_write(tmp_path / "a") as f:
        f.write(b"x")
    assert synced == [(tmp_path / "a").stat().st_ino, tmp_path.stat().st_ino]  # (a rename keeps the inode)
    synced.clear()
    with files.atomic_write(tmp_path / "b", sync=False) as f:
        f.write(b"x")
    assert synced == []


def test_move_into_place_syncs_and_renames_a_filled_temporary(tmp_path, synced):
    fd, tmp = files.temp_file_beside(tmp_path / "video.mp4")
    os.write(fd, b"frames")
    os.close(fd)
    (tmp_path / "video.mp4").write_bytes(b"old")
    files.move_into_place(tmp, tmp_path / "video.mp4")
    assert (tmp_path / "video.mp4").read_bytes() == b"frames" and os.listdir(tmp_path) == ["video.mp4"]
    assert synced == [(tmp_path / "video.mp4").stat().st_ino, tmp_path.stat().st_ino]  # the file, then its folder


def test_exchange_swaps_two_folders_or_says_it_cannot_with_nothing_changed(tmp_path, monkeypatch):
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        d.mkdir()
        (d / "who").write_text(d.name)
    swapped = files.exchange(a, b)
    assert (a / "who").read_text() == ("b" if swapped else "a") and (b / "who").read_text() == ("a" if swapped else "b")
    monkeypatch.setattr(files, "_renameat2", lambda: None)  # Windows, macOS: no renameat2
    assert files.exchange(a, b) is False and (a / "who").read_text() == ("b" if swapped else "a")


@pytest.mark.parametrize("code", [errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP])
def test_exchange_is_false_where_the_file_system_cannot_swap(tmp_path, monkeypatch, code):
    monkeypatch.setattr(files, "_renameat2", lambda: lambda *args: -1)
    monkeypatch.setattr(files.ctypes, "get_errno", lambda: code)
    assert files.exchange(tmp_path / "a", tmp_path / "b") is False


def test_exchange_raises_other_errors_naming_both_paths(tmp_path, monkeypatch):
    monkeypatch.setattr(files, "_renameat2", lambda: lambda *args: -1)
    monkeypatch.setattr(files.ctypes, "get_errno", lambda: errno.EACCES)
    with pytest.raises(PermissionError) as e:
        files.exchange(tmp_path / "a", tmp_path / "b")
    assert e.value.filename == str(tmp_path / "a") and e.value.filename2 == str(tmp_path / "b")


def test_disk_full_is_no_space_a_quota_or_the_file_size_limit():
    for code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        assert files.is_disk_full(OSError(code, os.strerror(code)))
    for e in (OSError(errno.EACCES, "denied"), OSError("no errno"), ValueError("x")):
        assert not files.is_disk_full(e)


def test_remove_leftovers_says_what_it_removed(tmp_path):
    for name in (".b.tmp-1", ".a.tmp-2", "keep"):
        (tmp_path / name).write_bytes(b"x")
    with pytest.warns(UserWarning, match=r"removed 1 leftover copies \['\.b\.tmp-1'\]"):
        assert files.remove_leftovers(tmp_path, ".b.tmp-*", None, "leftover copies") == [".b.tmp-1"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing removed: nothing said
        assert files.remove_leftovers(tmp_path, ".c.tmp-*", None, "leftover copies") == []
    assert sorted(os.listdir(tmp_path)) == [".a.tmp-2", "keep"]


def test_a_leftover_exactly_stale_s_old_is_not_yet_stale(tmp_path, monkeypatch):
    (tmp_path / ".a.tmp-1").write_bytes(b"x")
    t = (tmp_path / ".a.tmp-1").stat().st_mtime
    monkeypatch.setattr(files.time, "time", lambda: t + 60)
    assert remove_stale(tmp_path, ".a.tmp-*", 60) == []
    monkeypatch.setattr(files.time, "time", lambda: t + 60.5)
    assert remove_stale(tmp_path, ".a.tmp-*", 60) == [tmp_path / ".a.tmp-1"]


def test_the_cache_folder_is_sg3lib_cache_else_xdg_else_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SG3LIB_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert files.cache_home() == tmp_path / "home" / ".cache" / "sg3lib"
    monkeypatch.setenv("XDG_CACHE_HOME", "")  # set but empty: as if unset
    assert files.cache_home() == tmp_path / "home" / ".cache" / "sg3lib"
    monkeypatch.setenv("XDG_CACHE_HOME", "~/xdg")
    assert files.cache_home() == tmp_path / "home" / "xdg" / "sg3lib"
    monkeypatch.setenv("SG3LIB_CACHE", "~/mine")
    assert files.cache_home() == tmp_path / "home" / "mine"


def test_a_command_lines_tilde_is_the_home_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert files.user_path("~/runs/a") == str(tmp_path / "runs" / "a")
    assert files.user_path("runs/~a") == "runs/~a"


def test_an_output_folder_is_checked_before_long_work_and_nothing_is_created(tmp_path, monkeypatch):
    out = tmp_path / "new" / "deeper"
    assert files.check_folder_writable(out, "--out") == out and not (tmp_path / "new").exists()
    (tmp_path / "file.png").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"^--out: cannot create the folder .*file\.png/demo \(.*file\.png is a file\)"):
        files.check_folder_writable(tmp_path / "file.png" / "demo", "--out")
    asked = []
    monkeypatch.setattr(files.os, "access", lambda p, mode: asked.append((p, mode)) or False)  # (root may write anywhere)
    with pytest.raises(ValueError, match=rf"^--report-dir: cannot write to {tmp_path} \(permission denied\)"):
        files.check_folder_writable(tmp_path / "a" / "b", "--report-dir")
    assert asked == [(tmp_path, os.W_OK | os.X_OK)]


def test_leftovers_are_removed_in_name_order_and_one_gone_meanwhile_is_passed_over(tmp_path, monkeypatch):
    """glob gives names in the folder's own order; a leftover another process removes (or renames into
    place) between glob and stat is no error."""
    for name in (".a.tmp-1", ".a.tmp-2", ".a.tmp-3"):
        (tmp_path / name).write_bytes(b"x")
    real_glob = files.Path.glob
    monkeypatch.setattr(files.Path, "glob", lambda self, pattern: iter(
        [tmp_path / ".a.tmp-0"] + sorted(real_glob(self, pattern), reverse=True)))  # .a.tmp-0: gone already
    assert remove_stale(tmp_path, ".a.tmp-*") == [tmp_path / n for n in (".a.tmp-1", ".a.tmp-2", ".a.tmp-3")]


def test_of_any_age_includes_a_leftover_dated_in_the_future(tmp_path):
    """A network drive's clock ahead of this machine's: stale_s=None still means every leftover."""
    (tmp_path / ".a.tmp-1").write_bytes(b"x")
    _age(tmp_path / ".a.tmp-1", -3600)
    assert remove_stale(tmp_path, ".a.tmp-*") == [tmp_path / ".a.tmp-1"]
