"""sg3lib's own snapshots: weights_only round trip, atomic save, find_latest, prune, clear errors."""
import copy
import json
import os
import random
import time
import warnings
import zipfile

import numpy as np
import pytest
import torch

import sg3lib
from conftest import damage_compressed_bytes
from sg3lib import checkpoint as ck
from sg3lib.loader import LoadError
from sg3lib.networks import build_network


def net(fixtures_dir, name):
    meta = json.loads((fixtures_dir / f"{name}.json").read_text())
    npz = np.load(fixtures_dir / f"{name}.npz")
    m = build_network(meta["official_class"], meta["init_kwargs"])
    m.load_state_dict({k[len("state/"):]: torch.from_numpy(npz[k]) for k in npz.files if k.startswith("state/")})
    return m.eval(), npz


def small_snapshot(fixtures_dir, nimg=4000):
    D, _ = net(fixtures_dir, "d_64")
    return ck.snapshot_from_networks({"D": D}, meta={"arch": "stylegan2", "kimg": nimg / 1000},
                                     training_state={"cur_nimg": nimg})


def test_round_trip_weights_only_identical_outputs(tmp_path, fixtures_dir):
    G, gnpz = net(fixtures_dir, "sg2_64")
    D, dnpz = net(fixtures_dir, "d_64")
    opt = torch.optim.Adam(D.parameters(), lr=1e-3, betas=(0.0, 0.99))
    x = torch.from_numpy(dnpz["in_img"][:4])  # 4 images: one minibatch-stddev group, less CPU time
    D(x, None).sum().backward()
    opt.step()
    random.seed(7)
    state = {"cur_nimg": 12000, "cur_tick": 3, "augment_p": 0.125, "D_opt": opt.state_dict(),
             "torch_rng": torch.get_rng_state(), "python_rng": list(random.getstate()[1])}
    snap = ck.snapshot_from_networks({"G": G, "D": D, "G_ema": copy.deepcopy(G)},
                                     meta={"arch": "stylegan2", "kimg": 12.0, "config": {"batch": 4}}, training_state=state)
    path = ck.save_snapshot(tmp_path / ck.snapshot_name(12000), snap)
    assert path.name == "snapshot-000012000.pt"
    raw = torch.load(path, weights_only=True)  # plain data only: no code can run
    assert raw["format"] == "sg3lib-snapshot" and raw["version"] == 1 and raw["meta"]["config"] == {"batch": 4}
    assert raw["training_state"]["cur_nimg"] == 12000
    assert torch.equal(raw["training_state"]["torch_rng"], torch.get_rng_state())
    opt2 = torch.optim.Adam(D.parameters(), lr=1e-3)
    opt2.load_state_dict(raw["training_state"]["D_opt"])  # the optimizer resumes exactly
    for a, b in zip(opt.state.values(), opt2.state.values()):
        assert torch.equal(a["exp_avg_sq"], b["exp_avg_sq"])
    nets = sg3lib.load(path)
    assert nets["meta"]["kimg"] == 12.0 and nets["meta"]["arch"] == "stylegan2"
    assert nets["meta"]["format"] == "sg3lib-snapshot" and nets["meta"]["has_training_state"]
    assert nets["meta"]["config"] == {"batch": 4} and nets["meta"]["init_kwargs"]["z_dim"] == 64
    z = torch.from_numpy(gnpz["in_z"][:1])
    with torch.no_grad():
        assert torch.equal(nets["G_ema"](z, None, noise_mode="const"), G(z, None, noise_mode="const"))
        assert torch.equal(nets["D"](x, None), D(x, None))
    assert not any(p.requires_grad for p in nets["G_ema"].parameters())


def test_save_is_atomic(tmp_path, fixtures_dir, monkeypatch):
    path = tmp_path / ck.snapshot_name(4000)
    ck.save_snapshot(path, small_snapshot(fixtures_dir, 4000))
    before = path.read_bytes()

    def dies_midway(obj, f, *a, **k):
        f.write(b"PK\x03\x04 half a snapshot")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        ck.save_snapshot(path, small_snapshot(fixtures_dir, 4000))
    assert path.read_bytes() == before  # the complete file is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temporary left behind


def test_save_refuses_what_weights_only_cannot_load(tmp_path, fixtures_dir):
    snap = small_snapshot(fixtures_dir)
    snap["training_state"]["numpy_rng"] = np.random.RandomState(0).get_state()
    with pytest.raises(ValueError, match="numpy_rng"):
        ck.save_snapshot(tmp_path / "s.pt", snap)
    snap = small_snapshot(fixtures_dir)
    snap["meta"]["when"] = object()
    with pytest.raises(ValueError, match="JSON"):
        ck.save_snapshot(tmp_path / "s.pt", snap)
    assert list(tmp_path.iterdir()) == []


