"""Videos (moviepy -> H.264 mp4, read back with imageio-ffmpeg and moviepy) and the sg3 CLI."""
import re
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


def test_a_failed_encode_keeps_the_old_video_and_is_an_error(tmp_path, monkeypatch):
    """moviepy never looks at ffmpeg's exit status: a full disk while ffmpeg wrote the mp4 index (or
    ffmpeg failing once the frames fitted in its pipe) left an empty or cut file, which replaced the
    good video and was reported written. The file is read back before it takes the name."""
    import moviepy
    frames = np.zeros([4, 16, 16, 3], np.uint8)
    short = X.write_video(tmp_path / "short.mp4", frames[:3], fps=10, progress=False).read_bytes()  # one short
    good = X.write_video(tmp_path / "v.mp4", frames, fps=10, progress=False)
    before = good.read_bytes()
    for written, message in ((b"", "no readable video"), (short, "3 of 4 frames")):
        def encode(self, filename, written=written, **kwargs):  # what ffmpeg left, reported as done
            with open(filename, "wb") as f:
                f.write(written)
        monkeypatch.setattr(moviepy.VideoClip, "write_videofile", encode)
        with pytest.raises(OSError, match=rf"v\.mp4: ffmpeg wrote {message}"):
            X.write_video(good, frames, fps=10, progress=False)
        monkeypatch.undo()
        assert good.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["short.mp4", "v.mp4"]


def test_write_video_refuses_what_it_would_write_wrong(tmp_path):
    """Each was written without a word: fps 0.125 as 0.12 (moviepy keeps 2 decimals: 4% too long;
    0.004 as 0, an empty file), a frame of another size garbled into its neighbours, float frames
    black, n_frames ignored for a list; a generator failed with an AttributeError, a crf of 99 in ffmpeg."""
    frames = np.zeros([3, 16, 16, 3], np.uint8)
    out = tmp_path / "x.mp4"
    for kwargs, message in ((dict(fps=0.125), r"fps=0\.125: the video writer keeps 2 decimals \(0\.12"),
                            (dict(fps=0.004), r"fps=0\.004: the video writer keeps 2 decimals"),
                            (dict(crf=99), r"crf=99: the H\.264 quality"), (dict(crf=1.5), "crf=1.5"),
                            (dict(n_frames=2), r"n_frames=2, but 3 frames were given")):
        with pytest.raises(ValueError, match=message):
            X.write_video(out, frames, progress=False, **dict(dict(fps=10), **kwargs))
    mixed = [frames[0], np.zeros([20, 20, 3], np.uint8), frames[2]]
    with pytest.raises(ValueError, match=r"frame 1 is 20x20 with 3 channel\(s\), frame 0 16x16 with 3"):
        X.write_video(out, mixed, fps=10, progress=False)
    with pytest.raises(ValueError, match="frame 0 is float64; frames are uint8"):
        X.write_video(out, np.full([3, 16, 16, 3], 0.8), fps=10, progress=False)
    with pytest.raises(TypeError, match="frames: a list or array of images, or a callable"):
        X.write_video(out, (f for f in frames), fps=10, progress=False)
    assert not list(tmp_path.iterdir())  # nothing written, no temporary left
    with pytest.raises(FileNotFoundError, match=r"x\.mp4: no such video file"):
        X.read_video_info(out)
    assert X.read_video_info(X.write_video(out, frames, fps=23.98, progress=False))[0] == 3  # 2 decimals: fine


