"""remove_stale: what killed writes left goes, what a write in progress is filling stays."""
import os
import time

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
