"""A user's mistake on the command line (or in the documented API) gives one error line naming the
file or flag, never a traceback from deep inside: unreadable files, a file where a folder should be,
datasets that are not datasets, numbers out of range, devices torch cannot use.

Tiny networks and 8 px data: each test takes well under a second or two."""
import builtins
import io
import os
import pickle
import sys
import zipfile

import pytest
import torch

from sg3lib.checkpoint import save_snapshot, snapshot_from_networks
from sg3lib.cli import main as sg3
from sg3lib.train import config as C
from test_dataset import official_zip, pictures, tiny_d
from test_explore_helpers import make_G


# A small quick run, should `sg3 train` go ahead where it must refuse.
SMALL = ["--cfg", "stylegan2", "--kimg", "0.004", "--batch", "4", "--cbase", "64", "--cmax", "8", "--map", "1",
         "--z-dim", "8", "--w-dim", "8", "--workers", "0", "--no-progress"]


def run(args, capsys):
    """(exit code, stderr) of `sg3 ARGS` run in this process: the explore commands end with
    SystemExit('error: ...'), which Python prints to stderr."""
    try:
        code = sg3(args)
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    if isinstance(code, str):
        code, err = 1, err + code
    return code, err


@pytest.fixture
def snapshot(tmp_path):
    return save_snapshot(tmp_path / "snapshot-000000008.pt",
                         snapshot_from_networks({"G_ema": make_G(resolution=16), "D": tiny_d()}))


@pytest.fixture
def dataset(tmp_path):
    return official_zip(tmp_path / "ds.zip", pictures(3), None)


def unreadable(monkeypatch, path):
    """Make `path` unreadable: chmod 000, and where that does not stop reads (root), open() and
    io.open() (zipfile's) refuse it as the system would."""
    os.chmod(path, 0)
    if os.geteuid() != 0:
        return
    path = os.path.abspath(path)
    for module, real in ((builtins, builtins.open), (io, io.open)):
        def refusing(file, *args, _real=real, **kwargs):
            if isinstance(file, (str, bytes, os.PathLike)) and os.path.abspath(os.fsdecode(file)) == path:
                raise PermissionError(13, "Permission denied", os.fsdecode(file))
            return _real(file, *args, **kwargs)
        monkeypatch.setattr(module, "open", refusing)


def unwritable(monkeypatch, folder):
    """Make `folder` refuse new files: chmod 555, and for root (whom chmod does not stop) os.access
    says so, as it would for another user."""
    os.chmod(folder, 0o555)
    if os.geteuid() != 0:
        return
    folder, real = os.path.abspath(folder), os.access
    monkeypatch.setattr(os, "access", lambda p, mode, *a, **k: False if os.path.abspath(p) == folder and
                        mode & os.W_OK else real(p, mode, *a, **k))


# -- an unreadable network file ----------------------------------------------------------------

@pytest.mark.parametrize("command", [
    ["info", "{net}"], ["generate", "--network", "{net}", "--outdir", "{tmp}/g"],
    ["video", "--network", "{net}", "--output", "{tmp}/v.mp4"],
    ["rank", "--network", "{net}", "--data", "{data}", "--out", "{tmp}/r"],
    ["train", "--data", "{data}", "--outdir", "{tmp}/t", "--resume", "{net}", *SMALL],
])
def test_an_unreadable_network_file_is_named(tmp_path, monkeypatch, capsys, snapshot, dataset, command):
    """A PermissionError traceback from sniff()'s open (train: the same message twice)."""
    unreadable(monkeypatch, snapshot)
    args = [a.format(net=snapshot, tmp=tmp_path, data=dataset) for a in command]
    code, err = run(args, capsys)
    assert code in (1, 2) and "Traceback" not in err
    assert f"{snapshot}: cannot read the file (Permission denied); check its permissions" in err, err
    assert "as a snapshot" not in err  # train: said once
    from sg3lib import LoadError, load
    with pytest.raises(LoadError, match="cannot read the file"):
        load(snapshot)