def test_two_videos_written_to_one_name_at_once_both_finish_whole(tmp_path):
    """Two threads (say two notebook cells' background renders) writing the same file used to share
    one temporary name: one's ffmpeg wrote over the other's, and the slower failed or renamed a
    mix into place. Each write now has a temporary of its own; the file is one of the two, whole."""
    import threading
    results = {}

    def write(level):
        try:
            frames = lambda i: np.full([16, 16, 3], level, np.uint8)
            results[level] = X.write_video(tmp_path / "same.mp4", frames, fps=10, n_frames=20, progress=False)
        except Exception as e:  # reported below
            results[level] = e
    threads = [threading.Thread(target=write, args=(v,)) for v in (40, 200)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(not isinstance(r, Exception) for r in results.values()), results
    from moviepy import VideoFileClip
    with VideoFileClip(str(tmp_path / "same.mp4")) as clip:
        levels = {int(round(f.mean() / 10)) * 10 for f in clip.iter_frames()}
    assert X.read_video_info(tmp_path / "same.mp4")[0] == 20 and levels in ({40}, {200})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["same.mp4"]


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


@pytest.mark.parametrize("kind,option", [("loop", {"space": "w"}), ("loop", {"sigma": 3}), ("walk", {"method": "lerp"}),
                                         ("mix", {"space": "w"}), ("keyframes", {"layers": "coarse"}),
                                         ("keyframes", {"amount": 0.5}), ("translate", {"sigma": 5})])
def test_latent_path_refuses_an_option_its_kind_would_ignore(G, tmp_path, kind, option):
    """`sg3 video` refused them; the library took them and drew the default path (kind='mix' with
    space='w' still walked in Z), so a notebook user never learnt the option did nothing."""
    with pytest.raises(ValueError, match=f"{next(iter(option))}=.* applies to kind .* not '{kind}'"):
        X.latent_path(G, kind, 4, **option)
    with pytest.raises(ValueError, match="applies to kind"):
        X.interpolation_video(G, tmp_path / "v.mp4", kind=kind, n_frames=4, progress=False, **option)
    assert not (tmp_path / "v.mp4").exists()


def test_latent_path_options_for_their_own_kinds(G):
    z_walk, _ = X.latent_path(G, "walk", 6)
    assert torch.equal(X.latent_path(G, "walk", 6, space="z")[0], z_walk)
    assert not torch.allclose(X.latent_path(G, "walk", 6, space="w")[0], z_walk)
    fine, _ = X.latent_path(G, "mix", 6)
    assert torch.equal(X.latent_path(G, "mix", 6, layers="fine")[0], fine)
    assert not torch.equal(X.latent_path(G, "mix", 6, layers="coarse")[0], fine)


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
    levels = [f.mean() for f in _decoded(path)]  # the initial grid first, then fakes000000.png (both kimg 0)
    assert np.abs(np.array(levels) - [0, 40, 80, 160]).max() < 3, levels
    with pytest.raises(FileNotFoundError, match="no such folder"):
        X.training_montage(tmp_path / "nowhere", tmp_path / "x.mp4")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no fakes"):
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


def test_ctrl_c_while_sg3_generate_saves_leaves_no_temporary(network_file, tmp_path, monkeypatch, capsys):
    """Ctrl-C while a (big, slow to encode) grid is being written: one line, exit status 130, and
    neither the grid nor its half-written temporary in the output folder."""
    def interrupted_save(self, fp, *a, **k):
        (fp if hasattr(fp, "write") else open(fp, "wb")).write(b"\x89PNG half a grid")
        raise KeyboardInterrupt

    monkeypatch.setattr(Image.Image, "save", interrupted_save)
    assert sg3(["generate", "--network", str(network_file), "--kind", "psi-grid", "--seeds", "0,1",
                "--psis", "1,0", "--outdir", str(tmp_path / "out")]) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == "sg3 generate: interrupted"
    assert list((tmp_path / "out").iterdir()) == []


def test_sg3_generate_saves_each_batch_before_drawing_the_next(network_file, tmp_path, monkeypatch, capsys):
    """All seeds were drawn (and held twice in memory) before the first PNG was written: 50k seeds at
    1024 px ran out of memory after hours, and Ctrl-C left nothing. An interrupt now keeps the batches
    written, with the same pixels."""
    import importlib
    gen = importlib.import_module("sg3lib.explore.generate")  # the module (the package exports its function)
    calls, real = [], gen.generate

    def generate(G, seeds, **k):
        calls.append(list(seeds))
        if len(calls) == 3:
            assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [f"seed{i:04d}.png" for i in range(4)]
            raise KeyboardInterrupt
        return real(G, seeds, **k)
    monkeypatch.setattr(gen, "generate", generate)
    assert sg3(["generate", "--network", str(network_file), "--seeds", "0-6", "--batch", "2",
                "--outdir", str(tmp_path / "out")]) == 130
    assert calls == [[0, 1], [2, 3], [4, 5]]
    monkeypatch.setattr(gen, "generate", real)
    assert sg3(["generate", "--network", str(network_file), "--seeds", "0-6", "--batch", "2",
                "--outdir", str(tmp_path / "all")]) == 0
    assert "7/7" in capsys.readouterr().err  # one bar over the batches
    for i in range(4):
        assert (tmp_path / "out" / f"seed{i:04d}.png").read_bytes() == (tmp_path / "all" / f"seed{i:04d}.png").read_bytes()


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


def test_cli_paths_read_a_leading_tilde_as_the_home_folder(tmp_path, monkeypatch):
    """The shell leaves '--network=~/net.pt' and a quoted '~/...' as they are: --network was refused as
    'no such file' (sg3 info read it), and --output/--outdir made a folder named '~' here."""
    home, here = tmp_path / "home", tmp_path / "here"
    home.mkdir(), here.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(here)
    from sg3lib.checkpoint import save_snapshot, snapshot_from_networks
    save_snapshot(home / "net.pt", snapshot_from_networks({"G_ema": make_G()}))
    assert sg3(["generate", "--network=~/net.pt", "--seeds", "0", "--outdir=~/gen", "--device", "cpu"]) == 0
    assert (home / "gen" / "seed0000.png").is_file()
    assert sg3(["video", "--network=~/net.pt", "--kind", "translate", "--frames", "2", "--fps", "2",
                "--output=~/v.mp4", "--device", "cpu"]) == 0
    assert (home / "v.mp4").is_file() and not list(here.iterdir())  # nothing under ./~
    assert X.write_video("~/w.mp4", np.zeros([2, 16, 16, 3], np.uint8), fps=2, progress=False) == home / "w.mp4"


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


def test_cli_generate_refuses_options_its_kind_ignores(network_file, tmp_path):
    """As sg3 video: --psis (psi-grid's columns) given to images, --col-seeds or --layers to anything but
    mix-grid, or --psi to a psi grid (its psis are the columns) did nothing, without a word."""
    for kind, opt, value in (("images", "--psis", "1,0"), ("mix-grid", "--psis", "1,0"),
                             ("images", "--col-seeds", "3"), ("psi-grid", "--layers", "fine"),
                             ("psi-grid", "--psi", "0.7")):
        with pytest.raises(SystemExit, match=f"^error: {opt} applies to --kind .* only, not {kind}"):
            sg3(["generate", "--network", str(network_file), "--kind", kind, opt, value, "--outdir", str(tmp_path)])
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
        monkeypatch.setattr(torch.cuda, "device_count", lambda: int(gpu))
        cli._load(args)
        assert seen[-1] == expected
    cli._load(SimpleNamespace(network=str(network_file), device="cpu"))
    assert seen[-1] == "cpu"


def test_video_frames_must_be_positive(G, tmp_path):
    """An explicit n_frames=0 is an error, not round(fps * duration); so is a path with no frames."""
    for kwargs, match in ((dict(n_frames=0), "n_frames=0"), (dict(n_frames=-2), "n_frames=-2"),
                          (dict(fps=0), "fps=0"), (dict(fps=0.1, duration=1), "0 frames")):
        with pytest.raises(ValueError, match=match):
            X.interpolation_video(G, tmp_path / "v.mp4", **{"fps": 10, **kwargs}, progress=False)
    assert not list(tmp_path.iterdir())


def test_library_counts_and_rates_are_checked_not_clamped(G, tmp_path):
    """batch_size=0 quietly became 1 (the CLI refuses --batch 0), n_frames=2.5 became 2, grid=2.5 raised a
    TypeError, fps=inf an OverflowError, training_montage(fps=0) a ZeroDivisionError: now each is a
    ValueError naming the argument, as the CLI's checks."""
    for kwargs, match in ((dict(batch_size=0), "batch_size=0"), (dict(batch_size=-1), "batch_size=-1"),
                          (dict(batch_size=2.5), "batch_size=2.5"), (dict(n_frames=2.5), "n_frames=2.5"),
                          (dict(grid=2.5), "grid=2.5"), (dict(fps=float("inf")), "fps=inf"),
                          (dict(fps=float("nan")), "fps=nan"), (dict(duration=float("nan")), "duration=nan"),
                          (dict(duration=float("inf")), "duration=inf"), (dict(duration=-1), "duration=-1")):
        with pytest.raises(ValueError, match=match):
            X.interpolation_video(G, tmp_path / "v.mp4", kind="loop", **{"n_frames": None, **kwargs}, progress=False)
    for call, match in ((lambda: X.psi_grid(G, [0], [1, 0], batch_size=0, progress=False), "batch_size=0"),
                        (lambda: X.generate_arrays(G, [0, 1], batch_size=0, progress=False), "batch_size=0"),
                        (lambda: X.psi_grid(G, [], [1, 0], progress=False), "seeds is empty"),
                        (lambda: X.psi_grid(G, [0], [], progress=False), "psis is empty"),
                        (lambda: X.style_mix_grid(G, [0], [], progress=False), "col_seeds is empty"),
                        (lambda: X.training_montage(tmp_path, tmp_path / "m.mp4", fps=0), "fps=0"),
                        (lambda: X.write_video(tmp_path / "w.mp4", np.zeros([2, 8, 8, 3], np.uint8), fps=-1,
                                               progress=False), "fps=-1")):
        with pytest.raises(ValueError, match=match):
            call()
    assert not list(tmp_path.iterdir())
    path = X.interpolation_video(G, tmp_path / "b.mp4", kind="loop", fps=4, n_frames=np.int64(3), batch_size=2.0,
                                 progress=False)  # whole numbers of any type are fine
    assert X.read_video_info(path)[0] == 3


def test_montage_of_an_sg3lib_run_starts_with_the_initial_grid(tmp_path):
    """Training writes fakes-init.png and fakes-NNNNNNNNN.png (images shown); the montage read only the
    official fakesNNNNNN.png (kimg), so it put fakes-init.png last and labelled frames 'fakes-000000048'."""
    from sg3lib.explore.video import _kimg
    run = tmp_path / "run"
    run.mkdir()
    for name, v in [("fakes-000000096.png", 240), ("fakes-init.png", 0), ("fakes-000000048.png", 120)]:
        Image.fromarray(np.full([16, 16, 3], v, np.uint8)).save(run / name)
    path, n, _ = X.training_montage(run, tmp_path / "m.mp4", fps=2, label=False, progress=False)
    import imageio_ffmpeg
    gen = imageio_ffmpeg.read_frames(str(path))
    next(gen)
    levels = [np.frombuffer(f, np.uint8).mean() for f in gen]
    assert n == 3 and levels == sorted(levels) and levels[0] < 30 < 200 < levels[-1]
    assert [_kimg(s) for s in ("fakes-000040000.png", "fakes000040.png", "fakes-init.png", "fakes_init.png")] == \
        [40, 40, None, None]


def test_transform_videos_refuse_stylegan2_before_encoding(tmp_path):
    with pytest.raises(ValueError, match="StyleGAN3"):
        X.latent_path(make_G("sg2"), "rotate", 3)
    with pytest.raises(ValueError, match="no seeds"):
        X.latent_path(make_G(), "loop", 3, seeds=[])


def test_keyframe_method_defaults_to_slerp_in_z_and_lerp_in_w(G):
    seeds = [3, 5, 9]
    for space, method in (("z", "slerp"), ("w", "lerp")):
        assert X.default_method(space) == method
        torch.testing.assert_close(X.keyframe_path(G, seeds, 7, space=space),
                                   X.keyframe_path(G, seeds, 7, method=method, space=space))
        ws, _ = X.latent_path(G, "keyframes", 7, seeds, space=space)
        torch.testing.assert_close(ws, X.keyframe_path(G, seeds, 7, method=method, space=space))
    # the two differ, so the defaults above are not vacuous
    assert not torch.allclose(X.keyframe_path(G, seeds, 7, method="slerp", space="w"),
                              X.keyframe_path(G, seeds, 7, method="lerp", space="w"))


# ----------------------------------------------------------------------------- CLI options

def test_cli_takes_negative_comma_values_without_equals(network_file, tmp_path, G):
    """argparse reads '-0.1,0' as an option, so `--translate -0.1,0` failed; it now means --translate=-0.1,0."""
    want = X.generate_arrays(G, [1], transform=X.make_transform((-0.1, 0), 0), progress=False)[0]
    assert not np.array_equal(want, X.generate_arrays(G, [1], progress=False)[0])
    for i, opt in enumerate((["--translate", "-0.1,0"], ["--translate=-0.1,0"], ["--trans", "-0.1,0"],
                             ["--translate", "-.1,0.0"])):
        out = tmp_path / str(i)
        assert sg3(["generate", "--network", str(network_file), "--device", "cpu", "--seeds", "1", *opt,
                    "--outdir", str(out)]) == 0
        assert np.array_equal(np.asarray(Image.open(out / "seed0001.png")), want), opt
    assert sg3(["generate", "--network", str(network_file), "--kind", "psi-grid", "--seeds", "0", "--psis", "-1,0,1",
                "--outdir", str(tmp_path)]) == 0
    assert Image.open(tmp_path / "psi_grid.png").size == X.psi_grid(G, [0], [-1, 0, 1], progress=False).size
    assert sg3(["generate", "--network", str(network_file), "--device", "cpu", "--seeds", "2", "--psi", "-5e-1",
                "--outdir", str(tmp_path / "e")]) == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "e" / "seed0002.png")),
                          X.generate_arrays(G, [2], psi=-0.5, progress=False)[0])