def test_find_latest_skips_and_cleans_partial_files(tmp_path, fixtures_dir):
    snap = small_snapshot(fixtures_dir)
    for nimg in (4000, 12000, 8000):
        ck.save_snapshot(tmp_path / ck.snapshot_name(nimg), snap)
    full = (tmp_path / ck.snapshot_name(12000)).read_bytes()
    cut = tmp_path / ck.snapshot_name(16000)  # e.g. a copy that stopped early
    cut.write_bytes(full[: len(full) // 2])
    stale = tmp_path / f".{ck.snapshot_name(20000)}.tmp-abc123"  # a save killed midway
    stale.write_bytes(full[:1000])
    old = time.time() - 3600
    os.utime(stale, (old, old))
    fresh = tmp_path / f".{ck.snapshot_name(24000)}.tmp-def456"  # a save possibly still running
    fresh.write_bytes(full[:1000])
    with pytest.warns(UserWarning, match=r"removed 1 leftover temporary.*skipped 1 incomplete"):
        latest = ck.find_latest(tmp_path)
    assert latest == tmp_path / ck.snapshot_name(12000)
    assert not stale.exists() and fresh.exists() and cut.exists()
    assert ck.load_snapshot(latest)["training_state"]["cur_nimg"] == 4000
    with pytest.raises(LoadError, match="truncated") as e:
        ck.load_snapshot(cut)
    assert str(cut) in str(e.value)
    assert ck.find_latest(tmp_path / "nothing-here") is None


def test_find_latest_while_another_process_saves(tmp_path, fixtures_dir, monkeypatch):
    ck.save_snapshot(tmp_path / ck.snapshot_name(4000), small_snapshot(fixtures_dir))
    # The listing shows a temporary file that the other process's save renames before it is looked at.
    gone = tmp_path / f".{ck.snapshot_name(8000)}.tmp-abc123"
    glob = type(tmp_path).glob
    monkeypatch.setattr(type(tmp_path), "glob", lambda self, p: [gone] if ".tmp-" in p else glob(self, p))
    assert ck.find_latest(tmp_path) == tmp_path / ck.snapshot_name(4000)


def test_prune(tmp_path, fixtures_dir):
    snap = small_snapshot(fixtures_dir)
    for kimg in range(0, 1400, 200):  # 0, 200, ..., 1200 kimg
        ck.save_snapshot(tmp_path / ck.snapshot_name(kimg * 1000), snap)
    deleted = ck.prune(tmp_path, keep_last=2, keep_every_kimg=500)
    left = sorted(ck.snapshot_counter(p) // 1000 for p in tmp_path.glob(ck.PATTERN))
    # first of each 500-kimg interval (0, 600, 1000) plus the two newest (1000, 1200)
    assert left == [0, 600, 1000, 1200]
    assert len(deleted) == 3


def test_prune_always_keeps_the_newest(tmp_path, fixtures_dir):
    """Whatever keep_last says, the newest complete snapshot (maybe the only one) stays; leftovers
    of other kinds (a temporary, a cut-off newer file) neither count nor go."""
    snap = small_snapshot(fixtures_dir)
    for nimg in (8, 16, 24):
        ck.save_snapshot(tmp_path / ck.snapshot_name(nimg), snap)
    (tmp_path / ck.snapshot_name(32)).write_bytes(b"PK\x03\x04 cut off")
    (tmp_path / f".{ck.snapshot_name(40)}.tmp-abcd1234").write_bytes(b"PK\x03\x04 partial")
    with pytest.warns(UserWarning):
        ck.prune(tmp_path, keep_last=0)
        ck.prune(tmp_path, keep_last=-1, keep_every_kimg=0.0001)  # an interval under one image: no crash
        assert ck.find_latest(tmp_path, stale_s=0) == tmp_path / ck.snapshot_name(24)
    assert sorted(p.name for p in tmp_path.glob(ck.PATTERN)) == [ck.snapshot_name(24), ck.snapshot_name(32)]
    assert not list(tmp_path.glob(".*.tmp-*"))


def test_copies_named_like_snapshots_are_neither_used_nor_deleted(tmp_path, fixtures_dir):
    """Drive names a second upload 'snapshot-000000016 (1).pt': its last digits are no image count
    (it was taken for snapshot 1, the oldest, and pruned)."""
    snap = small_snapshot(fixtures_dir)
    for nimg in (8, 16):
        ck.save_snapshot(tmp_path / ck.snapshot_name(nimg), snap)
    copy = tmp_path / ck.snapshot_name(16).replace(".pt", " (1).pt")
    copy.write_bytes((tmp_path / ck.snapshot_name(16)).read_bytes())
    with pytest.warns(UserWarning, match=r"ignored 1 file.*\(1\)\.pt"):
        assert ck.prune(tmp_path, keep_last=1) == [tmp_path / ck.snapshot_name(8)]
    assert copy.exists()
    # copies named with more digits or words: a dated backup read as counter 20240101 was the newest
    # snapshot (resumed from, and the real ones pruned), '-1' the oldest (deleted)
    backups = [tmp_path / n for n in ("snapshot-000000016-20240101.pt", "snapshot-000000016-1.pt",
                                      "snapshot-keep-000000016.pt")]
    for b in backups:
        b.write_bytes((tmp_path / ck.snapshot_name(16)).read_bytes())
    ck.save_snapshot(tmp_path / ck.snapshot_name(24), snap)
    with pytest.warns(UserWarning, match=r"ignored 4 file"):
        assert ck.find_latest(tmp_path) == tmp_path / ck.snapshot_name(24)
    with pytest.warns(UserWarning, match=r"ignored 4 file"):
        assert ck.prune(tmp_path, keep_last=1) == [tmp_path / ck.snapshot_name(16)]
    assert all(b.exists() for b in backups)


def test_load_snapshot_errors(tmp_path, fixtures_dir):
    snap = small_snapshot(fixtures_dir)
    newer = dict(snap, version=99)
    torch.save(newer, tmp_path / "newer.pt")
    with pytest.raises(LoadError, match="newer"):
        ck.load_snapshot(tmp_path / "newer.pt")
    bad = dict(snap, networks={"G": {"official_class": "x"}})
    torch.save(bad, tmp_path / "bad.pt")
    with pytest.raises(LoadError, match="lacks official_class"):
        ck.load_snapshot(tmp_path / "bad.pt")
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(LoadError, match="empty"):
        ck.load_snapshot(tmp_path / "empty.pt")
    with pytest.raises(ValueError, match="has no .official_class"):
        ck.snapshot_from_networks({"G": torch.nn.Linear(2, 2)})


def _damage_zip_directory(data, how):
    """A snapshot's bytes with its first ZIP central directory entry damaged as a bad copy might."""
    data = bytearray(data)
    entry = data.index(b"PK\x01\x02")
    if how == "utf8-name":  # the UTF-8 flag set on a name that is not UTF-8
        data[entry + 9] |= 0x08
        data[entry + 46] = 0xFF
    else:  # "version": a version needed to extract that zipfile does not know
        data[entry + 6] = 0xFF
    return bytes(data)


@pytest.mark.parametrize("how", ["utf8-name", "version"])
def test_damaged_zip_directory_gives_load_error_and_is_skipped(tmp_path, fixtures_dir, how):
    snap = small_snapshot(fixtures_dir)
    good = ck.save_snapshot(tmp_path / ck.snapshot_name(4000), snap)
    bad = tmp_path / ck.snapshot_name(8000)
    bad.write_bytes(_damage_zip_directory(good.read_bytes(), how))
    with pytest.raises(LoadError, match="damaged") as e:
        ck.load_snapshot(bad)
    assert str(bad) in str(e.value)
    with pytest.warns(UserWarning, match="skipped 1 incomplete"):  # resume goes on from the good one
        assert ck.find_latest(tmp_path) == good


def test_state_dict_entries_must_be_tensors(tmp_path, fixtures_dir):
    snap = small_snapshot(fixtures_dir)
    name = next(iter(snap["networks"]["D"]["state_dict"]))
    snap["networks"]["D"]["state_dict"][name] = 3  # torch.save writes it; weights_only reads it
    torch.save(snap, tmp_path / "odd.pt")
    with pytest.raises(LoadError, match="not named tensors") as e:
        sg3lib.load(tmp_path / "odd.pt")
    assert str(tmp_path / "odd.pt") in str(e.value) and name in str(e.value)


def test_memory_error_is_not_reported_as_a_corrupt_file(tmp_path, fixtures_dir, monkeypatch):
    path = ck.save_snapshot(tmp_path / ck.snapshot_name(4000), small_snapshot(fixtures_dir))

    def short_of_memory(*args, **kwargs):
        raise MemoryError
    monkeypatch.setattr(torch, "load", short_of_memory)
    with pytest.raises(MemoryError):
        ck.load_snapshot(path)


def test_torchs_allocation_failure_is_a_shortage_not_a_damaged_snapshot(tmp_path, fixtures_dir, monkeypatch):
    """torch reports a failed allocation as a RuntimeError, which was taken for a damaged file:
    --resume latest then went back to an older snapshot (and later wrote over the good one)."""
    older = ck.save_snapshot(tmp_path / ck.snapshot_name(4000), small_snapshot(fixtures_dir, 4000))
    newest = ck.save_snapshot(tmp_path / ck.snapshot_name(8000), small_snapshot(fixtures_dir, 8000))
    real = torch.load

    def load(f, *a, **k):
        if str(f) == str(newest):
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:118] data. DefaultCPUAllocator: can't allocate "
                               "memory: you tried to allocate 25165824 bytes. Error code 12 (Cannot allocate memory)")
        return real(f, *a, **k)
    monkeypatch.setattr(torch, "load", load)
    with pytest.raises(MemoryError, match=f"{newest.name}: not enough memory to load it .*DefaultCPUAllocator"):
        ck.find_resumable(tmp_path)
    monkeypatch.setattr(torch, "load", real)
    assert ck.find_resumable(tmp_path)[0] == newest and older.exists()


def test_a_full_disk_while_saving_is_an_os_error_naming_the_cause(tmp_path, fixtures_dir, monkeypatch):
    """torch's zip writer turned the OSError of a write on a full disk into "RuntimeError: [enforce
    fail at inline_container.cc] unexpected pos", which the training loop did not report as a full
    disk (free space and resume): the run ended with that traceback."""
    import contextlib
    import errno
    path = ck.save_snapshot(tmp_path / ck.snapshot_name(4000), small_snapshot(fixtures_dir, 4000))
    before = path.read_bytes()

    class FullDisk:
        def __init__(self, f):
            self.f, self.n = f, 0

        def write(self, data):
            self.n += len(data)
            if self.n > 4096:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.f.write(data)

        def flush(self):
            self.f.flush()
    real = ck.atomic_write

    @contextlib.contextmanager
    def full(p, *a, **k):
        with real(p, *a, **k) as f:
            yield FullDisk(f)
    monkeypatch.setattr(ck, "atomic_write", full)
    with pytest.raises(OSError) as e:
        ck.save_snapshot(path, small_snapshot(fixtures_dir, 4000))
    assert e.value.errno == errno.ENOSPC
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def _unreadable_but_complete(path):
    """A file whose ZIP directory is whole (so it passes as complete) but whose pickle is garbage:
    what a copy with damaged contents looks like."""
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", b"not a pickle at all")
        z.writestr("archive/version", b"3\n")


def test_find_resumable_falls_back_past_unreadable_snapshots_and_names_them(tmp_path, fixtures_dir):
    """Drive after a disconnect: the newest snapshots are cut off, empty or damaged. Resuming takes
    the newest one that reads and names each newer one it skipped with what is wrong."""
    snap = small_snapshot(fixtures_dir)
    for nimg in (8, 16):
        ck.save_snapshot(tmp_path / ck.snapshot_name(nimg), snap)
    full = (tmp_path / ck.snapshot_name(16)).read_bytes()
    (tmp_path / ck.snapshot_name(24)).write_bytes(full[: len(full) // 2])
    (tmp_path / ck.snapshot_name(32)).write_bytes(b"")
    _unreadable_but_complete(tmp_path / ck.snapshot_name(40))
    (tmp_path / ck.snapshot_name(4)).write_bytes(b"")  # older than the one resumed from: not skipped by it
    with pytest.warns(UserWarning, match="skipped 3 incomplete"):
        path, loaded, skipped = ck.find_resumable(tmp_path)
    assert path == tmp_path / ck.snapshot_name(16) and loaded["format"] == ck.FORMAT
    assert [p.name for p, _ in skipped] == [ck.snapshot_name(n) for n in (40, 32, 24)]
    (tmp_path / ck.snapshot_name(4)).unlink()
    reasons = dict((p.name, why) for p, why in skipped)
    assert "empty" in reasons[ck.snapshot_name(32)]
    assert "truncated" in reasons[ck.snapshot_name(24)]
    assert "corrupt" in reasons[ck.snapshot_name(40)]
    assert sorted(p.name for p in tmp_path.iterdir()) == [ck.snapshot_name(n) for n in (8, 16, 24, 32, 40)]


def test_find_resumable_refuses_when_no_snapshot_reads(tmp_path, fixtures_dir):
    """Only broken snapshots (or only a Drive copy): not 'no snapshot' (a new run would overwrite the
    run's stats and files) but an error naming each file, what is wrong and what to do."""
    assert ck.find_resumable(tmp_path) == (None, None, [])
    (tmp_path / ck.snapshot_name(8)).write_bytes(b"")
    (tmp_path / ck.snapshot_name(16)).write_bytes(b"PK\x03\x04 cut off")
    with pytest.warns(UserWarning):
        with pytest.raises(LoadError) as e:
            ck.find_resumable(tmp_path)
    msg = str(e.value)
    assert str(tmp_path) in msg and ck.snapshot_name(8) in msg and ck.snapshot_name(16) in msg
    assert "empty" in msg and "truncated" in msg and "copy" in msg and "another --outdir" in msg
    copy_only = tmp_path / "copy"
    copy_only.mkdir()
    ck.save_snapshot(copy_only / ck.snapshot_name(8), small_snapshot(fixtures_dir))
    (copy_only / ck.snapshot_name(8)).rename(copy_only / ck.snapshot_name(8).replace(".pt", " (1).pt"))
    with pytest.warns(UserWarning):
        with pytest.raises(LoadError, match=r"\(1\)\.pt.*rename"):
            ck.find_resumable(copy_only)
    with pytest.warns(UserWarning):
        with pytest.raises(FileNotFoundError, match=r"snapshot-000000016.pt: truncated") as e:
            ck.newest_if_folder(tmp_path)  # sg3 info / generate / load of the run folder say it too
    assert not isinstance(e.value, ck.NoSnapshotInFolder)  # snapshots are there; they do not read
    (tmp_path / "empty").mkdir()
    with pytest.raises(ck.NoSnapshotInFolder, match="no snapshot-"):
        ck.newest_if_folder(tmp_path / "empty")


def test_prune_keeps_the_snapshot_just_written(tmp_path, fixtures_dir):
    """A damaged newer snapshot that resuming skipped is still 'newest' by its name: pruning to one
    snapshot must not delete the one the run has just written (the only one that reads)."""
    snap = small_snapshot(fixtures_dir)
    for nimg in (8, 16):
        ck.save_snapshot(tmp_path / ck.snapshot_name(nimg), snap)
    _unreadable_but_complete(tmp_path / ck.snapshot_name(40))
    ck.prune(tmp_path, keep_last=1, keep=[tmp_path / ck.snapshot_name(16)])
    assert sorted(p.name for p in tmp_path.glob(ck.PATTERN)) == [ck.snapshot_name(16), ck.snapshot_name(40)]


def test_damaged_contents_are_reported_as_corrupt_not_as_pickled_objects(tmp_path, fixtures_dir):
    """A snapshot whose ZIP directory is whole but whose pickle bytes were damaged (a bad copy) was
    reported as 'a PyTorch file holding pickled Python objects ... (it could run code)'."""
    good = ck.save_snapshot(tmp_path / ck.snapshot_name(8), small_snapshot(fixtures_dir))
    garbage = tmp_path / "garbage.pt"
    _unreadable_but_complete(garbage)  # a byte that is no pickle opcode
    flipped = bytearray(good.read_bytes())
    start = flipped.index(b"data.pkl") + len(b"data.pkl")
    start = flipped.index(b"\x80", start)  # the pickle's PROTO opcode
    for i in range(start + 2, start + 40):
        flipped[i] ^= 0x5A
    (tmp_path / "flipped.pt").write_bytes(bytes(flipped))
    for path in (garbage, tmp_path / "flipped.pt"):
        with pytest.raises(LoadError) as e:
            ck.load_snapshot(path)
        assert "corrupt" in str(e.value) and "pickled Python objects" not in str(e.value), str(e.value)
        assert str(path) in str(e.value)
    import argparse
    torch.save({"opts": argparse.Namespace(a=1)}, tmp_path / "objects.pt")  # a real pickled class
    with pytest.raises(LoadError, match="pickled Python objects"):
        ck.load_snapshot(tmp_path / "objects.pt")


def test_weights_damaged_inside_a_whole_zip_are_found_by_their_crc(tmp_path, fixtures_dir):
    """torch.load reads no checksum: a copy whose tensor bytes were zeroed (a tool that preallocates
    the file and writes pieces out of order, then stopped) resumed with other weights, without a word."""
    older = ck.save_snapshot(tmp_path / ck.snapshot_name(4000), small_snapshot(fixtures_dir))
    newer = ck.save_snapshot(tmp_path / ck.snapshot_name(8000), small_snapshot(fixtures_dir, 8000))
    with zipfile.ZipFile(newer) as z:
        info = max(z.infolist(), key=lambda i: i.file_size)  # the largest tensor, stored uncompressed
    b = bytearray(newer.read_bytes())
    start = b.index(b"PK\x03\x04", info.header_offset)  # its local header: the data follows name and extra
    name_len, extra_len = int.from_bytes(b[start + 26:start + 28], "little"), int.from_bytes(b[start + 28:start + 30], "little")
    data = start + 30 + name_len + extra_len
    b[data + 64:data + 192] = bytes(128)
    newer.write_bytes(bytes(b))
    with pytest.raises(LoadError, match=rf"{newer.name}: damaged contents, corrupt \(.*{info.filename.split('/')[-1]} "
                                        r"fails its CRC check\)"):
        ck.load_snapshot(newer)
    path, snap, skipped = ck.find_resumable(tmp_path)
    assert path == older and [p for p, _ in skipped] == [newer]


def _refuse_opening(monkeypatch, path):
    """Opening `path` fails as chmod 0 makes it fail, also for root, who may read anyway."""
    real_open = open

    def refuses(file, *args, **kwargs):
        if str(file) == str(path):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr("builtins.open", refuses)
    monkeypatch.setattr("io.open", refuses)


def test_a_snapshot_that_cannot_be_opened_is_not_called_truncated(tmp_path, fixtures_dir, monkeypatch):
    """A complete snapshot without read permission (another user's, a Drive file not yet fetched) was
    skipped as 'truncated or damaged', and resuming told the user to copy it again or move it away."""
    path = ck.save_snapshot(tmp_path / ck.snapshot_name(8), small_snapshot(fixtures_dir))
    path.chmod(0)
    _refuse_opening(monkeypatch, path)
    try:
        with pytest.warns(UserWarning, match="Permission denied"):
            with pytest.raises(LoadError) as e:
                ck.find_resumable(tmp_path)
    finally:
        path.chmod(0o644)
    assert "Permission denied" in str(e.value) and "truncated" not in str(e.value)


def test_a_network_under_torch_compile_is_saved_and_exported_as_the_network(tmp_path):
    """torch.compile(G) passed as G (it forwards .official_class) saved `_orig_mod.*` weights, and a
    compiled G.synthesis `synthesis._orig_mod.*`: the save said nothing and the file did not load
    (the .pkl named the class OptimizedModule)."""
    from sg3lib.compat.official_pkl import write_official_pkl
    from test_explore_helpers import make_G
    G = make_G()
    want = {k: v.clone() for k, v in G.state_dict().items()}
    whole = torch.compile(G)  # (nothing is compiled until it runs)
    part = make_G()
    part.synthesis = torch.compile(part.synthesis)
    for name, net in (("whole", whole), ("part", part)):
        ck.save_snapshot(tmp_path / f"{name}.pt", ck.snapshot_from_networks({"G_ema": net}))
        with pytest.warns(UserWarning, match="without D, G"):
            write_official_pkl(tmp_path / f"{name}.pkl", {"G_ema": net})
        for suffix in (".pt", ".pkl"):
            loaded = sg3lib.load(tmp_path / f"{name}{suffix}")["G_ema"]
            assert type(loaded).__name__ == "Generator"
            got = loaded.state_dict()
            assert sorted(got) == sorted(want) and all(torch.equal(got[k], want[k]) for k in want), (name, suffix)


def test_an_interrupt_while_a_snapshot_is_written_stays_an_interrupt(tmp_path, fixtures_dir, monkeypatch):
    """Ctrl-C (a notebook's Stop) inside torch.save's write came out as torch's RuntimeError 'unexpected
    pos N vs 0', so train() could not say where it stopped and sg3 train printed a traceback."""
    class Interrupted:  # the open file, whose third write is where Ctrl-C lands
        def __init__(self, f):
            self.f, self.writes = f, 0

        def write(self, data):
            self.writes += 1
            if self.writes == 3:
                raise KeyboardInterrupt
            return self.f.write(data)

        def __getattr__(self, name):
            return getattr(self.f, name)
    real_init = ck._WriteErrors.__init__
    monkeypatch.setattr(ck._WriteErrors, "__init__", lambda self, f: real_init(self, Interrupted(f)))
    with pytest.raises(KeyboardInterrupt):
        ck.save_snapshot(tmp_path / ck.snapshot_name(8), small_snapshot(fixtures_dir))
    assert os.listdir(tmp_path) == []  # no partial file under either name


def test_the_newest_snapshot_is_the_highest_counter_past_nine_digits_too(tmp_path, fixtures_dir):
    """Past 999,999 kimg a counter takes ten digits, and sorts before nine-digit names as text."""
    ck.save_snapshot(tmp_path / ck.snapshot_name(999_000_000), small_snapshot(fixtures_dir))
    ck.save_snapshot(tmp_path / ck.snapshot_name(1_000_000_000), small_snapshot(fixtures_dir))
    newest = tmp_path / "snapshot-1000000000.pt"
    assert ck.find_latest(tmp_path) == newest and ck.newest_if_folder(tmp_path) == newest
    assert ck.find_resumable(tmp_path)[0] == newest
    assert ck.prune(tmp_path, keep_last=1) == [tmp_path / ck.snapshot_name(999_000_000)]


def test_a_snapshot_holds_copies_of_the_weights_not_the_training_networks_own(fixtures_dir):
    """Training goes on (in place) while a snapshot is saved: the snapshot must not change with it."""
    D, _ = net(fixtures_dir, "d_64")
    snap = ck.snapshot_from_networks({"D": D})
    before = {k: v.clone() for k, v in snap["networks"]["D"]["state_dict"].items()}
    with torch.no_grad():
        for p in D.parameters():
            p.add_(1)
    assert all(torch.equal(v, before[k]) for k, v in snap["networks"]["D"]["state_dict"].items())


def test_a_snapshot_without_networks_is_refused_on_save_and_load(tmp_path, fixtures_dir):
    snap = dict(small_snapshot(fixtures_dir), networks={})
    with pytest.raises(LoadError, match="holds no networks"):
        ck.save_snapshot(tmp_path / "a.pt", snap)
    torch.save(snap, tmp_path / "b.pt")
    with pytest.raises(LoadError, match="b.pt: the snapshot holds no networks"):
        ck.load_snapshot(tmp_path / "b.pt")


def test_training_state_may_hold_sets_tuples_and_int_keys(tmp_path, fixtures_dir):
    state = {"seen": {1, 2, 3}, "shape": (4, 5), 7: [torch.zeros(2), "x", None]}
    snap = ck.snapshot_from_networks({"D": net(fixtures_dir, "d_64")[0]}, training_state=state)
    loaded = ck.load_snapshot(ck.save_snapshot(tmp_path / ck.snapshot_name(8), snap))["training_state"]
    assert loaded["seen"] == {1, 2, 3} and loaded["shape"] == (4, 5) and loaded[7][1:] == ["x", None]


def test_load_snapshot_refuses_each_malformed_part_by_name(tmp_path, fixtures_dir):
    """The structure the module docstring gives, part by part: each refusal names what is wrong."""
    snap = small_snapshot(fixtures_dir)
    int_key = copy.deepcopy(snap)
    int_key["networks"]["D"]["state_dict"][0] = torch.zeros(1)  # torch.save writes it; weights_only reads it
    cases = [(dict(snap, version=ck.VERSION + 1), rf"snapshot version {ck.VERSION + 1} is newer"),
             (dict(snap, meta=[1]), r"'meta' must be a dict"),
             (dict(snap, training_state=[1]), r"'training_state' must be a dict"),
             (int_key, r"network 'D' has state_dict entries that are not named tensors \(\[0\]\)")]
    for i, (bad, message) in enumerate(cases):
        torch.save(bad, tmp_path / f"bad{i}.pt")
        with pytest.raises(LoadError, match=message):
            ck.load_snapshot(tmp_path / f"bad{i}.pt")
    torch.save(dict(snap, version=ck.VERSION), tmp_path / "current.pt")
    assert ck.load_snapshot(tmp_path / "current.pt")["version"] == ck.VERSION
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(LoadError, match=r"the file is empty \(0 bytes\)"):
        ck.load_snapshot(tmp_path / "empty.pt")
    # cut off before its ZIP directory: zipfile does not call it a zip, its first bytes still do
    full = ck.save_snapshot(tmp_path / "full.pt", snap).read_bytes()
    (tmp_path / "cut.pt").write_bytes(full[: len(full) // 2])
    with pytest.raises(LoadError, match="its ZIP directory is missing"):
        ck.load_snapshot(tmp_path / "cut.pt")


def test_a_deflated_member_damaged_inside_is_reported_as_damaged(tmp_path, fixtures_dir):
    """A .pt re-zipped with Deflate (torch writes Store) whose compressed bytes are damaged: zipfile
    raises zlib.error, which came out of load_snapshot as itself, naming no file."""
    src = ck.save_snapshot(tmp_path / "s.pt", small_snapshot(fixtures_dir))
    deflated = tmp_path / "deflated.pt"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(deflated, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, zin.read(info) if not info.filename.endswith("data.pkl")
                          else zin.read(info) * 50)  # compressible: a long deflate stream to damage
    with zipfile.ZipFile(deflated) as z:
        damage_compressed_bytes(deflated, next(n for n in z.namelist() if n.endswith("data.pkl")))
    with pytest.raises(LoadError, match="damaged contents") as e:
        ck.load_snapshot(deflated)
    assert str(deflated) in str(e.value)


def test_snapshot_from_networks_skips_none_and_unwraps_ddp(tmp_path):
    """A run without D (None) saves the others; DistributedDataParallel, which forwards no attributes,
    is saved as the network inside it."""
    import torch.distributed as dist
    from test_explore_helpers import make_G
    G = make_G().requires_grad_(True)  # (DDP wraps only a network that trains)
    snap = ck.snapshot_from_networks({"G": G, "D": None})
    assert list(snap["networks"]) == ["G"]
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        wrapped = torch.nn.parallel.DistributedDataParallel(G)
        snap = ck.snapshot_from_networks({"G_ema": wrapped})
    finally:
        dist.destroy_process_group()
    net = snap["networks"]["G_ema"]
    assert net["official_class"] == G.official_class and net["init_kwargs"] == G.init_kwargs
    assert sorted(net["state_dict"]) == sorted(G.state_dict())


def test_reading_a_run_folder_deletes_nothing_and_names_what_it_cannot_use(tmp_path, fixtures_dir):
    """newest_if_folder (sg3 generate / rank / info on a run folder) and prune leave a save's temporary
    file alone, however old: another process may be writing it. A folder holding only a copy says so,
    without the resume advice about --outdir."""
    snap = small_snapshot(fixtures_dir)
    tmp = tmp_path / f".{ck.snapshot_name(8000)}.tmp-abc123"
    tmp.write_bytes(b"partial")
    old = time.time() - 3600
    os.utime(tmp, (old, old))
    copy_ = tmp_path / ck.snapshot_name(4000).replace(".pt", " (1).pt")
    copy_.write_bytes(ck.save_snapshot(tmp_path / "elsewhere.pt", snap).read_bytes())
    with pytest.warns(UserWarning, match="ignored 1 file"):
        with pytest.raises(FileNotFoundError, match=r"snapshot-000004000 \(1\)\.pt: a copy") as e:
            ck.newest_if_folder(tmp_path)
    assert "--outdir" not in str(e.value)
    for nimg in (4000, 12000):
        ck.save_snapshot(tmp_path / ck.snapshot_name(nimg), snap)
    with pytest.warns(UserWarning, match="ignored 1 file"):
        assert ck.newest_if_folder(tmp_path) == tmp_path / ck.snapshot_name(12000)
    with pytest.warns(UserWarning, match="ignored 1 file"):
        assert ck.prune(tmp_path, keep_last=1) == [tmp_path / ck.snapshot_name(4000)]
    assert tmp.exists()
    # a folder named like a snapshot is no snapshot, and nothing to warn about
    (tmp_path / ck.snapshot_name(16000)).mkdir()
    copy_.unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ck.find_latest(tmp_path, clean=False) == tmp_path / ck.snapshot_name(12000)


def test_an_unreadable_snapshot_says_to_check_its_permissions(tmp_path, fixtures_dir, monkeypatch):
    path = ck.save_snapshot(tmp_path / ck.snapshot_name(8), small_snapshot(fixtures_dir))
    _refuse_opening(monkeypatch, path)
    with pytest.warns(UserWarning, match=r"cannot be read \(Permission denied\); check its permissions"):
        assert ck.find_latest(tmp_path) is None


def test_a_garbled_global_is_reported_in_printable_words(tmp_path):
    """Damaged pickle bytes that read as a GLOBAL of garbage: torch's message carries the raw bytes
    (control characters, a terminal's escape codes); the error shows them as '?', is no 'pickled
    objects' refusal, and stays one short line."""
    path = tmp_path / "garbled.pt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", b"\x80\x02c\x07\x1b[2J" + b"x" * 1000 + b"\nname\n.")
        z.writestr("archive/version", b"3\n")
    with pytest.raises(LoadError, match="truncated or corrupt") as e:
        ck.load_snapshot(path)
    words = str(e.value)
    assert "pickled Python objects" not in words and all(ch.isprintable() for ch in words), words
    assert "?" in words and len(words) < len(str(path)) + 500
    # the older torch wording names the class at the end of its line, with more lines after it
    assert ck._names_a_class("Weights only load failed.\nUnsupported class argparse.Namespace\n\nCheck the docs")
    assert not ck._names_a_class("Weights only load failed.\nUnsupported class \x07garbage\x01\nmore")


def test_snapshots_of_one_counter_and_cut_files_come_in_a_fixed_order(tmp_path, fixtures_dir, monkeypatch):
    """The folder's listing order is the file system's: snapshots of the same counter are ordered by
    name, and the cut-off files in the warning newest first, whatever order the listing gives."""
    snap = small_snapshot(fixtures_dir)
    for name in ("snapshot-16.pt", "snapshot-000000016.pt"):
        ck.save_snapshot(tmp_path / name, snap)
    for nimg in (8000, 16000):
        (tmp_path / ck.snapshot_name(nimg)).write_bytes(b"PK\x03\x04 cut off")
    glob = type(tmp_path).glob
    for order in (sorted, lambda paths: sorted(paths, reverse=True)):
        monkeypatch.setattr(type(tmp_path), "glob", lambda self, p, order=order: order(glob(self, p)))
        assert [p.name for p in ck.snapshot_files(tmp_path)][:2] == ["snapshot-000000016.pt", "snapshot-16.pt"]
        with pytest.warns(UserWarning, match=r"\[snapshot-000016000\.pt: .*, snapshot-000008000\.pt: "):
            assert ck.find_latest(tmp_path).name == "snapshot-16.pt"