def test_a_reader_that_stops_early_gets_no_traceback(tmp_path, snapshot):
    """`sg3 info net.pt | head -1`: once head had gone, the print (or Python's flush at exit) raised
    BrokenPipeError, a traceback or 'Exception ignored ... BrokenPipeError' under the lines head showed."""
    import subprocess
    read, write = os.pipe()
    os.close(read)  # the reader has gone before sg3 writes
    try:
        r = subprocess.run([sys.executable, "-m", "sg3lib.cli", "info", str(snapshot)], stdout=write,
                           stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                           env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    finally:
        os.close(write)
    assert "BrokenPipe" not in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert r.returncode == 141  # as a shell reports a command ended by SIGPIPE


def test_an_image_given_as_resume_is_named_once(tmp_path, capsys, dataset):
    """A PNG given to --resume (named .pt) was 'is an image, not a network file (as a snapshot: ... not
    a readable PyTorch file, truncated or corrupt (WeightsUnpickler error:) ...)': the file's kind says it."""
    from PIL import Image
    Image.new("RGB", (8, 8)).save(tmp_path / "net.pt", format="PNG")
    code, err = run(["train", "--data", str(dataset), "--outdir", str(tmp_path / "t"), "--resume",
                     str(tmp_path / "net.pt"), *SMALL], capsys)
    assert code in (1, 2) and f"{tmp_path / 'net.pt'}: is an image, not a network file" in err, err
    assert "as a snapshot" not in err and "Unpickler" not in err, err


# -- datasets that are not datasets ------------------------------------------------------------

def _truncated(path, src):
    data = open(src, "rb").read()
    path.write_bytes(data[:len(data) // 2])


@pytest.mark.parametrize("kind,message", [
    ("empty", r"is empty \(0 bytes\): an interrupted download or copy"),
    ("truncated", r"is a damaged or truncated zip .*Copy it again"),
    ("pickle", r"is a Python pickle \(a network \.pkl\?\), not a dataset"),
    ("snapshot", r"is a PyTorch file \(a network snapshot\?\), not a dataset"),
    ("unreadable", r"cannot be read \(Permission denied\)"),
])
def test_a_file_that_is_no_dataset_says_what_it_is(tmp_path, monkeypatch, dataset, snapshot, kind, message):
    """Each was 'X is neither a folder nor a zip file' (a dataset cut off by an interrupted Drive
    upload is a .zip) or 'no images found' (a snapshot .pt is a zip too)."""
    from sg3lib.data import ImageDataset
    from sg3lib.data.curate import CurateError, curate
    path = tmp_path / "data.zip"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        _truncated(path, dataset)
    elif kind == "pickle":
        path.write_bytes(pickle.dumps({"G_ema": 1}, protocol=4))
    elif kind == "snapshot":
        path = snapshot
    else:
        path.write_bytes(open(dataset, "rb").read())
        unreadable(monkeypatch, path)
    with pytest.raises(ValueError, match=message):
        ImageDataset(path)
    if kind != "snapshot":  # curate reads any zip of images: a snapshot's entries are counted as rejects
        with pytest.raises(CurateError, match=message):
            curate(path, tmp_path / "out.zip", 16, workers=0, progress=False)


# -- output folders ---------------------------------------------------------------------------

@pytest.mark.parametrize("command,message", [
    (["rank", "--network", "{net}", "--data", "{data}", "--out", "{file}"], "out_dir (sg3 rank --out)"),
    (["rank", "--network", "{net}", "--data", "{data}", "--out", "{tmp}/r", "--drop-bottom", "50",
      "--dest", "{file}/top.zip"], "dest (sg3 rank --dest)"),
    (["curate", "{raw}", "{tmp}/c.zip", "--resolution", "8", "--workers", "0", "--report-dir", "{file}/rep"],
     "the report folder (report_dir, --report-dir)"),
])
def test_an_output_folder_with_a_file_in_the_way_is_named(tmp_path, capsys, snapshot, dataset, command, message):
    """'[Errno 17] File exists: ...', without the flag, after the scoring or curation."""
    (tmp_path / "file").write_text("")
    raw = tmp_path / "raw"
    raw.mkdir()
    from PIL import Image
    Image.fromarray(pictures(1)[0]).save(raw / "a.png")
    args = [a.format(net=snapshot, data=dataset, tmp=tmp_path, file=tmp_path / "file", raw=raw) for a in command]
    code, err = run(args, capsys)
    assert code == 2 and "Traceback" not in err
    assert f"{message}: cannot create the folder" in err and f"({tmp_path / 'file'} is a file)" in err, err
    assert not (tmp_path / "r").exists() and not (tmp_path / "c.zip").exists()


def test_curate_and_rank_read_a_leading_tilde_as_the_home_folder(tmp_path, monkeypatch, capsys, snapshot):
    """'--report-dir=~/rep' or a quoted '~/ds.zip' (left as they are by the shell) made a folder named
    '~' here, or was 'dataset not found'."""
    home, here = tmp_path / "home", tmp_path / "here"
    (home / "raw").mkdir(parents=True), here.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(here)
    from PIL import Image
    for i, img in enumerate(pictures(3)):
        Image.fromarray(img).save(home / "raw" / f"{i}.png")
    assert sg3(["curate", "~/raw", "~/ds.zip", "--resolution", "8", "--min-size", "0", "--min-colors", "0",
                "--near-dup", "-1", "--workers", "0", "--report-dir=~/rep"]) == 0
    assert (home / "ds.zip").is_file() and (home / "rep" / "curation_report.json").is_file()
    assert sg3(["rank", "--network", str(snapshot), "--data", "~/ds.zip", "--out=~/rank", "--passes", "1"]) == 0
    assert (home / "rank" / "rank.csv").is_file() and not list(here.iterdir())  # nothing under ./~
    capsys.readouterr()


@pytest.mark.parametrize("command,flag", [
    (["generate", "--network", "{net}", "--seeds", "0", "--outdir", "{ro}"], "--outdir"),
    (["video", "--network", "{net}", "--frames", "1", "--output", "{ro}/v.mp4"], "--output"),
    (["rank", "--network", "{net}", "--data", "{data}", "--out", "{ro}/r"], "out_dir (sg3 rank --out)"),
    (["curate", "{data}", "{tmp}/c.zip", "--resolution", "8", "--workers", "0", "--report-dir", "{ro}/rep"],
     "the report folder (report_dir, --report-dir)"),
])
def test_an_output_folder_without_write_permission_is_named(tmp_path, monkeypatch, capsys, snapshot, dataset,
                                                            command, flag):
    """A PermissionError traceback after the work (video: ffmpeg's 'No such file' for its temporary)."""
    ro = tmp_path / "ro"
    ro.mkdir()
    unwritable(monkeypatch, ro)
    args = [a.format(net=snapshot, data=dataset, tmp=tmp_path, ro=ro) for a in command]
    code, err = run(args, capsys)
    assert code in (1, 2) and "Traceback" not in err
    assert f"{flag}: cannot write to {ro} (permission denied)" in err, err
    os.chmod(ro, 0o755)
    assert list(ro.iterdir()) == []


# -- numbers and devices ----------------------------------------------------------------------

@pytest.mark.parametrize("opts,message", [
    (dict(gamma=float("nan")), "--gamma nan must be a number >= 0"),  # trained on, R1 silently nan
    (dict(gamma=-1.0), "--gamma -1.0 must be a number >= 0"),
    (dict(kimg=float("nan")), "--kimg nan must be a finite number of kimg above 0"),  # ValueError deep inside
    (dict(kimg=1e308), r"--kimg 1e\+308 must be a finite"),  # OverflowError: kimg * 1000 is inf
    (dict(kimg=-1.0), "--kimg -1.0 must be"),  # 'nothing to train', exit code 0
    (dict(tick=float("nan")), "--tick nan must be"),  # no tick ever: no stats, no snapshots until the end
    (dict(tick=0.0), "--tick 0.0 must be"),
    (dict(snap=-1), "--snap -1 must be a whole number >= 0"),  # a snapshot every tick
    (dict(target=float("nan")), r"--target nan must be a number in \[0, 1\]"),  # p never moved
    (dict(target=2.0), r"--target 2.0 must be a number in \[0, 1\]"),
    (dict(glr=float("nan")), "--glr nan must be a learning rate >= 0"),  # torch's 'Invalid learning rate'
    (dict(dlr=-1.0), "--dlr -1.0 must be a learning rate >= 0"),
    (dict(workers=-1), "--workers -1 must be a whole number >= 0"),  # DataLoader's ValueError
    (dict(map=0), "--map 0 must be a whole number >= 1"),  # RuntimeError in the first backward
    (dict(z_dim=0), "--z-dim 0 must be a whole number >= 1"),  # ZeroDivisionError
    (dict(w_dim=-1), "--w-dim -1 must be a whole number >= 1"),
    (dict(cbase=0), "--cbase 0 must be a whole number >= 1"),
    (dict(cbase=8), "--cbase 8 and --cmax 512 leave G's 16 px layers without channels; give --cbase 16"),
    (dict(cfg="stylegan3-r", cbase=16), "leave D's 16 px layers without channels; give --cbase 32 or more"),
    # D's capacity given itself: raising --cbase (the old advice) could not help.
    (dict(dcbase=8), "dcbase=8 and dcmax=512 leave D's 16 px layers without channels; give dcbase=16 or more"),
    (dict(keep_every_kimg=float("nan")), "--keep-every-kimg nan must be a finite number"),
    # train() options without a flag are named as train() takes them.
    (dict(ada_interval=0), "ada_interval=0 must be a whole number >= 1"),  # ZeroDivisionError in the first steps
    (dict(D_reg_interval=0), "D_reg_interval=0 must be a whole number >= 1"),
    (dict(G_reg_interval=1.5), "G_reg_interval=1.5 must be a whole number >= 1"),
    (dict(pl_batch_shrink=0), "pl_batch_shrink=0 must be a whole number >= 1"),
    (dict(stats_batch=0), "stats_batch=0 must be a whole number >= 1"),  # w_avg never tracked
    (dict(pl_weight=-2.0), "pl_weight=-2.0 must be a number >= 0"),
    (dict(pl_decay=1.5), r"pl_decay=1.5 must be a number in \[0, 1\]"),
])
def test_train_options_out_of_range_are_refused(opts, message):
    with pytest.raises(ValueError, match=message):
        C.make_config(16, **opts)


def test_train_options_at_their_limits_still_run():
    c = C.make_config(16, gamma=0, glr=0, snap=0, workers=0, target=0, cbase=16, cmax=1, map=1, z_dim=1,
                      w_dim=1, tick=1e300, kimg=0.001)
    assert (c["gamma"], c["snap"], c["dcbase"], c["dcmax"]) == (0, 0, 16, 1)
    assert C.make_config(16, cfg="stylegan3-r", cbase=32, cmax=2)["dcbase"] == 16


def test_sg3_train_says_a_bad_number_in_one_line(tmp_path, capsys, dataset):
    code, err = run(["train", "--data", str(dataset), "--outdir", str(tmp_path / "t"), *SMALL, "--gamma", "nan"],
                    capsys)
    assert code == 2 and err.strip() == "error: --gamma nan must be a number >= 0 (0: no R1)"
    assert not (tmp_path / "t").exists()


@pytest.mark.parametrize("device,message", [
    ("foo", "not a torch device"), ("meta", "holds no data"), ("cuda", "torch sees no CUDA GPU here"),
])
def test_a_device_torch_cannot_use_is_refused_by_every_command(tmp_path, capsys, monkeypatch, snapshot, dataset,
                                                              device, message):
    """'mps' on Linux, 'meta', or (train) 'cuda' without a GPU and 'foo' were tracebacks."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for args in (["generate", "--network", str(snapshot), "--outdir", str(tmp_path / "g")],
                 ["rank", "--network", str(snapshot), "--data", str(dataset), "--out", str(tmp_path / "r")],
                 ["train", "--data", str(dataset), "--outdir", str(tmp_path / "t"), *SMALL]):
        code, err = run(args + ["--device", device], capsys)
        assert code in (1, 2) and "Traceback" not in err and message in err, (args, err)
    assert not any((tmp_path / d).exists() for d in ("g", "r", "t"))


def test_torch_device_names_what_torch_cannot_use(monkeypatch):
    from sg3lib.cli import torch_device
    assert torch_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError, match=r"'cuda:1', but torch sees 1 GPU\(s\) here: cuda:0 to cuda:0"):
        torch_device("cuda:1")

    def to(self, *args, **kwargs):  # a backend this torch was not built with
        raise RuntimeError("PyTorch is not linked with support for mps devices")
    monkeypatch.setattr(torch.Tensor, "to", to)
    with pytest.raises(ValueError, match=r"'mps': torch cannot use it here \(PyTorch is not linked"):
        torch_device("mps")


def test_train_device_cuda_means_this_process_gpu(monkeypatch):
    """`sg3 train --device cuda` on a GPU machine: torch.cuda.set_device needs an index, and raised
    'Expected a torch.device with a specified index' for the plain 'cuda' the help suggests."""
    from sg3lib.train import distributed
    chosen = []

    def set_device(d):  # as torch's: a device without an index is refused
        if isinstance(d, torch.device) and d.index is None:
            raise ValueError(f"Expected a torch.device with a specified index or an integer, but got:{d}")
        chosen.append(d)
    monkeypatch.setattr(torch.cuda, "set_device", set_device)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)  # (a machine with one GPU)
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert distributed.init("cuda")[2] == torch.device("cuda", 0) and chosen == [torch.device("cuda", 0)]


# -- sizes that would fill the memory ------------------------------------------------------

def test_a_seed_range_past_2_32_is_refused_before_it_is_listed():
    from sg3lib.explore import parse_seeds
    with pytest.raises(ValueError, match=r"seed 4294967296 is out of range"):  # '0-10000000000': a MemoryError
        parse_seeds("4294967290-4294967296")
    assert parse_seeds("4294967294-4294967295") == [4294967294, 4294967295]
    # In range but 2**32 seeds: a list of over 100 GB (swapping, or the OOM killer), not an 'error:' line.
    with pytest.raises(ValueError, match=r"4294967296 seeds, more than 10000000: generate them in parts"):
        parse_seeds("0-4294967295")
    with pytest.raises(ValueError, match=r"more than 10000000"):  # counted over the parts
        parse_seeds("0-5999999,10000000-15999999")
    # A negative end is out of range, not 'runs backwards: write ... like '-3-1'' (itself unreadable).
    with pytest.raises(ValueError, match=r"seed -3 is out of range"):
        parse_seeds("1--3")


def test_a_video_too_long_to_count_is_refused(tmp_path):
    from sg3lib.explore import interpolation_video
    for fps, duration in ((30, 1e308), (1e308, 1.0)):  # OverflowErrors (round(inf), torch's int64)
        with pytest.raises(ValueError, match="frames: too many to count"):
            interpolation_video(make_G(), tmp_path / "v.mp4", fps=fps, duration=duration, progress=False)


def test_rank_batch_larger_than_the_data_is_not_padded_out(tmp_path, dataset):
    """--batch 100000000 on 3 images padded each pass to 10**8 images (memory, hours)."""
    from sg3lib.data.rank import rank
    D, sizes = tiny_d(), []
    D.register_forward_pre_hook(lambda m, inputs: sizes.append(len(inputs[0])))
    res = rank(D, dataset, tmp_path / "r", passes=2, batch_size=10 ** 3, progress=False)
    assert len(res["names"]) == 3 and sizes and max(sizes) == 4  # 3 images, rounded up to D's group of 4


# -- a snapshot that holds weights, not a run -----------------------------------------------------

def test_a_weights_only_snapshot_is_a_source_of_weights_not_a_run_to_continue(tmp_path, capsys, dataset):
    """snapshot_from_networks() without a run's config and state, given to --resume, was taken for a
    run to continue: KeyError 'G' (G_ema and D only) or TypeError (G, D and G_ema)."""
    from sg3lib.train.loop import _load_resume
    nets = {"G": make_G(resolution=8), "D": tiny_d(), "G_ema": make_G(resolution=8)}
    full = save_snapshot(tmp_path / "weights.pt", snapshot_from_networks(nets))
    kind, payload = _load_resume(full, "cpu")
    assert kind == "networks" and set(payload) >= {"G", "D", "G_ema"}  # as an official .pkl: a transfer
    part = save_snapshot(tmp_path / "gema.pt", snapshot_from_networks({"G_ema": nets["G_ema"], "D": nets["D"]}))
    code, err = run(["train", "--data", str(dataset), "--outdir", str(tmp_path / "t"), "--resume", str(part),
                     *SMALL], capsys)
    assert code == 2 and "Traceback" not in err
    assert "gema.pt holds no G; transfer learning needs G, D and G_ema" in err, err
    assert not (tmp_path / "t").exists()


def test_ctrl_c_while_a_command_loads_is_one_line(monkeypatch, capsys):
    """The command's module (and torch with it, seconds on Colab) was imported before the try that
    turns Ctrl-C into one line: an early Ctrl-C printed a 40-70 line traceback."""
    from sg3lib import cli

    def interrupted(name):
        raise KeyboardInterrupt
    monkeypatch.setattr(cli.importlib, "import_module", interrupted)
    assert cli.main(["train", "--data", "d.zip", "--outdir", "r"]) == 130
    assert capsys.readouterr().err.strip().splitlines() == ["sg3 train: interrupted"]


def test_sg3_video_without_the_video_packages_says_what_to_install(tmp_path, monkeypatch):
    """moviepy and imageio-ffmpeg come with the [notebooks] extra: without them, sg3 video loaded the
    network, then ended with ModuleNotFoundError (19 lines), leaving the output folder it had made."""
    import importlib.util
    from sg3lib.cli import main
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "moviepy" else real(name, *a))
    with pytest.raises(SystemExit, match=r'needs moviepy .*pip install "sg3lib\[notebooks\]"'):
        main(["video", "--network", str(tmp_path / "net.pt"), "--output", str(tmp_path / "new" / "v.mp4")])
    assert not (tmp_path / "new").exists()


def test_a_device_whose_torch_module_is_missing_is_an_error_line():
    """--device hpu failed with ModuleNotFoundError: No module named 'torch.hpu' (a traceback)."""
    from sg3lib.cli import torch_device
    with pytest.raises(ValueError, match="device 'hpu': torch cannot use it here"):
        torch_device("hpu")


def test_sg3_without_a_command_is_a_usage_error(capsys):
    """`sg3` alone printed the help and exited 0: a script's `sg3 "$CMD"` with an empty $CMD succeeded."""
    assert sg3([]) == 2
    err = capsys.readouterr().err
    assert "no command given; choose one of curate" in err and "usage: sg3" in err
    assert sg3(["--help"]) == 0 and "usage: sg3" in capsys.readouterr().out
    assert sg3(["bogus"]) == 2 and "unknown command 'bogus'" in capsys.readouterr().err


def test_walk_seeds_are_checked_also_where_a_grid_moves_them():
    """random_walk passed its seed to numpy unchecked ('Seed must be between 0 and 2**32 - 1', a
    TypeError for 1.5), and a grid cell's shifted seeds (valid ones given) ended the same way."""
    from sg3lib.explore import latent_path, random_walk
    G = make_G()
    for bad, why in ((-1, "is out of range"), (2 ** 32, "is out of range"), (1.5, "is not a whole number")):
        with pytest.raises(ValueError, match=rf"seed {bad} {why}: seeds are integers in \[0, 2\*\*32\)"):
            random_walk(G, 4, seed=bad)
    with pytest.raises(ValueError, match=r"kind='walk' draws seeds up to 4294967298 \(cell 8 of the grid moves the "
                                         r"seeds by 8 x 1\), past the last seed 2\*\*32 - 1"):
        latent_path(G, "walk", 2, seeds=[4294967290], cell=8)
    with pytest.raises(ValueError, match=r"kind='loop' draws seeds up to 4294967296, past"):
        latent_path(G, "loop", 2, seeds=[4294967295])
    assert latent_path(G, "loop", 2, seeds=[4294967294])[0].shape[0] == 2


@pytest.mark.parametrize("text", ["nan", "NaN", "inf", "-inf", "1e999", "abc", ""])
def test_a_number_option_refuses_what_is_no_finite_number(text):
    import argparse
    from sg3lib.cli import finite_number
    with pytest.raises(argparse.ArgumentTypeError, match=f"expected a finite number, got {text!r}"):
        finite_number(text)
    assert finite_number("-0.5") == -0.5 and finite_number("1e-3") == 0.001


def test_a_device_of_the_wrong_type_and_a_long_reason_are_one_short_line(monkeypatch):
    """device=1.5 from a notebook: torch.device raises TypeError, not RuntimeError. A backend's reason
    keeps its first sentence (the rest is a paragraph of build advice)."""
    from sg3lib.cli import torch_device
    with pytest.raises(ValueError, match=r"^device 1.5 is not a torch device; use cpu, cuda or cuda:N"):
        torch_device(1.5)

    def to(self, *args, **kwargs):
        raise RuntimeError("XPU device not available. Install the XPU build of PyTorch. See the docs.")
    monkeypatch.setattr(torch.Tensor, "to", to)
    with pytest.raises(ValueError) as e:
        torch_device("xpu")
    assert str(e.value) == "device 'xpu': torch cannot use it here (XPU device not available); use cpu or cuda (--device)"


@pytest.fixture
def fake_command(monkeypatch):
    """An `sg3 fake` command whose run_fake is what the test sets."""
    import types
    from sg3lib import cli
    module = types.SimpleNamespace(add_fake_arguments=lambda p: None, run_fake=None)
    monkeypatch.setitem(cli.COMMANDS, "fake", ("sg3lib_fake_command", "a test's command"))
    monkeypatch.setitem(sys.modules, "sg3lib_fake_command", module)
    return module


def test_sg3_help_goes_to_stdout_with_either_spelling(capsys):
    for flag in ("-h", "--help"):
        assert sg3([flag]) == 0
        out = capsys.readouterr()
        assert "usage: sg3" in out.out and "train" in out.out and out.err == ""


def test_an_interrupt_another_process_reports_is_not_said_twice(fake_command, capsys):
    class Quiet(KeyboardInterrupt):
        quiet = True

    def run(args):
        raise Quiet("stopped at kimg 4; rerun with --resume latest")
    fake_command.run_fake = run
    assert sg3(["fake"]) == 130 and capsys.readouterr().err == ""
    Quiet.quiet = False
    assert sg3(["fake"]) == 130
    assert capsys.readouterr().err == "sg3 fake: stopped at kimg 4; rerun with --resume latest\n"


def test_a_reader_gone_by_the_last_flush_is_exit_status_141(fake_command, monkeypatch):
    """The output a command printed is flushed inside main: a reader that left meanwhile is then 141,
    not Python's 'Exception ignored ... BrokenPipeError' at exit."""
    from sg3lib import cli

    class GoneReader(io.StringIO):
        def flush(self):
            raise BrokenPipeError(32, "Broken pipe")

        def fileno(self):
            return 99
    redirected = []
    monkeypatch.setattr(sys, "stdout", GoneReader())
    monkeypatch.setattr(cli, "_stdout_is_a_pipe", lambda: True)
    monkeypatch.setattr(cli.os, "open", lambda path, flags: -1)
    monkeypatch.setattr(cli.os, "dup2", lambda fd, to: redirected.append(to))
    fake_command.run_fake = lambda args: print("a line") or 0
    assert sg3(["fake"]) == 141 and redirected == [99]


def test_a_broken_pipe_that_is_not_stdouts_is_not_taken_for_a_reader_leaving(fake_command, monkeypatch):
    from sg3lib import cli

    def run(args):  # (a helper process's pipe, say ffmpeg's)
        raise BrokenPipeError(32, "Broken pipe")
    fake_command.run_fake = run
    monkeypatch.setattr(cli, "_stdout_is_a_pipe", lambda: False)
    with pytest.raises(BrokenPipeError):
        sg3(["fake"])


def test_only_sg3lib_warnings_are_shortened_to_one_line(capsys):
    from sg3lib import cli
    shown = []
    show = lambda *a, **k: shown.append(a)  # noqa: E731
    cli._show_warning("generate", show, "use --psi", UserWarning, os.path.join(cli._PACKAGE, "explore", "x.py"), 3)
    assert capsys.readouterr().err == "sg3 generate: warning: use --psi\n" and shown == []
    cli._show_warning("generate", show, "deprecated", FutureWarning, "/elsewhere/torch/nn.py", 7)
    assert shown == [("deprecated", FutureWarning, "/elsewhere/torch/nn.py", 7)] and capsys.readouterr().err == ""