def test_join_negative_values_touches_only_option_values():
    import argparse

    from sg3lib.cli import join_negative_values
    p = argparse.ArgumentParser()
    p.add_argument("--translate")
    p.add_argument("--psi", type=float)
    p.add_argument("--psis")
    p.add_argument("--flag", action="store_true")
    p.add_argument("--many", nargs="+")
    p.add_argument("rest", nargs="*")
    j = lambda *a: join_negative_values(p, list(a))  # noqa: E731
    assert j("--translate", "-0.1,0") == ["--translate=-0.1,0"]
    assert j("--psi", "-0.5") == ["--psi=-0.5"]                # one value: joined, same meaning
    assert j("--psi", "-1e-3") == ["--psi=-1e-3"]
    assert j("--flag", "-1,2") == ["--flag", "-1,2"]           # a flag takes no value
    assert j("--translate", "-x") == ["--translate", "-x"]     # not a number
    assert j("--translate", "-1,0x") == ["--translate", "-1,0x"]  # not numbers throughout
    assert j("--trans", "-0.1,0") == ["--trans=-0.1,0"]        # argparse's abbreviation of --translate
    assert j("--ps", "-1,0") == ["--ps", "-1,0"]               # --psi or --psis: argparse says it is ambiguous
    assert j("--many", "-1", "2") == ["--many", "-1", "2"]     # argparse reads these itself
    assert j("--", "--translate", "-1,0") == ["--", "--translate", "-1,0"]
    assert p.parse_args(j("--translate", "-0.1,0", "--many", "-1", "2")).many == ["-1", "2"]


def test_cli_translate_needs_two_numbers(network_file, tmp_path, capsys):
    for bad in ("0.1", "1,2,3", "a,b"):
        with pytest.raises(SystemExit) as e:
            sg3(["generate", "--network", str(network_file), "--translate", bad, "--outdir", str(tmp_path)])
        assert e.value.code == 2 and "--translate: expected two numbers" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        sg3(["generate", "--network", str(network_file), "--kind", "psi-grid", "--psis", "1,x"])
    assert "--psis: expected numbers" in capsys.readouterr().err


@pytest.mark.parametrize("opt,value", [("--frames", "0"), ("--frames", "-3"), ("--fps", "0"), ("--duration", "0"),
                                       ("--batch", "0"), ("--grid", "0"), ("--fps", "nan"), ("--fps", "inf"),
                                       ("--duration", "inf"), ("--amount", "nan"), ("--sigma", "-1"),
                                       ("--sigma", "nan"), ("--sigma", "inf")])
def test_cli_video_counts_must_be_positive(network_file, tmp_path, capsys, opt, value):
    """--frames 0 used to mean fps x duration and --fps 0 thirty frames a second: an explicit value is never ignored."""
    with pytest.raises(SystemExit) as e:
        sg3(["video", "--network", str(network_file), opt, value, "--output", str(tmp_path / "v.mp4")])
    assert e.value.code == 2 and f"argument {opt}:" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("opt", ["--fps", "--duration"])
