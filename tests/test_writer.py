"""DatasetWriter and the helpers around it (sg3lib.data.writer): the format's fixed details, what an
existing destination may be, and the words for what a file is instead of a dataset."""
import json
import os
import zipfile

import pytest

from sg3lib.data import writer
from sg3lib.data.writer import DatasetWriter, check_replaceable


def test_members_have_a_fixed_date_and_owner_permissions(tmp_path):
    with DatasetWriter(tmp_path / "ds.zip") as w:
        w.add(b"png bytes")
        w.close()
    with zipfile.ZipFile(tmp_path / "ds.zip") as z:
        infos = z.infolist()
    assert [i.filename for i in infos] == ["00000/img00000000.png", "dataset.json"]
    for info in infos:  # zip's earliest date, rw for the owner only, stored uncompressed
        assert info.date_time == (1980, 1, 1, 0, 0, 0) and info.external_attr >> 16 == 0o600
        assert info.compress_type == zipfile.ZIP_STORED


def test_labels_are_written_when_any_image_has_one(tmp_path):
    with DatasetWriter(tmp_path / "ds.zip") as w:
        w.add(b"a", label=1)
        w.add(b"b")  # unlabelled: null, as the official format allows
        w.close()
    with zipfile.ZipFile(tmp_path / "ds.zip") as z:
        meta = json.loads(z.read("dataset.json"))
    assert meta["labels"] == [["00000/img00000000.png", 1], ["00000/img00000001.png", None]]


def test_add_file_tells_the_zip_how_large_the_file_is(tmp_path, monkeypatch):
    """A file over 2 GiB needs ZIP64 from its first byte: zipfile decides so from file_size."""
    sizes = []
    real_open = zipfile.ZipFile.open

    def recording(self, name, mode="r", *args, **kwargs):
        if mode == "w":
            sizes.append(name.file_size)
        return real_open(self, name, mode, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "open", recording)
    (tmp_path / "LICENSE").write_bytes(b"x" * 10)
    with DatasetWriter(tmp_path / "ds.zip") as w:
        with open(tmp_path / "LICENSE", "rb") as f:
            w.add_file("LICENSE", f, size=10)
        w.close()
    assert sizes[0] == 10  # (then dataset.json's, through writestr)


def test_an_archive_name_is_refused_with_its_suffix_and_the_name_to_use(tmp_path):
    with pytest.raises(ValueError, match=r"not as \.tar\.gz; use .*ds\.zip"):
        writer.check_dest_name(tmp_path / "ds.tar.gz")


def test_what_a_file_is_instead_of_a_dataset(tmp_path):
    cases = {b"": "is empty (0 bytes)", b"PK\x07\x08junk": "damaged or truncated zip",
             b"\x80\x04junk": "Python pickle", b"hello": "neither a folder nor a zip"}
    for i, (head, words) in enumerate(cases.items()):
        (tmp_path / f"f{i}").write_bytes(head)
        assert words in writer.why_not_a_dataset(tmp_path / f"f{i}"), head


def test_flagged_utf8_names_are_kept_as_zipfile_reads_them(tmp_path):
    """A name with the UTF-8 flag is already decoded: '├⌐' is cp437 for the UTF-8 bytes of 'é', and
    must not be taken for them."""
    with zipfile.ZipFile(tmp_path / "z.zip", "w") as z:
        z.writestr("├⌐.png", b"x")  # zipfile flags every non-ASCII name as UTF-8
    with zipfile.ZipFile(tmp_path / "z.zip") as z:
        assert z.infolist()[0].flag_bits & 0x800
        assert writer.zip_file_names(z) == (["├⌐.png"], {})


def test_a_torch_file_with_its_pickle_at_the_top_looks_like_a_network():
    assert writer.looks_like_a_network(["data.pkl", "data/0"])
    assert writer.looks_like_a_network(["archive/data.pkl"])
    assert not writer.looks_like_a_network(["00000/img00000000.png", "mydata.pkl.txt"])


def _dataset_folder(path, *extra):
    path.mkdir()
    (path / "00000").mkdir()
    (path / "00000" / "img00000000.png").write_bytes(b"x")
    (path / "dataset.json").write_text("{}")
    for name in extra:
        (path / name).write_bytes(b"y")
    return path


def test_what_overwrite_may_replace(tmp_path):
    src = tmp_path / "src.zip"
    src.write_bytes(b"")
    # what a file browser leaves in a dataset folder is no reason to refuse it, with or without its
    # dataset.json (which would excuse any file beside the image folders)
    a = _dataset_folder(tmp_path / "a", ".DS_Store", "Thumbs.db", "desktop.ini")
    check_replaceable(src, a)
    (a / "dataset.json").unlink()
    check_replaceable(src, a)
    # a file named like an image folder is not one
    b = tmp_path / "b"
    b.mkdir()
    (b / "00000").write_bytes(b"notes")
    with pytest.raises(ValueError, match="not a dataset .*'00000'"):
        check_replaceable(src, b)
    # files beside image folders are a dataset's (a licence) only where dataset.json says it is one
    c = tmp_path / "c"
    c.mkdir()
    (c / "00000").mkdir()
    (c / "LICENSE").write_text("mine")
    with pytest.raises(ValueError, match="'LICENSE'"):
        check_replaceable(src, c)
    check_replaceable(src, _dataset_folder(tmp_path / "d", "LICENSE"))
    # more than three others: three named, and a ', ...'
    e = tmp_path / "e"
    e.mkdir()
    for n in "pqrs":
        (e / n).write_text(n)
    with pytest.raises(ValueError, match=r"'p', 'q', 'r', \.\.\.\)"):
        check_replaceable(src, e)


def test_an_existing_destination_is_refused_before_any_work(tmp_path):
    folder = _dataset_folder(tmp_path / "ds")
    with pytest.raises(FileExistsError, match="already exists"):
        DatasetWriter(folder)
    (tmp_path / "ds.zip").mkdir()  # a folder named .zip: refused even with overwrite, before the images
    with pytest.raises(FileExistsError, match="is a folder, which a dataset .zip cannot replace"):
        DatasetWriter(tmp_path / "ds.zip", overwrite=True)
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_a_linked_destination_is_replaced_by_the_new_dataset_and_its_target_kept(tmp_path):
    """dest a symlink to an older dataset folder: the link is replaced (never followed and deleted);
    a dangling link is replaced too."""
    target = _dataset_folder(tmp_path / "old")
    link = tmp_path / "ds"
    os.symlink(target, link)
    with DatasetWriter(link, overwrite=True) as w:
        w.add(b"new")
        w.close()
    assert not link.is_symlink() and (link / "00000" / "img00000000.png").read_bytes() == b"new"
    assert (target / "00000" / "img00000000.png").read_bytes() == b"x"
    dangling = tmp_path / "gone"
    os.symlink(tmp_path / "nowhere", dangling)
    with DatasetWriter(dangling, overwrite=True) as w:
        w.add(b"new")
        w.close()
    assert not dangling.is_symlink() and (dangling / "dataset.json").is_file()
