"""Videos (moviepy -> H.264 mp4, read back with imageio-ffmpeg and moviepy) and the sg3 CLI."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from sg3lib import explore as X
from sg3lib.cli import main as sg3
from test_explore_helpers import make_G


@pytest.fixture(scope="module")
def G():
    return make_G()


def test_write_video_frame_count_and_size(tmp_path):
    frames = np.zeros([13, 24, 40, 3], np.uint8)
    frames[:, :, :, 0] = np.arange(13)[:, None, None] * 19  # a ramp, so frames differ
    path = X.write_video(tmp_path / "ramp.mp4", frames, fps=10, progress=False)
    assert X.read_video_info(path) == (13, (40, 24), 10.0)
    from moviepy import VideoFileClip
    with VideoFileClip(str(path)) as clip:
        assert tuple(clip.size) == (40, 24)
        red = [f[..., 0].mean() for f in clip.iter_frames()]
    assert len(red) == 13 and red[-1] > red[0] + 150  # frames arrive in order
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ramp.mp4"]  # no temporary left behind


def test_write_video_pads_odd_sizes_and_takes_a_callable(tmp_path):
    path = X.write_video(tmp_path / "odd.mp4", lambda i: np.full([15, 21, 3], i * 20, np.uint8), fps=5,
                         n_frames=6, progress=False)
    assert X.read_video_info(path)[:2] == (6, (22, 16))  # H.264 needs even sizes


@pytest.mark.parametrize("kind,grid,size", [("loop", 1, (16, 16)), ("keyframes", 3, (32, 32)),
                                            ("rotate", 1, (16, 16))])
def test_interpolation_video(G, tmp_path, kind, grid, size):
    path = X.interpolation_video(G, tmp_path / f"{kind}.mp4", kind=kind, seeds=[0, 1, 2], grid=grid, fps=12,
                                 n_frames=5, progress=False)
    count, wh, fps = X.read_video_info(path)
    assert (count, wh, fps) == (5, size, 12.0)


def test_interpolation_video_frames_are_the_path(G, tmp_path):
    """The first decoded frame is seed 0's image (up to H.264 loss), and frames change over time."""
    path = X.interpolation_video(G, tmp_path / "k.mp4", kind="keyframes", seeds=[0, 5], fps=8, n_frames=8,
                                 progress=False)
    import imageio_ffmpeg
    gen = imageio_ffmpeg.read_frames(str(path))
    meta = next(gen)
    frames = [np.frombuffer(f, np.uint8).reshape(meta["size"][1], meta["size"][0], 3).astype(int) for f in gen]
    first = X.generate_arrays(G, [0], progress=False)[0]
    assert np.abs(frames[0] - first).mean() < 6
    assert np.abs(frames[4] - frames[0]).mean() > 2 * np.abs(frames[0] - first).mean()


def test_video_paths_truncate_towards_the_class_centre():
    Gc = make_G(c_dim=3)
    centre = X.class_center(Gc, 1)
    for kind in ("loop", "rotate"):
        ws, _ = X.latent_path(Gc, kind, 3, seeds=[0], psi=0.0, class_idx=1, centre="class")
        torch.testing.assert_close(ws, centre.expand_as(ws), rtol=1e-5, atol=1e-5)


def test_interpolation_video_grid_must_have_a_cell(G, tmp_path):
    with pytest.raises(ValueError, match="at least 1"):
        X.interpolation_video(G, tmp_path / "v.mp4", grid=0, n_frames=3, progress=False)