def test_cli_video_negative_rate_or_length_is_told_the_bound_that_holds(network_file, tmp_path, capsys, opt):
    """`--fps -1` said 'must be at least 0.0', and the 0 that this suggests was refused next."""
    for value in ("-1", "0"):
        with pytest.raises(SystemExit):
            sg3(["video", "--network", str(network_file), opt, value, "--output", str(tmp_path / "v.mp4")])
        assert f"argument {opt}: must be a number above 0, got {value}" in capsys.readouterr().err


@pytest.mark.parametrize("args,opt", [(["--psi", "nan"], "--psi"), (["--psi", "inf"], "--psi"),
                                      (["--seeds", ""], "--seeds"), (["--seeds", " , "], "--seeds"),
                                      (["--kind", "psi-grid", "--psis", "1,nan"], "--psis"),
                                      (["--translate", "inf,0"], "--translate"), (["--rotate", "nan"], "--rotate"),
                                      (["--kind", "mix-grid", "--col-seeds", ""], "--col-seeds")])
def test_cli_generate_refuses_nothing_and_non_numbers(network_file, tmp_path, capsys, args, opt):
    """--psi nan drew grey fields and --seeds '' wrote nothing, both reported as done."""
    with pytest.raises(SystemExit) as e:
        sg3(["generate", "--network", str(network_file), *args, "--outdir", str(tmp_path / "out")])
    assert e.value.code == 2 and f"argument {opt}:" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_cli_class_errors_name_the_flag(tmp_path):
    """The library's errors say class_idx (its argument); the command line says --class."""
    from sg3lib.checkpoint import save_snapshot, snapshot_from_networks
    cond = save_snapshot(tmp_path / "c.pt", snapshot_from_networks({"G_ema": make_G(c_dim=3)}))
    plain = save_snapshot(tmp_path / "u.pt", snapshot_from_networks({"G_ema": make_G()}))
    for cmd in ("generate", "video"):
        for net, extra, match in ((cond, [], "this network is conditional .*pass --class 0..2"),
                                  (cond, ["--class", "7"], "--class 7 is out"),
                                  (plain, ["--class", "2"], "--class 2 given, but this network is unconditional")):
            with pytest.raises(SystemExit, match=f"^error: {match}") as e:
                sg3([cmd, "--network", str(net), *extra, *(["--output", str(tmp_path / "v.mp4")] if cmd == "video"
                                                           else ["--outdir", str(tmp_path / "out")])])
            assert "class_idx" not in str(e.value.code)
    assert sg3(["generate", "--network", str(cond), "--class", "2", "--seeds", "0",
                "--outdir", str(tmp_path / "ok")]) == 0


def test_cli_library_errors_are_one_line(network_file, tmp_path, capsys):
    from sg3lib.checkpoint import save_snapshot, snapshot_from_networks
    sg2 = save_snapshot(tmp_path / "sg2.pt", snapshot_from_networks({"G_ema": make_G("sg2")}))
    with pytest.raises(SystemExit) as stop:  # a seed out of range: refused as it is parsed, before loading
        sg3(["generate", "--network", str(network_file), "--seeds", "-3", "--outdir", str(tmp_path / "out")])
    assert stop.value.code == 2 and "argument --seeds: seed -3 is out of range" in capsys.readouterr().err
    for argv, match in ((["generate", "--network", str(network_file), "--kind", "mix-grid", "--layers", "bogus"],
                         "layers='bogus'"),
                        (["video", "--network", str(sg2), "--kind", "rotate", "--frames", "2"], "StyleGAN3"),
                        (["video", "--network", str(network_file), "--seeds", "0", "--frames", "2"], "two seeds")):
        with pytest.raises(SystemExit, match=f"^error: .*{match}"):
            sg3(argv + (["--outdir", str(tmp_path / "out")] if argv[0] == "generate" else
                        ["--output", str(tmp_path / "out" / "v.mp4")]))
    assert not (tmp_path / "out").exists()


def test_cli_work_refused_after_the_output_folder_leaves_no_empty_folder(network_file, tmp_path):
    """Refusals the library makes (--kind rotate on StyleGAN2, one seed for key frames, a layer range past
    the network's, a montage of no readable grid) came after the output folder was made: the command
    failed and left an empty folder tree, where a wrong --network leaves none."""
    from sg3lib.checkpoint import save_snapshot, snapshot_from_networks
    sg2 = save_snapshot(tmp_path / "sg2.pt", snapshot_from_networks({"G_ema": make_G("sg2")}))
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "fakes-000000004.png").write_bytes(b"not a png")
    out = tmp_path / "out" / "a" / "b"
    for argv in (["video", "--network", str(sg2), "--kind", "rotate", "--frames", "2", "--output", f"{out}/v.mp4"],
                 ["video", "--network", str(network_file), "--seeds", "0", "--frames", "2", "--output", f"{out}/v.mp4"],
                 ["video", "--network", str(sg2), "--kind", "mix", "--layers", "0-99", "--frames", "2",
                  "--output", f"{out}/v.mp4"],
                 ["video", "--kind", "montage", "--run-dir", str(tmp_path / "run"), "--output", f"{out}/v.mp4"],
                 ["generate", "--network", str(sg2), "--kind", "mix-grid", "--layers", "0-99", "--outdir", str(out)]):
        with pytest.raises(SystemExit, match="^error: "):
            sg3(argv)
        assert not (tmp_path / "out").exists(), argv
    (tmp_path / "keep").mkdir()  # a folder that was there before stays
    with pytest.raises(SystemExit, match="StyleGAN3"):
        sg3(["video", "--network", str(sg2), "--kind", "rotate", "--frames", "2", "--output", f"{tmp_path}/keep/v.mp4"])
    assert (tmp_path / "keep").is_dir()


def test_cli_video_refuses_options_its_kind_ignores(network_file, tmp_path):
    for kind, opt, value in (("walk", "--method", "lerp"), ("loop", "--space", "w"), ("keyframes", "--layers", "fine"),
                             ("mix", "--method", "slerp"), ("loop", "--amount", "0.1"),
                             ("walk", "--run-dir", str(tmp_path)), ("loop", "--sigma", "2"), ("mix", "--sigma", "2")):
        with pytest.raises(SystemExit, match=f"^error: {opt} applies to --kind .* only, not {kind}"):
            sg3(["video", "--network", str(network_file), "--kind", kind, opt, value, "--frames", "2",
                 "--output", str(tmp_path / "v.mp4")])
    assert not list(tmp_path.iterdir())


def test_cli_montage_refuses_network_options(network_file, tmp_path):
    """A montage shows the run's fakes grids: --network, --psi, --seeds ... were silently ignored."""
    run = tmp_path / "run"
    run.mkdir()
    Image.fromarray(np.zeros([16, 16, 3], np.uint8)).save(run / "fakes-init.png")
    for extra in (["--network", str(network_file)], ["--psi", "0.5"], ["--seeds", "0-3"], ["--class", "1"],
                  ["--noise-mode", "random"], ["--grid", "2"], ["--frames", "9"], ["--duration", "4"],
                  ["--batch", "8"], ["--device", "cpu"], ["--amount", "-30"], ["--psi", "1", "--centre", "class"],
                  ["--sigma", "4"]):
        with pytest.raises(SystemExit) as e:
            sg3(["video", "--kind", "montage", "--run-dir", str(run), *extra, "--output", str(tmp_path / "m.mp4")])
        msg = str(e.value.code)
        assert msg.startswith("error: ") and "--kind montage reads no network" in msg and "\n" not in msg
        named = re.findall(r"--[a-z-]+", msg.split(": ")[1])  # (--class, not the library's --class-idx)
        assert sorted(named) == sorted(f for f in extra if f.startswith("--")), (extra, msg)
    assert not (tmp_path / "m.mp4").exists()
    assert sg3(["video", "--kind", "montage", "--run-dir", str(run), "--fps", "2",
                "--output", str(tmp_path / "m.mp4")]) == 0


def test_cli_video_amount(network_file, tmp_path, monkeypatch):
    """--amount reaches transform_sweep (translate: image widths, rotate: degrees), negative without '='."""
    from sg3lib.explore import video
    seen, real = [], video.latent_path
    monkeypatch.setattr(video, "latent_path", lambda *a, **k: (lambda r: seen.append(r[1]) or r)(real(*a, **k)))
    for kind, amount in (("rotate", "-30"), ("translate", "-1e-1"), ("rotate", "45")):
        assert sg3(["video", "--network", str(network_file), "--device", "cpu", "--kind", kind, "--amount", amount,
                    "--frames", "4", "--fps", "4", "--output", str(tmp_path / f"{kind}.mp4")]) == 0
        torch.testing.assert_close(seen[-1], X.transform_sweep(4, kind, float(amount)))
        assert not torch.allclose(seen[-1], X.transform_sweep(4, kind))  # not the default


def test_cli_video_interpolates_w_with_lerp_by_default(network_file, tmp_path, monkeypatch, G):
    from sg3lib.explore import video
    seen, real = [], video.latent_path
    monkeypatch.setattr(video, "latent_path", lambda *a, **k: seen.append(real(*a, **k)[0]) or seen[-1:] + [None])
    for space, method in (("w", "lerp"), ("z", "slerp")):
        assert sg3(["video", "--network", str(network_file), "--device", "cpu", "--seeds", "0,4", "--space", space,
                    "--frames", "5",
                    "--fps", "5", "--output", str(tmp_path / f"{space}.mp4")]) == 0
        torch.testing.assert_close(seen[-1], X.keyframe_path(G, [0, 4], 5, method=method, space=space))
    assert sg3(["video", "--network", str(network_file), "--device", "cpu", "--seeds", "0,4", "--space", "w",
                "--method", "slerp",
                "--frames", "5", "--fps", "5", "--output", str(tmp_path / "s.mp4")]) == 0
    torch.testing.assert_close(seen[-1], X.keyframe_path(G, [0, 4], 5, method="slerp", space="w"))


def test_videos_are_named_mp4(G, tmp_path):
    """The file is always H.264 in an mp4 container: 'walk.gif' would have been an mp4 named .gif."""
    for name in ("walk.gif", "walk.webm", "walk"):
        with pytest.raises(ValueError, match="suffix .mp4"):
            X.interpolation_video(G, tmp_path / name, kind="loop", n_frames=2, progress=False)
        with pytest.raises(SystemExit, match="^error: .*suffix .mp4"):
            sg3(["video", "--kind", "montage", "--run-dir", str(tmp_path), "--output", str(tmp_path / name)])
    assert not list(tmp_path.iterdir())
    up = X.write_video(tmp_path / "UP.MP4", np.zeros([2, 8, 8, 3], np.uint8), progress=False)  # any case
    assert X.read_video_info(up)[0] == 2


def test_cli_montage_and_device_errors_are_one_line(network_file, tmp_path, monkeypatch):
    with pytest.raises(SystemExit, match="^error: .*nowhere: no such folder"):
        sg3(["video", "--kind", "montage", "--run-dir", str(tmp_path / "nowhere"), "--output", str(tmp_path / "m.mp4")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="^error: .*empty: no fakes"):
        sg3(["video", "--kind", "montage", "--run-dir", str(tmp_path / "empty"), "--output", str(tmp_path / "m.mp4")])
    with pytest.raises(SystemExit, match="^error: --device gpu: not a torch device"):
        sg3(["generate", "--network", str(network_file), "--device", "gpu", "--outdir", str(tmp_path)])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit, match="^error: --device cuda, but torch sees no CUDA GPU"):
        sg3(["generate", "--network", str(network_file), "--device", "cuda", "--outdir", str(tmp_path)])


def test_cli_output_paths_that_cannot_be_written_are_one_line(network_file, tmp_path):
    """A file where --outdir (or --output's folder) should be, or a folder named like the mp4:
    an 'error:' line naming the flag, not a FileExistsError/IsADirectoryError traceback."""
    (tmp_path / "taken").write_text("a file, not a folder")
    (tmp_path / "v.mp4").mkdir()
    run = tmp_path / "run"
    run.mkdir()
    Image.fromarray(np.zeros([16, 16, 3], np.uint8)).save(run / "fakes000000.png")
    cases = ((["generate", "--network", str(network_file), "--seeds", "0", "--outdir", str(tmp_path / "taken")],
              "--outdir: cannot create the folder"),
             (["generate", "--network", str(network_file), "--seeds", "0",
               "--outdir", str(tmp_path / "taken" / "sub")], "--outdir: cannot create the folder"),
             (["video", "--network", str(network_file), "--frames", "2",
               "--output", str(tmp_path / "taken" / "w.mp4")], "--output: cannot create the folder"),
             (["video", "--kind", "montage", "--run-dir", str(run),
               "--output", str(tmp_path / "taken" / "m.mp4")], "--output: cannot create the folder"),
             (["video", "--network", str(network_file), "--frames", "2", "--output", str(tmp_path / "v.mp4")],
              "is a folder"))
    for argv, match in cases:
        with pytest.raises(SystemExit, match=f"^error: .*{match}"):
            sg3(argv)


# ----------------------------------------------------------------------------- grids and walks

def _w_rows(ws):
    return ws.reshape(-1, ws.shape[-1])