def test_training_montage(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    for name, v in [("fakes_init.png", 0), ("fakes000040.png", 80), ("fakes000000.png", 40), ("fakes000120.png", 160)]:
        Image.fromarray(np.full([32, 48, 3], v, np.uint8)).save(run / name)
    (run / "fakes000080.png").write_bytes(b"not a png")  # a damaged grid is skipped and reported
    path, n, skipped = X.training_montage(run, tmp_path / "montage.mp4", fps=2, label=False, progress=False)
    assert n == 4 and len(skipped) == 1 and "fakes000080.png" in skipped[0]
    assert X.read_video_info(path) == (4, (48, 32), 2.0)
    with pytest.raises(FileNotFoundError, match="fakes"):
        X.training_montage(tmp_path / "empty", tmp_path / "x.mp4")


# ----------------------------------------------------------------------------- CLI

@pytest.fixture(scope="module")
def network_file(tmp_path_factory, G):
    from sg3lib.checkpoint import save_snapshot, snapshot_from_networks
    return save_snapshot(tmp_path_factory.mktemp("net") / "network.pt", snapshot_from_networks({"G_ema": G}))


def test_cli_generate(network_file, tmp_path, G):
    assert sg3(["generate", "--network", str(network_file), "--seeds", "0-2", "--psi", "0.7",
                "--outdir", str(tmp_path)]) == 0
    img = np.asarray(Image.open(tmp_path / "seed0001.png"))
    assert np.array_equal(img, X.generate_arrays(G, [1], psi=0.7, progress=False)[0])
    assert sg3(["generate", "--network", str(network_file), "--kind", "psi-grid", "--seeds", "0,1",
                "--psis", "1,0", "--outdir", str(tmp_path)]) == 0
    assert Image.open(tmp_path / "psi_grid.png").size == X.psi_grid(G, [0, 1], [1, 0], progress=False).size
    assert sg3(["generate", "--network", str(network_file), "--kind", "mix-grid", "--seeds", "0,1",
                "--col-seeds", "2-4", "--layers", "fine", "--outdir", str(tmp_path)]) == 0
    w, h = Image.open(tmp_path / "style_mix_grid.png").size
    assert w > 4 * 16 and h > 3 * 16


def test_cli_video(network_file, tmp_path):
    out = tmp_path / "walk.mp4"
    assert sg3(["video", "--network", str(network_file), "--kind", "walk", "--grid", "2", "--frames", "7",
                "--fps", "7", "--output", str(out)]) == 0
    assert X.read_video_info(out) == (7, (32, 16), 7.0)


def test_cli_video_passes_the_truncation_centre(tmp_path, monkeypatch):
    from sg3lib.checkpoint import save_snapshot, snapshot_from_networks
    from sg3lib.explore import video
    net = save_snapshot(tmp_path / "c.pt", snapshot_from_networks({"G_ema": make_G(c_dim=3)}))
    seen, real = [], video.latent_path
    monkeypatch.setattr(video, "latent_path", lambda *a, **k: seen.append(k.get("centre")) or real(*a, **k))
    assert sg3(["video", "--network", str(net), "--kind", "loop", "--frames", "3", "--fps", "3", "--psi", "0",
                "--class", "1", "--centre", "class", "--output", str(tmp_path / "c.mp4")]) == 0
    assert seen == ["class"]


def test_cli_montage_keeps_its_frame_rate(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    for k in range(3):
        Image.fromarray(np.full([16, 16, 3], 60 * k, np.uint8)).save(run / f"fakes{40 * k:06d}.png")
    assert sg3(["video", "--kind", "montage", "--run-dir", str(run), "--output", str(tmp_path / "m.mp4")]) == 0
    assert X.read_video_info(tmp_path / "m.mp4") == (3, (16, 16), 4.0)  # training_montage's 4 fps, not 30


def test_cli_errors_name_the_problem(tmp_path):
    with pytest.raises(SystemExit, match="no such file"):
        sg3(["generate", "--network", str(tmp_path / "missing.pt")])
    with pytest.raises(SystemExit, match="--run-dir"):
        sg3(["video", "--kind", "montage"])
    (tmp_path / "run").mkdir()  # a run folder without snapshots, a file that is no network: one line, no traceback
    (tmp_path / "notes.pt").write_text("not a network")
    for cmd in ("generate", "video"):
        with pytest.raises(SystemExit, match="no snapshot-"):
            sg3([cmd, "--network", str(tmp_path / "run")])
    with pytest.raises(SystemExit, match="^error: .*notes.pt"):
        sg3(["generate", "--network", str(tmp_path / "notes.pt")])


def test_cli_generate_refuses_a_transform_it_would_ignore(network_file, tmp_path):
    """--translate/--rotate move the images of --kind images; the grids have no transform to take."""
    for kind in ("psi-grid", "mix-grid"):
        with pytest.raises(SystemExit, match="--kind images only"):
            sg3(["generate", "--network", str(network_file), "--kind", kind, "--rotate", "30",
                 "--outdir", str(tmp_path)])
    assert not list(tmp_path.iterdir())


def test_cli_uses_the_gpu_when_there_is_one(network_file, monkeypatch):
    """Without --device the commands pick cuda where torch sees a GPU, as the notebooks do."""
    import importlib

    import torch
    from sg3lib.explore import cli
    seen = []
    monkeypatch.setattr(importlib.import_module("sg3lib.explore.generate"), "load_generator",
                        lambda path, device: seen.append(device))
    args = SimpleNamespace(network=str(network_file), device=None)
    for gpu, expected in ((True, "cuda"), (False, "cpu")):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu)
        cli._load(args)
        assert seen[-1] == expected
    cli._load(SimpleNamespace(network=str(network_file), device="cpu"))
    assert seen[-1] == "cpu"