@pytest.mark.parametrize("kind", ["keyframes", "walk", "loop", "mix", "translate", "rotate"])
@pytest.mark.parametrize("seeds", [[5], [0, 1], [3, 0, 1]])
def test_grid_cells_share_no_seed(G, kind, seeds):
    """With --seeds 5, loop cell k drew seeds 5+k and 6+k, so neighbouring cells showed the same face at
    different moments (mix: base 5+k, loop 6+k and 7+k). No w of one cell, on any layer or frame, may
    appear in another; cell 0 is still the one-cell video."""
    if kind == "keyframes" and len(seeds) < 2:
        seeds = [5, 6]
    cells = [X.latent_path(G, kind, 8, seeds, cell=k)[0] for k in range(4)]
    for a in range(4):
        for b in range(a + 1, 4):
            gap = torch.cdist(_w_rows(cells[a]), _w_rows(cells[b])).min()
            assert gap > 1e-3, (kind, seeds, a, b)  # the same seed maps to the same w (gap ~1e-6)
    s0 = seeds[0]
    one_cell = {"keyframes": lambda: X.keyframe_path(G, seeds, 8),
                "walk": lambda: X.random_walk(G, 8, seed=s0),
                "loop": lambda: X.circular_loop(G, 8, seeds=(s0, s0 + 1)),
                "mix": lambda: X.style_mix_walk(G, s0, 8, seed=s0 + 1),
                "translate": lambda: X.map_z(G, X.seeds_to_z([s0], G.z_dim)).repeat(8, 1, 1)}
    torch.testing.assert_close(cells[0], one_cell.get(kind, one_cell["translate"])())


def test_grid_cells_shift_by_the_seeds_a_cell_draws(G):
    """Cell k shifts its seeds by k x the range given (as before), or by the seeds a cell draws if more."""
    ws, _ = X.latent_path(G, "loop", 4, [0, 1, 2], cell=2)
    torch.testing.assert_close(ws, X.circular_loop(G, 4, seeds=(6, 7)))
    ws, _ = X.latent_path(G, "mix", 4, [5], cell=1)
    torch.testing.assert_close(ws, X.style_mix_walk(G, 8, 4, seed=9))


def test_cli_video_walk_sigma(network_file, tmp_path, monkeypatch, G):
    """random_walk's sigma had no option: --sigma sets the walk's smoothing width in frames."""
    from sg3lib.explore import video
    seen, real = [], video.latent_path
    monkeypatch.setattr(video, "latent_path", lambda *a, **k: seen.append(real(*a, **k)[0]) or seen[-1:] + [None])
    for sigma in ("2", "0"):
        assert sg3(["video", "--network", str(network_file), "--device", "cpu", "--kind", "walk", "--seeds", "3",
                    "--sigma", sigma, "--frames", "8", "--fps", "8", "--output", str(tmp_path / "w.mp4")]) == 0
        torch.testing.assert_close(seen[-1], X.random_walk(G, 8, seed=3, sigma=float(sigma)))
        assert not torch.allclose(seen[-1], X.random_walk(G, 8, seed=3))  # not the default n/8


def test_a_random_walk_in_w_keeps_the_spread_of_real_ws(G):
    """The W walk smoothed the deviations from its own mean, which took the zero frequency out, and
    rescaled them as white noise: the frames had 0.41 of the spread of real ws at sigma 24 of 96 and
    0.17 at 48 (an extra truncation, nearly the average image for a slow walk)."""
    real = X.map_z(G, torch.randn(4000, G.z_dim, generator=torch.Generator().manual_seed(0))).numpy()
    mean = real.mean(0)
    spread = np.sqrt(((real - mean) ** 2).mean())
    for sigma in (None, 24, 48):
        frames = np.concatenate([X.random_walk(G, 96, seed=s, sigma=sigma, space="w").numpy() for s in range(20)])
        assert 0.8 < np.sqrt(((frames - mean) ** 2).mean()) / spread < 1.1, sigma
    walk = X.random_walk(G, 96, seed=0, sigma=24, space="w", endpoint=True)
    assert torch.allclose(walk[0], walk[-1], atol=1e-6)  # still a loop


def test_random_walk_sigma_must_be_a_width(G):
    """sigma=nan smoothed every frame into nan (a grey video, reported as written)."""
    for sigma in (float("nan"), float("inf"), -1, "2", True):
        with pytest.raises(ValueError, match="sigma="):
            X.random_walk(G, 4, sigma=sigma)
    assert X.random_walk(G, 4, sigma=np.float32(1.5)).isfinite().all()


def test_cli_generate_refuses_a_transform_on_stylegan2_before_writing(tmp_path):
    """--rotate on a StyleGAN2 network made the output folder and started a progress bar, then failed with
    the library's 'translate/rotate needs ...' (not the flags' names)."""
    from sg3lib.checkpoint import save_snapshot, snapshot_from_networks
    sg2 = save_snapshot(tmp_path / "sg2.pt", snapshot_from_networks({"G_ema": make_G("sg2")}))
    for opt in (["--rotate", "30"], ["--translate", "0.1,0"]):
        with pytest.raises(SystemExit, match="^error: --translate and --rotate need a StyleGAN3 network"):
            sg3(["generate", "--network", str(sg2), *opt, "--outdir", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_cli_generate_names_the_class_of_a_conditional_network(tmp_path):
    """Two classes of one seed into one --outdir: both kept (seed0000.png for each overwrote the first),
    each the image of its class; an unconditional network keeps the official seedNNNN.png."""
    from sg3lib.checkpoint import save_snapshot, snapshot_from_networks
    Gc = make_G(c_dim=3)
    net = save_snapshot(tmp_path / "c.pt", snapshot_from_networks({"G_ema": Gc}))
    out = tmp_path / "out"
    for c in ("0", "2"):
        assert sg3(["generate", "--network", str(net), "--device", "cpu", "--seeds", "0", "--class", c,
                    "--outdir", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["seed0000-class0.png", "seed0000-class2.png"]
    for c in (0, 2):
        want = X.generate_arrays(Gc, [0], class_idx=c, progress=False)[0]
        assert np.array_equal(np.asarray(Image.open(out / f"seed0000-class{c}.png")), want)
    assert not np.array_equal(*(np.asarray(Image.open(out / f"seed0000-class{c}.png")) for c in (0, 2)))
    for kind, name in (("psi-grid", "psi_grid"), ("mix-grid", "style_mix_grid")):
        for c in ("0", "2"):
            grid = ["--psis", "1,0"] if kind == "psi-grid" else ["--col-seeds", "1"]
            assert sg3(["generate", "--network", str(net), "--device", "cpu", "--kind", kind, "--seeds", "0",
                        *grid, "--class", c, "--outdir", str(out / kind)]) == 0
        assert sorted(p.name for p in (out / kind).iterdir()) == [f"{name}-class0.png", f"{name}-class2.png"]


def test_video_of_a_grey_alpha_network_is_grey(tmp_path):
    """A 2-channel (grey + alpha) network's frames went to the encoder as 2 channels read as RGB: the
    video was noise. Its frames show the grey channel, as grids do."""
    G2 = make_G(img_channels=2)
    path = X.interpolation_video(G2, tmp_path / "la.mp4", kind="loop", n_frames=3, progress=False)
    import imageio_ffmpeg
    gen = imageio_ffmpeg.read_frames(str(path))
    w, h = next(gen)["size"]
    first = np.frombuffer(next(gen), np.uint8).reshape(h, w, 3).astype(int)
    grey = X.generate_arrays(G2, [0], progress=False)[0, :, :, :1].repeat(3, axis=-1)
    assert np.abs(first - grey).mean() < 6  # H.264 loss only


def test_write_video_of_a_callable_needs_a_frame_count(tmp_path):
    """A callable without n_frames was refused as 'no frames to write' (it has frames: it lacked their
    count); n_frames=-2 or 2.5 reached moviepy as a negative or fractional length."""
    frame = lambda i: np.zeros([8, 8, 3], np.uint8)  # noqa: E731
    for n, match in ((None, "n_frames=None"), (-2, "n_frames=-2"), (2.5, "n_frames=2.5"), (0, "n_frames=0")):
        with pytest.raises(ValueError, match=match):
            X.write_video(tmp_path / "c.mp4", frame, n_frames=n, progress=False)
    assert not list(tmp_path.iterdir())


def test_a_style_mix_loop_refuses_walk_options_it_ignores(G):
    """style_mix_walk(walk='loop', sigma=4) drew the same loop as without sigma: the options go to the
    random walk only, and a loop says so instead of ignoring them."""
    with pytest.raises(ValueError, match="sigma.*walk='random'"):
        X.style_mix_walk(G, 0, 4, walk="loop", sigma=4)
    assert not torch.allclose(X.style_mix_walk(G, 0, 8, walk="random", sigma=1),
                              X.style_mix_walk(G, 0, 8, walk="random", sigma=4))


def _decoded(path):
    import imageio_ffmpeg
    gen = imageio_ffmpeg.read_frames(str(path))
    meta = next(gen)
    return [np.frombuffer(f, np.uint8).reshape(meta["size"][1], meta["size"][0], 3).astype(int) for f in gen]


@pytest.mark.parametrize("fps,n", [(25, 58), (29.97, 64), (23.976, 64)])
def test_each_frame_is_written_once_in_order(tmp_path, fps, n):
    """Frame i of the video is image i: none doubled or dropped where the encoder's time i / fps,
    times fps, falls just below i (at 25 fps frame 29 is asked for at t = 1.16, and 1.16 * 25 is
    28.999999999999996; at 29.97 frame 61, at 23.976 frame 29). The encoder emits int(duration * fps)
    frames, and 58 / 25 * 25 is below 58 too: the last frame is not lost."""
    levels = np.arange(n) * 3 + 20  # (a doubled frame is 3 off)
    path = X.write_video(tmp_path / "v.mp4", lambda i: np.full([16, 16, 3], levels[i], np.uint8), fps=fps,
                         n_frames=n, progress=False)
    means = [f.mean() for f in _decoded(path)]
    assert len(means) == n
    assert np.abs(np.array(means) - levels).max() < 1.5, np.round(means).astype(int).tolist()


def test_write_video_pads_an_odd_height_of_a_wide_frame(tmp_path):
    path = X.write_video(tmp_path / "wide.mp4", np.full([3, 15, 20, 3], 99, np.uint8), fps=5, progress=False)
    assert X.read_video_info(path)[:2] == (3, (20, 16))
    path = X.write_video(tmp_path / "tall.mp4", np.full([3, 20, 15, 3], 99, np.uint8), fps=5, progress=False)
    assert X.read_video_info(path)[:2] == (3, (16, 20))


def test_a_loop_from_the_last_seed_names_the_seed_it_would_draw(G):
    """loop draws s0 and s0 + 1, mix s0..s0 + 2: from 2**32 - 1 these pass the last seed, and the
    error names the kind and the seed (not an anonymous seed range error from deep inside)."""
    for kind, top in (("loop", 2 ** 32), ("mix", 2 ** 32 + 1)):
        with pytest.raises(ValueError, match=f"kind='{kind}' draws seeds up to {top}"):
            X.latent_path(G, kind, 4, [2 ** 32 - 1])


def test_video_frames_are_rendered_in_batches(G, tmp_path, monkeypatch):
    """batch_size frames of every cell per forward pass, each frame once."""
    from sg3lib.explore import video
    calls = []
    real = video.synthesize
    monkeypatch.setattr(video, "synthesize", lambda G, ws, *a, **k: calls.append(len(ws)) or real(G, ws, *a, **k))
    X.interpolation_video(G, tmp_path / "b.mp4", kind="loop", grid=2, n_frames=10, batch_size=4, progress=False)
    assert calls == [4, 4, 4, 4, 2, 2]  # two cells x frames 0-3, 4-7, 8-9


def test_an_odd_frame_is_padded_with_its_edge_colour(tmp_path):
    """The pixel row and column added for H.264's even sizes repeat the edge, not a black line."""
    path = X.write_video(tmp_path / "odd.mp4", np.full([2, 15, 21, 3], 230, np.uint8), fps=5, progress=False)
    first = _decoded(path)[0]
    assert first.shape == (16, 22, 3) and first[-1].min() > 200 and first[:, -1].min() > 200


def test_write_video_checks_its_own_rate_quality_and_frames(tmp_path):
    """write_video is public: its fps, crf and frames are checked there too, not only by the callers."""
    frames = np.zeros([2, 8, 8, 3], np.uint8)
    for kwargs, match in ((dict(fps=True), "fps=True"), (dict(fps=float("inf")), "fps=inf"),
                          (dict(crf=52), "crf=52"), (dict(frames=[]), "no frames to write")):
        with pytest.raises(ValueError, match=match):
            X.write_video(tmp_path / "w.mp4", **{"frames": frames, "fps": 10, **kwargs}, progress=False)
    assert not list(tmp_path.iterdir())
    assert X.read_video_info(X.write_video(tmp_path / "w.mp4", frames, fps=10, crf=51, progress=False))[0] == 2


def test_the_quality_reaches_the_encoder(tmp_path):
    noise = np.random.default_rng(0).integers(0, 256, [4, 32, 32, 3], dtype=np.uint8)
    lossless = X.write_video(tmp_path / "q0.mp4", noise, fps=10, crf=0, progress=False).stat().st_size
    rough = X.write_video(tmp_path / "q51.mp4", noise, fps=10, crf=51, progress=False).stat().st_size
    assert rough * 4 < lossless


def test_grey_frames_of_two_sizes_are_named_in_the_error(tmp_path):
    """A 2-D (grey) frame counts as 1 channel in the size check (its message read a third axis it lacks)."""
    with pytest.raises(ValueError, match=r"frame 1 is 10x10 with 1 channel\(s\), frame 0 8x8 with 1"):
        X.write_video(tmp_path / "g.mp4", [np.zeros([8, 8], np.uint8), np.zeros([10, 10], np.uint8)], fps=10,
                      progress=False)


def test_the_progress_bar_counts_each_frame_once(tmp_path, monkeypatch):
    """moviepy draws frame 0 once more to learn the size: the bar still ends at n of n."""
    from sg3lib.explore import video
    bars = []

    class Bar:
        def __init__(self, total, **kwargs):
            self.total, self.n = total, 0
            bars.append(self)

        def update(self, k):
            self.n += k

        def close(self):
            pass
    monkeypatch.setattr(video, "tqdm", Bar)
    X.write_video(tmp_path / "b.mp4", np.zeros([5, 8, 8, 3], np.uint8), fps=10)
    assert [(b.n, b.total) for b in bars] == [(5, 5)]


@pytest.mark.parametrize("kind,option", [("walk", {"amount": 0.3}), ("loop", {"amount": 0.3})])
def test_amount_is_for_the_transform_videos_only(G, kind, option):
    with pytest.raises(ValueError, match=f"amount=0.3 applies to kind 'translate' and 'rotate' only, not '{kind}'"):
        X.latent_path(G, kind, 4, **option)


def test_an_unknown_kind_is_named_before_its_options(G):
    with pytest.raises(ValueError, match="kind='spin': use one of keyframes, walk"):
        X.latent_path(G, "spin", 4, amount=0.3)


def test_empty_layers_for_a_mix_video_are_refused_not_read_as_fine(G):
    for layers in ("", ()):
        with pytest.raises(ValueError, match=re.escape(f"layers={layers!r}: use coarse, middle, fine")):
            X.latent_path(G, "mix", 4, layers=layers)


def test_a_video_named_other_than_mp4_is_refused_before_any_path_is_drawn(G, tmp_path, monkeypatch):
    from sg3lib.explore import video
    monkeypatch.setattr(video, "latent_path", lambda *a, **k: pytest.fail("drew a path for a .gif"))
    with pytest.raises(ValueError, match=r"v\.gif: videos are written as H\.264 mp4"):
        X.interpolation_video(G, tmp_path / "v.gif", n_frames=3, progress=False)


def test_the_frame_count_is_fps_times_duration_rounded(G, tmp_path):
    path = X.interpolation_video(G, tmp_path / "r.mp4", kind="loop", fps=10, duration=0.36, progress=False)
    assert X.read_video_info(path)[0] == 4  # 3.6 frames: 4, not 3


def test_only_the_batch_being_encoded_is_kept_in_memory(G, tmp_path, monkeypatch):
    """A long video holds one batch of rendered frames, not every frame so far: a frame asked for again
    after its batch was passed is rendered again."""
    from sg3lib.explore import video
    calls, captured = [], {}
    real = video.synthesize
    monkeypatch.setattr(video, "synthesize", lambda G, ws, *a, **k: calls.append(len(ws)) or real(G, ws, *a, **k))
    monkeypatch.setattr(video, "write_video", lambda path, frame, *a, **k: captured.setdefault("frame", frame))
    X.interpolation_video(G, tmp_path / "m.mp4", kind="loop", n_frames=8, batch_size=4, progress=False)
    frame = captured["frame"]
    first = frame(0)
    frame(1), frame(4), frame(5)
    assert calls == [4, 4]
    assert np.array_equal(frame(0), first) and calls == [4, 4, 4]


def test_a_montage_scales_every_grid_to_the_first_and_keeps_two_pixels(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    Image.fromarray(np.full([3, 400, 3], 50, np.uint8)).save(run / "fakes000000.png")
    Image.fromarray(np.full([6, 800, 3], 90, np.uint8)).save(run / "fakes000040.png")  # a larger grid
    path, n, _ = X.training_montage(run, tmp_path / "m.mp4", max_side=100, label=False, progress=False)
    assert n == 2 and X.read_video_info(path)[:2] == (2, (100, 2))
    with pytest.raises(ValueError, match="max_side=1"):
        X.training_montage(run, tmp_path / "m.mp4", max_side=1)


def test_montage_frames_are_labelled_with_kimg_or_the_grid_name(tmp_path, monkeypatch):
    from PIL import ImageDraw
    run = tmp_path / "run"
    run.mkdir()
    for name in ("fakes_init.png", "fakes000040.png", "fakes-000000048.png", "fakes-init.png"):
        Image.fromarray(np.zeros([64, 64, 3], np.uint8)).save(run / name)
    texts = []
    real = ImageDraw.ImageDraw.text
    monkeypatch.setattr(ImageDraw.ImageDraw, "text", lambda self, xy, text, *a, **k: texts.append(text)
                        or real(self, xy, text, *a, **k))
    X.training_montage(run, tmp_path / "m.mp4", progress=False)
    assert texts == ["fakes-init", "fakes_init", "kimg 0.048", "kimg 40"]


def test_a_montage_reports_what_it_skipped_and_refuses_a_run_of_damaged_grids(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    Image.fromarray(np.zeros([16, 16, 3], np.uint8)).save(run / "fakes000000.png")
    (run / "fakes000040.png").write_bytes(b"not a png")
    X.training_montage(run, tmp_path / "m.mp4", progress=False)
    assert "training_montage: skipped 1 unreadable file(s): fakes000040.png (UnidentifiedImageError)" \
        in capsys.readouterr().out
    (run / "fakes000000.png").write_bytes(b"cut")
    with pytest.raises(ValueError, match=r"none of the 2 fakes\*\.png files could be read"):
        X.training_montage(run, tmp_path / "n.mp4", progress=False)


def test_cli_video_hands_its_options_to_interpolation_video(network_file, tmp_path, monkeypatch, G):
    from sg3lib.explore import video
    seen = {}
    monkeypatch.setattr(video, "interpolation_video", lambda G, path, **kw: seen.update(kw, G=G) or path)
    assert sg3(["video", "--network", str(network_file), "--device", "cpu", "--kind", "walk", "--seeds", "3-5",
                "--frames", "6", "--output", str(tmp_path / "v.mp4")]) == 0
    assert seen["fps"] == 30 and seen["seeds"] == [3, 4, 5] and seen["n_frames"] == 6 and seen["kind"] == "walk"
    assert seen["class_idx"] is None
    assert all(torch.equal(a, b) for a, b in zip(seen["G"].state_dict().values(), G.state_dict().values()))
    assert sg3(["video", "--network", str(network_file), "--device", "cpu", "--fps", "12", "--frames", "6",
                "--output", str(tmp_path / "v.mp4")]) == 0 and seen["fps"] == 12


def test_cli_refusals_come_before_the_work_they_would_waste(tmp_path):
    """What the command line alone shows wrong is said first: not a network load, a folder made,
    or a missing-file error for another option."""
    with pytest.raises(SystemExit, match="^error: --network is required"):
        sg3(["video", "--output", str(tmp_path / "v.mp4")])
    with pytest.raises(SystemExit, match=r"v.gif: videos are written as H.264 mp4; give the file the suffix .mp4"):
        sg3(["video", "--network", str(tmp_path / "missing.pt"), "--output", str(tmp_path / "v.gif")])
    (tmp_path / "afile").write_text("")
    with pytest.raises(SystemExit) as e:  # the missing run folder, not the output folder it could not make
        sg3(["video", "--kind", "montage", "--run-dir", str(tmp_path / "no-run"),
             "--output", str(tmp_path / "afile" / "m.mp4")])
    assert "no-run" in str(e.value.code) and "--output" not in str(e.value.code)


def test_cli_class_must_be_one_of_the_networks():
    from sg3lib.explore.cli import _check_class
    G = SimpleNamespace(c_dim=3)
    _check_class(G, 2)
    with pytest.raises(SystemExit, match=r"--class 3 is out of range: this network has classes 0..2"):
        _check_class(G, 3)
