"""Training: exact resume, crash safety, snapshot format, bad input, transfer learning.

Tiny networks on 16 px images, deterministic mode, a few steps each (seconds on a CPU)."""
import io
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import interrupt_group_when, open_in_this_process, start_in_a_session
from sg3lib.train import TrainError, train

ROOT = Path(__file__).resolve().parents[1]

# StyleGAN2 at 16 px with 16 channels: ~1 s per step on one core.
TINY = dict(cfg="stylegan2", batch=8, batch_gpu=4, tick=0.016, snap=1, cbase=256, cmax=16, map=2,
            z_dim=16, w_dim=16, workers=0, deterministic=True, gamma=1.0, p=0.2, ada_interval=3,
            ada_kimg=0.1, D_reg_interval=4, G_reg_interval=2, progress=False)


def make_zip(path, n=16, res=16, sizes=None, seed=0):
    """A dataset zip in the official format: PNGs named 00000/img00000000.png."""
    from PIL import Image
    rng = np.random.RandomState(seed)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as z:
        for i in range(n):
            r = sizes[i] if sizes else res
            yy, xx = np.mgrid[:r, :r] / r
            a = np.stack([np.sin(xx * 6 + rng.rand() * 6), np.cos(yy * 5 + rng.rand() * 6), xx * yy], -1)
            buf = io.BytesIO()
            Image.fromarray(((a * 0.5 + 0.5) * 255).astype(np.uint8)).save(buf, format="PNG")
            z.writestr(f"{i // 1000:05d}/img{i:08d}.png", buf.getvalue())
    return str(path)


def snaps(run_dir):
    return sorted(p.name for p in Path(run_dir).glob("snapshot-*.pt"))


def load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def assert_same_state(a, b, exact=True, atol=0.0):
    """Recursive equality of nested dicts/lists of tensors and numbers."""
    if isinstance(a, dict):
        assert set(a) == set(b), set(a) ^ set(b)
        for k in a:
            assert_same_state(a[k], b[k], exact, atol)
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same_state(x, y, exact, atol)
    elif isinstance(a, torch.Tensor):
        if exact:
            assert torch.equal(a, b)
        else:
            torch.testing.assert_close(a, b, rtol=0, atol=atol)
    else:
        assert a == b or (exact is False and abs(a - b) <= atol), (a, b)


def test_resume_is_exact(tmp_path):
    """6 steps straight == 3 steps, stop, resume latest (only kimg changed), 3 more: bit-identical."""
    import json
    data = make_zip(tmp_path / "d.zip")
    a, b = tmp_path / "a", tmp_path / "b"
    # 1 step per tick, snapshot every 3 steps; ADA updates every 2 steps, so the snapshot after
    # step 3 holds a half-accumulated r_t sum that the resumed run must continue.
    opts = dict(TINY, tick=0.008, snap=3, ada_interval=2)
    train(data, a, kimg=0.048, **opts)
    train(data, b, kimg=0.024, **opts)
    assert snaps(b) == ["snapshot-000000024.pt"]
    assert load(b / "snapshot-000000024.pt")["training_state"]["ada"]["count"] == 8  # mid-interval
    out = train(data, b, resume="latest", kimg=0.048, **opts)
    assert out["cur_nimg"] == 48 and out["step"] == 6
    sa, sb = load(a / "snapshot-000000048.pt"), load(b / "snapshot-000000048.pt")
    assert_same_state(sa["networks"], sb["networks"])
    ta, tb = sa["training_state"], sb["training_state"]
    for key in ("opt_G", "opt_D", "ada", "pl_mean", "cur_nimg", "cur_tick", "step", "data"):
        assert_same_state(ta[key], tb[key])
    assert len(ta["opt_D"]["state"]) > 0 and ta["step"] == 6
    # Training happened: weights moved from the first snapshot's.
    s3 = load(a / "snapshot-000000024.pt")["networks"]["G"]["state_dict"]
    assert not all(torch.equal(v, s3[k]) for k, v in sa["networks"]["G"]["state_dict"].items())
    assert (a / "fakes-init.png").is_file() and (a / "fakes-000000048.png").is_file()
    # stats.jsonl: one line per tick in both runs, same values; ADA moved p (the check is not vacuous).
    ra = [json.loads(line) for line in open(a / "stats.jsonl")]
    rb = [json.loads(line) for line in open(b / "stats.jsonl")]
    assert [r["kimg"] for r in ra] == [r["kimg"] for r in rb] == [0.008, 0.016, 0.024, 0.032, 0.04, 0.048]
    assert [r["ada_p"] for r in ra] == [r["ada_p"] for r in rb]
    assert len({r["ada_p"] for r in ra}) > 1
    assert [r["loss_D"] for r in ra] == [r["loss_D"] for r in rb]


def test_resume_caps_the_stored_workers_at_this_machines_cpus(tmp_path, monkeypatch):
    """--workers is the machine's, not the run's: a run made with 12 loader processes on a workstation
    and resumed on Colab's 2 CPUs started 12 (torch warns, memory runs out). An explicit --workers wins."""
    from sg3lib.train import loop
    data, run = make_zip(tmp_path / "d.zip"), tmp_path / "r"
    train(data, run, kimg=0.008, **dict(TINY, tick=0.008))
    snap = run / "snapshot-000000008.pt"
    s = load(snap)
    s["meta"]["config"]["workers"] = 12  # as a workstation's run stored it
    torch.save(s, snap)
    monkeypatch.setattr(loop, "_cpus", lambda: 1)
    opts = {k: v for k, v in TINY.items() if k != "workers"}
    train(data, run, resume="latest", kimg=0.016, **dict(opts, tick=0.008))
    assert load(run / "snapshot-000000016.pt")["meta"]["config"]["workers"] == 1
    train(data, run, resume="latest", kimg=0.024, workers=0, **dict(opts, tick=0.008))
    assert load(run / "snapshot-000000024.pt")["meta"]["config"]["workers"] == 0


def test_resume_on_a_dataset_of_another_size_says_the_data_order_changed(tmp_path):
    """The data order is a permutation of the dataset's length, stored in the snapshot: resuming on a
    dataset that gained images (or with --mirror toggled) continued silently in another order."""
    import warnings
    data, run = make_zip(tmp_path / "d.zip"), tmp_path / "r"
    opts = dict(TINY, tick=0.008)
    train(data, run, kimg=0.008, **opts)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # the same dataset: nothing to say
        train(data, run, resume="latest", kimg=0.016, **opts)
    make_zip(tmp_path / "d.zip", n=24)  # the user added images
    with pytest.warns(UserWarning, match=r"has 24 images .* where the run had 16"):
        train(data, run, resume="latest", kimg=0.024, **opts)


def test_snapshot_loads_weights_only(tmp_path):
    data = make_zip(tmp_path / "d.zip")
    train(data, tmp_path / "r", kimg=0.016, keep_snapshots=1, **TINY)
    (path,) = list((tmp_path / "r").glob("snapshot-*.pt"))
    s = torch.load(path, weights_only=True)  # raises on any pickled class
    assert set(s["networks"]) == {"G", "D", "G_ema"}
    ts = s["training_state"]
    assert ts["cur_nimg"] == 16 and ts["step"] == 2 and ts["cur_tick"] == 1
    assert set(ts["rng"]) >= {"torch", "numpy", "python"}
    assert ts["data"]["seed"] == 0 and ts["data"]["position"] == 16
    assert isinstance(ts["opt_G"]["state"][0]["exp_avg"], torch.Tensor)
    assert s["meta"]["config"]["cfg"] == "stylegan2" and s["meta"]["config"]["cmax"] == 16


def test_keep_last_snapshots(tmp_path):
    data = make_zip(tmp_path / "d.zip")
    train(data, tmp_path / "r", kimg=0.024, keep_snapshots=2, **dict(TINY, tick=0.008))
    assert snaps(tmp_path / "r") == ["snapshot-000000016.pt", "snapshot-000000024.pt"]


def kill_script(stop_at, options):
    """A training script that stops (for a SIGKILL) just before renaming `stop_at` into place:
    the file is then written in full to its temporary name. sys.argv: data, run, marker, tests."""
    return textwrap.dedent(f"""
        import os, sys, time, torch
        torch.set_num_threads(1)
        real_replace = os.replace
        def slow_replace(src, dst, *a, **k):
            # Test hook (this process only): stop between writing {stop_at}'s temporary file and
            # renaming it, so that the parent can SIGKILL us there.
            if os.path.basename(str(dst)) == {stop_at!r}:
                open(sys.argv[3], 'w').close()
                time.sleep(600)
            return real_replace(src, dst, *a, **k)
        os.replace = slow_replace
        sys.path.insert(0, sys.argv[4])
        from test_train import TINY, GRID_KILL_OPTS
        from sg3lib.train import train
        train(sys.argv[1], sys.argv[2], **{options})
    """)


def train_until_killed(tmp_path, data, run, script_text, what):
    """Run script_text in a subprocess (one thread, as the `one_thread` fixture here) and SIGKILL it
    once it is stopped at its hook."""
    marker, script = tmp_path / "writing", tmp_path / "kill_me.py"
    script.write_text(script_text)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, str(script), data, str(run), str(marker), str(ROOT / "tests")],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 300  # a hang guard, not a speed check: the run takes seconds
    while not marker.exists():
        if proc.poll() is not None:
            pytest.fail("training subprocess ended early:\n" + proc.stdout.read().decode())
        if time.time() > deadline:
            proc.kill()  # leave no orphan training behind
            pytest.fail(f"training subprocess never reached {what}")
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.fixture
def live_process():
    """Another process that is alive for the test (killed at its end, if the test has not)."""
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield other
    other.kill()
    other.wait()


@pytest.fixture
def one_thread():
    """This process trains with one thread, as the subprocess does (OMP_NUM_THREADS=1), so their
    runs compare bit for bit outside pytest-xdist too (conftest sets its workers to one thread)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_sigkill_during_snapshot_write_resumes_from_previous(tmp_path, capsys, one_thread):
    data = make_zip(tmp_path / "d.zip")
    run = tmp_path / "run"
    train_until_killed(tmp_path, data, run, kill_script("snapshot-000000032.pt", "dict(TINY, kimg=0.064)"),
                       "the second snapshot")
    partial = list(run.glob(".snapshot-000000032.pt.tmp-*"))
    assert len(partial) == 1 and partial[0].stat().st_size > 0  # a half-finished save on disk
    assert snaps(run) == ["snapshot-000000016.pt"]
    out = train(data, run, resume="latest", kimg=0.032, **TINY)
    printed = capsys.readouterr().out
    assert "resuming from" in printed and "snapshot-000000016.pt" in printed
    assert not list(run.glob(".snapshot-*.tmp-*")), "partial file was not removed"
    assert out["cur_nimg"] == 32 and snaps(run) == ["snapshot-000000016.pt", "snapshot-000000032.pt"]
    # ... and continues exactly: equal to a run that was never killed.
    train(data, tmp_path / "straight", kimg=0.032, **TINY)
    a, b = load(run / "snapshot-000000032.pt"), load(tmp_path / "straight" / "snapshot-000000032.pt")
    assert_same_state(a["networks"], b["networks"])
    assert_same_state(a["training_state"]["opt_D"], b["training_state"]["opt_D"])


# One step per tick, a snapshot every 2; ADA updates every 2 steps, so the first tick after the
# resume at 16 images has no update of its own (its stats line reports the r_t of before).
GRID_KILL_OPTS = dict(tick=0.008, snap=2, ada_interval=2)
TIMING = ("sec_per_tick", "sec_per_kimg", "time", "mem_peak_gb")


def stats_lines(run_dir):
    """stats.jsonl without the timings (which differ between runs)."""
    import json
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in open(run_dir / "stats.jsonl")]


def test_sigkill_between_snapshot_and_its_grid_loses_nothing(tmp_path, one_thread):
    """Killed after a snapshot, while writing its fakes grid: the resumed run leaves no temporary,
    writes the missing grid, and ends with the files, stats lines and networks of a straight run."""
    data = make_zip(tmp_path / "d.zip")
    run = tmp_path / "run"
    train_until_killed(tmp_path, data, run,
                       kill_script("fakes-000000016.png", "dict(TINY, kimg=0.032, **GRID_KILL_OPTS)"), "the first grid")
    assert snaps(run) == ["snapshot-000000016.pt"] and not (run / "fakes-000000016.png").exists()
    train(data, run, resume="latest", kimg=0.032, **dict(TINY, **GRID_KILL_OPTS))
    straight = tmp_path / "straight"
    train(data, straight, kimg=0.032, **dict(TINY, **GRID_KILL_OPTS))
    assert sorted(p.name for p in run.iterdir()) == sorted(p.name for p in straight.iterdir())
    for grid in straight.glob("fakes-*.png"):
        assert (run / grid.name).read_bytes() == grid.read_bytes(), grid.name
    assert stats_lines(run) == stats_lines(straight)
    assert any("ada_rt" in r for r in stats_lines(run))
    a, b = load(run / "snapshot-000000032.pt"), load(straight / "snapshot-000000032.pt")
    assert_same_state(a["networks"], b["networks"])
    assert_same_state(a["training_state"]["ada"], b["training_state"]["ada"])


def test_extended_run_keeps_the_tick_and_snapshot_cadence(tmp_path):
    """A run that ended mid-tick and is extended (--kimg larger) has its ticks and snapshots at the
    multiples a run with the larger --kimg from the start has; the short tick's line is replaced."""
    data = make_zip(tmp_path / "d.zip")
    opts = dict(TINY, tick=0.016, snap=2, keep_snapshots=0)  # 2 steps per tick, snapshot every 2 ticks
    train(data, tmp_path / "straight", kimg=0.048, **opts)
    run = tmp_path / "run"
    train(data, run, kimg=0.024, **opts)  # ends after 3 steps, in the middle of tick 2
    assert [(r["kimg"], r["tick"]) for r in stats_lines(run)] == [(0.016, 1), (0.024, 2)]
    train(data, run, resume="latest", kimg=0.048, **opts)
    assert stats_lines(run) == stats_lines(tmp_path / "straight")
    assert [(r["kimg"], r["tick"]) for r in stats_lines(run)] == [(0.016, 1), (0.032, 2), (0.048, 3)]
    assert snaps(tmp_path / "straight") == ["snapshot-000000032.pt", "snapshot-000000048.pt"]
    assert snaps(run) == ["snapshot-000000024.pt", "snapshot-000000032.pt", "snapshot-000000048.pt"]
    a, b = load(run / "snapshot-000000048.pt"), load(tmp_path / "straight" / "snapshot-000000048.pt")
    assert_same_state(a["networks"], b["networks"])
    for key in ("cur_tick", "tick_start_nimg", "tick_sums", "opt_G", "ada"):
        assert_same_state(a["training_state"][key], b["training_state"][key])


def test_continuing_an_older_snapshot_in_its_own_folder_is_refused(tmp_path):
    """The newer snapshots would outlive the continuation: pruning would delete the new ones and
    --resume latest would go back to the old history."""
    data = make_zip(tmp_path / "d.zip")
    run = tmp_path / "run"
    train(data, run, kimg=0.024, **dict(TINY, tick=0.008, keep_snapshots=2))
    assert snaps(run) == ["snapshot-000000016.pt", "snapshot-000000024.pt"]
    with pytest.raises(TrainError, match="holds snapshot-000000024.pt, which is not older than.*another --outdir"):
        train(data, run, resume=str(run / "snapshot-000000016.pt"), kimg=0.032, **dict(TINY, tick=0.008))
    assert snaps(run) == ["snapshot-000000016.pt", "snapshot-000000024.pt"]
    # The newest one by its path, or an older one into a folder of its own, continues.
    out = train(data, tmp_path / "branch", resume=str(run / "snapshot-000000016.pt"), kimg=0.024,
                **dict(TINY, tick=0.008))
    assert out["cur_nimg"] == 24
    assert train(data, run, resume=str(run / "snapshot-000000024.pt"), kimg=0.032,
                 **dict(TINY, tick=0.008))["cur_nimg"] == 32


def test_disk_full_during_snapshot_keeps_previous(tmp_path, monkeypatch):
    data = make_zip(tmp_path / "d.zip")
    run = tmp_path / "run"
    train(data, run, kimg=0.016, **TINY)
    before = (run / "snapshot-000000016.pt").read_bytes()
    real_save = torch.save

    def full_disk(obj, f, *a, **k):
        f.write(b"PK\x03\x04 partial data")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(TrainError, match="No space left on device.*previous snapshot is kept"):
        train(data, run, resume="latest", kimg=0.032, **TINY)
    monkeypatch.setattr(torch, "save", real_save)
    assert snaps(run) == ["snapshot-000000016.pt"]
    assert (run / "snapshot-000000016.pt").read_bytes() == before
    assert not list(run.glob(".snapshot-*"))


def test_a_step_runs_its_phases_on_the_papers_schedule(tmp_path, monkeypatch):
    """Lazy regularisation (StyleGAN2 sec. 3.1): path length on the steps 0, G_reg_interval, ... and R1 on
    0, D_reg_interval, ..., each weighted by its interval; ADA's r_t is the mean sign(D(real)) of its
    interval's images; G's running statistics come from stats_batch images once per step; G_ema is a
    copy of G after the first step (the ramp-up's half-life is images seen before it: 0)."""
    from sg3lib.train import loss as loss_mod
    calls = {"G_pl": [], "D_r1": [], "stats": [], "signs": []}  # (step, gain): the step from update_stats' count
    orig = {k: getattr(loss_mod.Phases, k) for k in ("G_pl", "D_r1", "update_stats", "D_main")}

    def G_pl(self, r, gain, pl_noise):
        calls["G_pl"].append((len(calls["stats"]), gain))
        return orig["G_pl"](self, r, gain, pl_noise)

    def D_r1(self, r, real, real_c, sigma, p, gain):
        calls["D_r1"].append((len(calls["stats"]) - 1, gain))  # (after this step's update_stats)
        return orig["D_r1"](self, r, real, real_c, sigma, p, gain)

    def update_stats(self, r, n):
        calls["stats"].append(n)
        return orig["update_stats"](self, r, n)

    def D_main(self, r, real, real_c, sigma, p):
        loss, st = orig["D_main"](self, r, real, real_c, sigma, p)
        calls["signs"].append((st["real_sign"].item(), real.shape[0]))
        return loss, st

    for name, fn in (("G_pl", G_pl), ("D_r1", D_r1), ("update_stats", update_stats), ("D_main", D_main)):
        monkeypatch.setattr(loss_mod.Phases, name, fn)
    data = make_zip(tmp_path / "d.zip")
    opts = dict(TINY, tick=0.008, snap=1, pl_weight=2.0, stats_batch=3, ada_interval=3)
    train(data, tmp_path / "r", kimg=0.040, **opts)  # 5 steps of 8, 2 rounds of 4 each
    assert calls["stats"] == [3] * 5
    assert calls["G_pl"] == [(s, 2) for s in (0, 0, 2, 2, 4, 4)]  # (each step's 2 rounds)
    assert calls["D_r1"] == [(s, 4) for s in (0, 0, 4, 4)]
    signs = calls["signs"][:6]  # ADA's first update, after step 2: 3 steps of 2 rounds
    assert sum(n for _, n in signs) == 24
    ada = load(tmp_path / "r" / "snapshot-000000024.pt")["training_state"]["ada"]
    assert ada["rt"] == pytest.approx(sum(v for v, _ in signs) / 24)
    first = load(tmp_path / "r" / "snapshot-000000008.pt")["networks"]
    for k, v in first["G"]["state_dict"].items():
        assert torch.equal(first["G_ema"]["state_dict"][k], v), k


def test_changed_architecture_on_resume_is_a_clear_error(tmp_path):
    data = make_zip(tmp_path / "d.zip")
    train(data, tmp_path / "r", kimg=0.016, **TINY)
    opts = dict(TINY, cmax=8, map=3)
    with pytest.raises(TrainError) as e:
        train(data, tmp_path / "r", resume="latest", kimg=0.032, **opts)
    msg = str(e.value)
    assert "cmax: 16 -> 8" in msg and "map: 2 -> 3" in msg and "different architecture" in msg


def test_bad_inputs_are_clear_errors(tmp_path):
    mixed = make_zip(tmp_path / "mixed.zip", n=4, sizes=[16, 16, 32, 16])
    with pytest.raises(TrainError, match=r"00000/img00000002.png is 32x32"):
        train(mixed, tmp_path / "r1", kimg=0.008, **TINY)
    odd = make_zip(tmp_path / "odd.zip", n=4, res=24)
    with pytest.raises(TrainError, match="resolution 24 is not a power of two"):
        train(odd, tmp_path / "r2", kimg=0.008, **TINY)
    good = make_zip(tmp_path / "d.zip", n=4)
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(TrainError, match="cannot create the output folder .*a_file is a file"):
        train(good, blocker / "run", kimg=0.008, **TINY)
    with pytest.raises(TrainError, match="--outdir .*a_file is a file, not a folder"):
        train(good, blocker, kimg=0.008, **TINY)
    with pytest.raises(TrainError, match="batch-gpu 4 must be a multiple of the minibatch-stddev group 3"):
        train(good, tmp_path / "r3", kimg=0.008, **dict(TINY, mbstd_group=3))
    with pytest.raises(TrainError, match="dataset not found"):
        train(tmp_path / "nope.zip", tmp_path / "r4", kimg=0.008, **TINY)
    with pytest.raises(TrainError, match="unknown --compile 'fast'; choose one of none, default, reduce-overhead"):
        train(good, tmp_path / "r5", kimg=0.008, **dict(TINY, compile="fast"))
    folder = tmp_path / "rfolder"  # a folder dataset: a run inside it would put its grids among the images
    (folder / "a").mkdir(parents=True)
    with zipfile.ZipFile(good) as z:
        z.extractall(folder / "a")
    with pytest.raises(TrainError, match=r"--outdir .*rfolder.a.runs.x is inside the dataset folder .*rfolder"):
        train(folder, folder / "a" / "runs" / "x", kimg=0.008, **TINY)
    assert not (folder / "a" / "runs").exists()
    shutil.rmtree(folder)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("r")]  # refused runs leave no empty folders


def test_transfer_learning_from_other_run_and_freezed(tmp_path):
    d1, d2 = make_zip(tmp_path / "d1.zip", seed=1), make_zip(tmp_path / "d2.zip", seed=2)
    train(d1, tmp_path / "src", kimg=0.016, **TINY)
    src = load(tmp_path / "src" / "snapshot-000000016.pt")
    # Other dataset: a new run from the weights (counters at 0). With lr 0 the weights stay those loaded.
    out = train(d2, tmp_path / "dst", resume=str(tmp_path / "src" / "snapshot-000000016.pt"), kimg=0.008,
                **dict(TINY, glr=0.0, dlr=0.0, precision="fp32"))
    assert out["cur_nimg"] == 8 and out["step"] == 1
    dst = load(tmp_path / "dst" / "snapshot-000000008.pt")
    g0, g1 = src["networks"]["G"]["state_dict"], dst["networks"]["G"]["state_dict"]
    params = [k for k in g0 if not k.endswith("w_avg")]  # w_avg is a running mean, not trained
    assert len(params) > 10 and all(torch.equal(g0[k], g1[k]) for k in params)
    # Counters from 0, not the source's: its one step is an open tick (tick 0.016 kimg is 2 steps).
    ts = dst["training_state"]
    assert (ts["step"], ts["cur_tick"], ts["tick_start_nimg"]) == (1, 0, 0)
    # As the official training after --resume: no EMA ramp-up, no blur; the user's ada_kimg is kept.
    cfg = dst["meta"]["config"]
    assert (cfg["ema_rampup"], cfg["blur_sigma"], cfg["ada_kimg"]) == (0.0, 0.0, TINY["ada_kimg"])
    # Numerics are the new run's own: the fp16 source's activation clamp does not carry over to fp32.
    assert src["meta"]["config"]["conv_clamp"] == 256 and (cfg["precision"], cfg["conv_clamp"]) == ("fp32", None)
    # An official .pkl (written from the source run's networks) works the same way.
    import sg3lib
    from sg3lib.compat.official_pkl import write_official_pkl
    nets = sg3lib.load(str(tmp_path / "src" / "snapshot-000000016.pt"))
    pkl = write_official_pkl(tmp_path / "network-snapshot-000016.pkl", {k: nets[k] for k in ("G", "D", "G_ema")})
    # The architecture (cfg, cbase, cmax, map, z_dim, w_dim) comes from the .pkl itself.
    bare = {k: v for k, v in TINY.items() if k not in ("cfg", "cbase", "cmax", "map", "z_dim", "w_dim",
                                                        "ada_kimg")}
    out = train(d2, tmp_path / "frompkl", resume=str(pkl), kimg=0.008, **dict(bare, glr=0.0, dlr=0.0))
    assert out["cur_nimg"] == 8
    frompkl = load(tmp_path / "frompkl" / "snapshot-000000008.pt")
    assert all(torch.equal(g0[k], frompkl["networks"]["G"]["state_dict"][k]) for k in params)
    cfg = frompkl["meta"]["config"]
    assert (cfg["ema_rampup"], cfg["blur_sigma"], cfg["ada_kimg"]) == (0.0, 0.0, 100)  # ADA 5x faster
    # --freezed 2: fromrgb and conv0 of the 16 px block keep their weights, the rest of D trains.
    train(d2, tmp_path / "frz", resume=str(tmp_path / "src" / "snapshot-000000016.pt"), kimg=0.008,
          **dict(TINY, freezed=2))
    frz = load(tmp_path / "frz" / "snapshot-000000008.pt")["networks"]["D"]["state_dict"]
    d0 = src["networks"]["D"]["state_dict"]
    for k in d0:
        same = torch.equal(d0[k], frz[k])
        if k.startswith(("b16.fromrgb.", "b16.conv0.")):
            assert same, k
        elif k.startswith("b16.conv1.weight"):
            assert not same, k
    # A run started from the frozen run's weights freezes nothing unless told: --freezed is a way of
    # training, not part of the architecture a transfer takes over (a continued run keeps it).
    frz_snap = tmp_path / "frz" / "snapshot-000000008.pt"
    assert load(frz_snap)["meta"]["config"]["freezed"] == 2
    train(d1, tmp_path / "after", resume=str(frz_snap), kimg=0.008, **TINY)
    after = load(tmp_path / "after" / "snapshot-000000008.pt")
    assert after["meta"]["config"]["freezed"] == 0
    assert not torch.equal(frz["b16.fromrgb.weight"], after["networks"]["D"]["state_dict"]["b16.fromrgb.weight"])


def test_cli_train_and_error_exit(tmp_path, capsys):
    from sg3lib.cli import main
    data = make_zip(tmp_path / "d.zip", n=8)
    args = ["train", "--data", data, "--outdir", str(tmp_path / "r"), "--cfg", "stylegan2", "--batch", "8",
            "--batch-gpu", "4", "--kimg", "0.008", "--tick", "0.008", "--cbase", "256", "--cmax", "16",
            "--map", "2", "--z-dim", "16", "--w-dim", "16", "--workers", "0", "--gamma", "1",
            "--aug", "noaug", "--mirror", "true", "--seed", "3", "--ada-kimg", "250", "--no-progress",
            "--deterministic"]
    assert main(args) == 0
    s = load(tmp_path / "r" / "snapshot-000000008.pt")
    assert s["meta"]["config"]["seed"] == 3 and s["meta"]["config"]["mirror"] is True
    assert s["meta"]["config"]["ada_kimg"] == 250  # the only way to override a transfer's 100 from the shell
    assert main(args[:-4] + ["--batch-gpu", "3"]) == 2
    assert "must be a multiple" in capsys.readouterr().err
    # Continuing needs only --data, --outdir, --resume latest and the new length: the rest is stored.
    assert main(["train", "--data", data, "--outdir", str(tmp_path / "r"), "--resume", "latest",
                 "--kimg", "0.016", "--no-progress"]) == 0
    s2 = load(tmp_path / "r" / "snapshot-000000016.pt")
    assert s2["training_state"]["step"] == 2
    assert {k: s2["meta"]["config"][k] for k in ("cfg", "cmax", "seed", "mirror", "aug")} == \
        {"cfg": "stylegan2", "cmax": 16, "seed": 3, "mirror": True, "aug": "noaug"}


def test_freezed_past_the_last_layer_of_d_is_refused(tmp_path):
    """--freezed counts D's layers before its epilogue; a number past them (a typo, or a count taken from
    a bigger network) froze every one of them and trained only the epilogue, without a word. It is
    refused naming how many layers D has, before the run folder is made; freezing all of them works."""
    data = make_zip(tmp_path / "d.zip")
    with pytest.raises(TrainError, match=r"--freezed 8 .* D has 7 layers .* 0 to 7"):
        train(data, tmp_path / "r", kimg=0.008, **dict(TINY, freezed=8))
    assert not (tmp_path / "r").exists()
    train(data, tmp_path / "r", kimg=0.008, **dict(TINY, freezed=7))


def test_another_batch_on_resume_says_what_this_run_takes(tmp_path, capsys):
    """A batch-4 run (D's minibatch-std group 4) continued with --batch 2 was told its stored
    --batch-gpu 'does not fit 1 process(es)' and then refused for 'mbstd_group: 4 -> 2', a setting never
    given; with --batch 6 it was told to set --mbstd-group, which a resume refuses. Each now says what
    the run takes: a --batch-gpu (and --batch) that is a multiple of its group."""
    data = make_zip(tmp_path / "d.zip")
    train(data, tmp_path / "r", kimg=0.008, **dict(TINY, batch=4, batch_gpu=4))
    capsys.readouterr()
    with pytest.raises(TrainError, match=r"(?s)mbstd_group: 4 -> 2 \(D's minibatch-std group.*multiple of 4"):
        train(data, tmp_path / "r", resume="latest", kimg=0.016, **dict(TINY, batch=2, batch_gpu=None))
    assert "does not split --batch 2 over 1 process" in capsys.readouterr().out
    with pytest.raises(TrainError, match=r"--batch-gpu 6 must be a multiple of this run's minibatch-std group 4"
                                         r" .*multiples of 4") as e:
        train(data, tmp_path / "r", resume="latest", kimg=0.016, **dict(TINY, batch=6, batch_gpu=None))
    assert "set --mbstd-group" not in str(e.value)
    train(data, tmp_path / "r", resume="latest", kimg=0.016, **dict(TINY, batch=8, batch_gpu=None))


def test_conditional_training(tmp_path):
    """--cond: labels from dataset.json; G and D get c_dim = number of classes."""
    import json
    data = make_zip(tmp_path / "d.zip", n=8)
    with zipfile.ZipFile(data, "a") as z:
        z.writestr("dataset.json", json.dumps({"labels": [[f"00000/img{i:08d}.png", i % 3] for i in range(8)]}))
    out = train(data, tmp_path / "r", kimg=0.008, cond=True, **TINY)
    s = load(tmp_path / "r" / "snapshot-000000008.pt")
    assert s["networks"]["G"]["init_kwargs"]["c_dim"] == 3 and s["networks"]["D"]["init_kwargs"]["c_dim"] == 3
    assert out["G"].c_dim == 3 and (tmp_path / "r" / "fakes-000000008.png").is_file()


def test_compile_option_reaches_the_main_phases(tmp_path, monkeypatch):
    """--compile hands G's mapping and synthesis and D to torch.compile in the chosen mode (the
    compiled phases themselves: test_cuda_path_training); the run's config records the mode."""
    from sg3lib.train import loss as loss_mod
    compiled = []
    monkeypatch.setattr(loss_mod, "compile_module", lambda m, mode: compiled.append((type(m).__name__, mode)) or m)
    data = make_zip(tmp_path / "d.zip")
    out = train(data, tmp_path / "r", kimg=0.008, **dict(TINY, compile="reduce-overhead"))
    assert compiled == [("MappingNetwork", "reduce-overhead"), ("SynthesisNetwork", "reduce-overhead"),
                        ("Discriminator", "reduce-overhead")]
    assert load(out["snapshot"])["meta"]["config"]["compile"] == "reduce-overhead"


def test_numerics_flags_are_set_for_the_run_and_restored(tmp_path, monkeypatch):
    """Official training's numerics: no TF32 unless tf32, cuDNN autotuning unless deterministic;
    torch's global flags are as they were once train() returns, also when it fails."""
    from sg3lib.train import loop
    flags = lambda: (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32,  # noqa: E731
                     torch.backends.cudnn.benchmark, torch.are_deterministic_algorithms_enabled())
    saved = flags()
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.benchmark = False
    try:
        before = flags()
        data = make_zip(tmp_path / "d.zip")
        seen = []
        train(data, tmp_path / "a", kimg=0.008, callback=lambda *a: seen.append(flags()), **TINY)
        assert seen[0] == (False, False, False, True) and flags() == before
        seen.clear()
        train(data, tmp_path / "b", kimg=0.008, callback=lambda *a: seen.append(flags()),
              **dict(TINY, deterministic=False, tf32=True))
        assert seen[0] == (True, True, True, False) and flags() == before

        def broken_step(self, state, loader):
            assert flags() == (False, False, True, False)
            raise RuntimeError("out of memory")
        monkeypatch.setattr(loop._Run, "step", broken_step)
        with pytest.raises(RuntimeError, match="out of memory"):
            train(data, tmp_path / "c", kimg=0.008, **dict(TINY, deterministic=False))
        assert flags() == before
    finally:
        (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32,
         torch.backends.cudnn.benchmark) = saved[:3]


@pytest.mark.skipif(not hasattr(torch.backends.cuda.matmul, "fp32_precision"), reason="torch < 2.9: one TF32 API")
def test_tf32_set_with_torchs_newer_api_is_kept_to_and_restored(tmp_path):
    """torch >= 2.9 recommends fp32_precision; reading the legacy allow_tf32 after it raises ('mix of
    the legacy and new APIs'), so train() failed before any work in a notebook that set TF32 that way."""
    new = lambda: (torch.backends.cudnn.conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision)  # noqa: E731
    saved = new()
    torch.backends.cuda.matmul.fp32_precision = "tf32"
    try:
        before, seen = new(), []
        train(make_zip(tmp_path / "d.zip"), tmp_path / "a", kimg=0.008, callback=lambda *a: seen.append(new()), **TINY)
        assert seen[0] == ("ieee", "ieee") and new() == before  # full float32 for the run, then the caller's
    finally:
        torch.backends.cudnn.conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision = saved


def test_data_loader_workers_do_not_change_the_result(tmp_path):
    """The data order is a function of (seed, image number): 2 loader processes == none."""
    data = make_zip(tmp_path / "d.zip")
    train(data, tmp_path / "w0", kimg=0.016, **dict(TINY, workers=0))
    train(data, tmp_path / "w2", kimg=0.016, **dict(TINY, workers=2))
    a, b = load(tmp_path / "w0" / "snapshot-000000016.pt"), load(tmp_path / "w2" / "snapshot-000000016.pt")
    assert_same_state(a["networks"], b["networks"])


def test_cond_without_labels_is_a_clear_error(tmp_path):
    """--cond on a dataset without labels: an error, not a silently unconditional model."""
    data = make_zip(tmp_path / "d.zip", n=8)
    with pytest.raises(TrainError, match="has no labels.*conditional"):
        train(data, tmp_path / "r", kimg=0.008, cond=True, **TINY)


def test_bad_workers_is_refused_before_the_run_folder_is_made(tmp_path):
    """--workers -1 (or 1.5, True) used to pass the options' checks and reach torch's DataLoader,
    whose ValueError came after the run folder and the networks were made."""
    data = make_zip(tmp_path / "d.zip", n=8)
    for i, bad in enumerate((-1, 1.5, True)):
        with pytest.raises(TrainError, match=r"--workers .* must be a whole number >= 0"):
            train(data, tmp_path / f"r{i}", kimg=0.008, **dict(TINY, workers=bad))
        assert not (tmp_path / f"r{i}").exists()


def test_learning_rate_given_on_resume_is_used(tmp_path):
    """Continuing with --glr/--dlr 0: Adam uses the new rates (not the snapshot's), so nothing moves."""
    data = make_zip(tmp_path / "d.zip")
    run = tmp_path / "r"
    train(data, run, kimg=0.008, **TINY)
    train(data, run, resume="latest", kimg=0.016, **dict(TINY, glr=0.0, dlr=0.0))
    a, b = load(run / "snapshot-000000008.pt"), load(run / "snapshot-000000016.pt")
    for opt in ("opt_G", "opt_D"):
        assert [g["lr"] for g in b["training_state"][opt]["param_groups"]] == [0.0]
    for net in ("G", "D"):
        sa, sb = a["networks"][net]["state_dict"], b["networks"][net]["state_dict"]
        assert all(torch.equal(sa[k], sb[k]) for k in sa if not k.endswith("w_avg")), net


def test_adam_eps_given_on_resume_is_used(tmp_path):
    """lr and betas given on resume were applied after Adam's state was loaded; eps was not (the
    snapshot's came back with load_state_dict)."""
    data = make_zip(tmp_path / "d.zip")
    run = tmp_path / "r"
    train(data, run, kimg=0.008, **TINY)
    train(data, run, resume="latest", kimg=0.016, **dict(TINY, eps=1e-4))
    b = load(run / "snapshot-000000016.pt")
    for opt in ("opt_G", "opt_D"):
        assert [g["eps"] for g in b["training_state"][opt]["param_groups"]] == [1e-4]


def test_transfer_from_official_stylegan3_r_pkl(tmp_path):
    """An official config-R .pkl has a G with doubled feature maps and a D without: fine-tuning
    from it reads D's capacity from its D and loads."""
    from sg3lib.compat.official_pkl import write_official_pkl
    from sg3lib.networks import build_network
    from sg3lib.train.config import make_config, network_kwargs
    data = make_zip(tmp_path / "d.zip")
    c = make_config(16, cfg="stylegan3-r", cbase=256, cmax=16, map=2, z_dim=8, w_dim=8, precision="fp32")
    (gc, gk), (dc, dk) = network_kwargs(c)
    assert (dk["channel_base"], dk["channel_max"]) == (128, 8)
    nets = {"G": build_network(gc, gk), "D": build_network(dc, dk), "G_ema": build_network(gc, gk)}
    pkl = write_official_pkl(tmp_path / "sg3r.pkl", nets)
    bare = {k: v for k, v in TINY.items() if k not in ("cfg", "cbase", "cmax", "map", "z_dim", "w_dim")}
    out = train(data, tmp_path / "run", resume=str(pkl), kimg=0.008, **dict(bare, glr=0.0, dlr=0.0))
    assert out["D"].init_kwargs["channel_base"] == 128 and out["G"].init_kwargs["channel_base"] == 256
    d0, d1 = nets["D"].state_dict(), out["D"].state_dict()
    assert all(torch.equal(d0[k], d1[k]) for k in d0)


def test_new_run_refuses_a_folder_holding_another_run(tmp_path):
    """A new run (no resume, or a transfer, e.g. a snapshot path after the dataset moved) in a folder
    with snapshots is refused: it would cut stats.jsonl and overwrite the snapshots of that run."""
    import shutil
    data = make_zip(tmp_path / "d.zip")
    run = tmp_path / "r"
    train(data, run, kimg=0.016, **TINY)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.suffix in (".pt", ".jsonl")}
    moved = shutil.copy(data, tmp_path / "moved.zip")
    with pytest.raises(TrainError, match="already holds a run.*--resume latest"):
        train(data, run, kimg=0.008, **TINY)
    with pytest.raises(TrainError, match="already holds a run"):
        train(moved, run, resume=str(run / "snapshot-000000016.pt"), kimg=0.024, **TINY)
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.suffix in (".pt", ".jsonl")} == before
    with pytest.warns(UserWarning, match="this run trained on .*d.zip; it continues on .*moved.zip"):
        assert train(moved, run, resume="latest", kimg=0.024, **TINY)["cur_nimg"] == 24


def test_switching_to_noaug_or_fixed_on_resume_uses_the_new_p(tmp_path):
    """An ADA run continued with --aug noaug stops augmenting (it kept the last adapted p), and
    with --aug fixed --p P augments at P, not at the adapted p of the snapshot."""
    data = make_zip(tmp_path / "d.zip")
    run = tmp_path / "r"
    train(data, run, kimg=0.008, **dict(TINY, aug="ada", p=0.3, ada_interval=1))
    assert load(run / "snapshot-000000008.pt")["training_state"]["ada"]["p"] > 0
    no_p = {k: v for k, v in TINY.items() if k != "p"}  # as `sg3 train --resume latest --aug noaug`
    out = train(data, run, resume="latest", kimg=0.016, **dict(no_p, aug="noaug"))
    assert out["ada_p"] == 0.0
    assert load(run / "snapshot-000000016.pt")["training_state"]["ada"]["p"] == 0.0
    out = train(data, run, resume="latest", kimg=0.024, **dict(TINY, aug="fixed", p=0.125))
    assert out["ada_p"] == 0.125


def test_a_new_p_on_an_ada_resume_is_where_ada_goes_on_from(tmp_path, capsys):
    """ADA's adapted p is part of the snapshot, and a --p given on resume was silently replaced by
    it. The run's own --p (a command given again to continue it) still continues the adapted p; a
    new one is where ADA goes on from, and says so."""
    data = make_zip(tmp_path / "d.zip")
    run = tmp_path / "r"
    opts = dict(TINY, aug="ada", p=0.3, ada_interval=1, ada_kimg=0.1)
    train(data, run, kimg=0.008, **opts)
    adapted = load(run / "snapshot-000000008.pt")["training_state"]["ada"]["p"]
    assert adapted != 0.3
    capsys.readouterr()
    slow = dict(opts, ada_kimg=1000)  # (p moves by 8e-6 per step: where it starts is what is seen)
    out = train(data, run, resume="latest", kimg=0.016, **slow)
    assert abs(out["ada_p"] - adapted) < 1e-4 and "ADA goes on from" not in capsys.readouterr().out
    out = train(data, run, resume="latest", kimg=0.024, **dict(slow, p=0.05))
    assert "--p 0.05: ADA goes on from p 0.05" in capsys.readouterr().out
    assert abs(out["ada_p"] - 0.05) < 1e-4


def test_another_batch_on_resume_moves_the_defaults_that_follow_it(tmp_path, capsys):
    """R1 gamma, G_ema's half-life and R's blur fade default to values derived from the batch; a run
    continued with another --batch kept the old batch's (the CLI cannot set the last two), where a
    run started with it has its own. A gamma the run was given stays."""
    from sg3lib.train.config import batch_derived
    data = make_zip(tmp_path / "d.zip")
    auto = dict(TINY, gamma=None)
    train(data, tmp_path / "a", kimg=0.008, **auto)
    capsys.readouterr()
    train(data, tmp_path / "a", resume="latest", kimg=0.024, **dict(auto, batch=16, batch_gpu=None))
    said = capsys.readouterr().out
    c = load(tmp_path / "a" / "snapshot-000000024.pt")["meta"]["config"]
    for k, v in batch_derived(16, 16).items():
        assert c[k] == v != batch_derived(16, 8)[k], k
    assert "--batch 16 (the run had 8): gamma 0.0064 -> 0.0032, ema_kimg 2.5 -> 5 (" in said
    assert "give --gamma 0.0064 to keep" in said and "blur_fade_kimg" not in said  # (StyleGAN2: no blur)
    train(data, tmp_path / "g", kimg=0.008, **TINY)  # gamma 1, given
    train(data, tmp_path / "g", resume="latest", kimg=0.024, **dict(TINY, gamma=None, batch=16, batch_gpu=None))
    c = load(tmp_path / "g" / "snapshot-000000024.pt")["meta"]["config"]
    assert c["gamma"] == 1.0 and c["ema_kimg"] == 5


def test_a_continued_run_may_change_precision(tmp_path, capsys):
    """--precision sets numerics, not the weights' shapes: a run whose fp16 training diverged goes on
    in fp32 (as the official --resume allows) instead of being refused as another architecture. The
    clamp that fp16 brought (256) goes with it; a --conv-clamp the run was given stays."""
    data = make_zip(tmp_path / "d.zip")
    train(data, tmp_path / "a", kimg=0.008, **TINY)  # fp16 (the default): clamped at 256
    capsys.readouterr()
    train(data, tmp_path / "a", resume="latest", kimg=0.016, **dict(TINY, precision="fp32"))
    said = capsys.readouterr().out
    snap = load(tmp_path / "a" / "snapshot-000000016.pt")
    c, g = snap["meta"]["config"], snap["networks"]["G"]["init_kwargs"]
    assert (c["precision"], c["conv_clamp"]) == ("fp32", None)
    assert g["conv_clamp"] is None and g["num_fp16_res"] == 0
    assert "--precision fp32 (the run had fp16): conv_clamp 256 -> None" in said
    train(data, tmp_path / "g", kimg=0.008, **dict(TINY, conv_clamp=64))
    train(data, tmp_path / "g", resume="latest", kimg=0.016, **dict(TINY, precision="bf16"))
    c = load(tmp_path / "g" / "snapshot-000000016.pt")["meta"]["config"]
    assert (c["precision"], c["conv_clamp"]) == ("bf16", 64)


def test_continuing_a_finished_run_says_there_is_nothing_to_train(tmp_path, capsys):
    """`--resume latest` on a run that has reached its --kimg (stored in the snapshot) used to end
    silently with exit 0; it says why nothing happened and what to pass."""
    data = make_zip(tmp_path / "d.zip", n=8)
    train(data, tmp_path / "r", kimg=0.008, **TINY)
    capsys.readouterr()
    out = train(data, tmp_path / "r", resume="latest", **TINY)
    assert out["cur_nimg"] == 8 and out["snapshot"] == str(tmp_path / "r" / "snapshot-000000008.pt")  # (was None)
    said = capsys.readouterr().out
    assert "nothing to train" in said and "already at 8 images" in said and "larger --kimg" in said


def test_resume_from_a_run_folder_takes_its_newest_snapshot(tmp_path):
    """--resume RUN_FOLDER, as --network RUN_FOLDER in sg3 generate/rank: the newest snapshot there."""
    d1, d2 = make_zip(tmp_path / "d1.zip", seed=1), make_zip(tmp_path / "d2.zip", seed=2)
    train(d1, tmp_path / "src", kimg=0.016, **dict(TINY, tick=0.008))  # snapshots at 8 and 16 images
    out = train(d2, tmp_path / "dst", resume=str(tmp_path / "src"), kimg=0.008,
                **dict(TINY, glr=0.0, dlr=0.0, precision="fp32"))
    assert out["cur_nimg"] == 8  # another dataset: a new run from the weights
    g_src = load(tmp_path / "src" / "snapshot-000000016.pt")["networks"]["G"]["state_dict"]
    g_dst = load(tmp_path / "dst" / "snapshot-000000008.pt")["networks"]["G"]["state_dict"]
    assert all(torch.equal(g_src[k], g_dst[k]) for k in g_src if not k.endswith("w_avg"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(TrainError, match="no snapshot-.*in this folder"):
        train(d2, tmp_path / "dst2", resume=str(tmp_path / "empty"), kimg=0.008, **TINY)


def test_resume_from_its_own_run_folder_continues_it(tmp_path):
    """--resume RUN_FOLDER --outdir RUN_FOLDER continues the run (as --resume latest), not refused as a
    folder holding a snapshot 'not older than' the folder itself."""
    d1 = make_zip(tmp_path / "d1.zip", seed=1)
    train(d1, tmp_path / "run", kimg=0.016, **dict(TINY, tick=0.008))
    out = train(d1, tmp_path / "run", resume=str(tmp_path / "run"), kimg=0.024, **dict(TINY, tick=0.008))
    assert out["cur_nimg"] == 24
    assert (tmp_path / "run" / "snapshot-000000024.pt").exists()


def test_transfer_mismatch_names_what_differs(tmp_path):
    """--resume from a network that the dataset or --cfg cannot fit: one error naming each of
    resolution, channels, classes and cfg that differs and what to do, before anything is written."""
    import json
    from PIL import Image
    from sg3lib import load as sg3lib_load
    from sg3lib.compat.official_pkl import write_official_pkl
    from sg3lib.networks import build_network
    from sg3lib.train.config import make_config, network_kwargs

    def pkl(name, c_dim=0):
        c = make_config(16, 3, c_dim, cfg="stylegan2", cbase=256, cmax=16, map=2, z_dim=16, w_dim=16)
        (gc, gk), (dc, dk) = network_kwargs(c)
        G = build_network(gc, gk)
        return str(write_official_pkl(tmp_path / name, {"G": G, "D": build_network(dc, dk), "G_ema": G}))

    plain, cond = pkl("plain.pkl"), pkl("cond.pkl", c_dim=3)
    g_only = str(write_official_pkl(tmp_path / "g_only.pkl", {"G_ema": sg3lib_load(plain)["G_ema"]}))
    d16, d8 = make_zip(tmp_path / "d16.zip", n=8), make_zip(tmp_path / "d8.zip", n=8, res=8)
    gray = tmp_path / "gray.zip"
    with zipfile.ZipFile(gray, "w") as z:
        for i in range(8):
            buf = io.BytesIO()
            Image.fromarray(np.full([16, 16], i * 30, np.uint8)).save(buf, format="PNG")
            z.writestr(f"00000/img{i:08d}.png", buf.getvalue())
    labelled = make_zip(tmp_path / "labelled.zip", n=8)
    with zipfile.ZipFile(labelled, "a") as z:
        z.writestr("dataset.json", json.dumps({"labels": [[f"00000/img{i:08d}.png", i % 5] for i in range(8)]}))
    bare = {k: v for k, v in TINY.items() if k not in ("cfg", "cbase", "cmax", "map", "z_dim", "w_dim")}
    cases = [(plain, d8, {}, r"resolution: the network makes 16x16 images, the dataset has 8x8: .*--resolution 16"),
             (plain, str(gray), {}, r"channels: the network makes 3-channel images, the dataset has 1: .*--channels 3"),
             (cond, d16, {}, r"classes: the network is conditional \(3 classes\), the dataset has no labels: "
                             r"label it with 3 classes .*sg3 curate --labels folders"),
             (cond, d16, {"cond": True}, r"classes: the network is conditional \(3 classes\), the dataset has no "
                                         r"labels"),
             (cond, labelled, {"cond": False}, r"classes: the network is conditional \(3 classes\), the run has "
                                               r"--cond false: leave --cond out"),
             (cond, labelled, {}, r"classes: the network has 3 classes, the dataset's labels 5"),
             (plain, labelled, {"cond": True}, r"classes: the network is unconditional.*leave --cond off"),
             (plain, d16, {"cfg": "stylegan3-t"}, r"cfg: the network is stylegan2, the run's --cfg is stylegan3-t: "
                                                  r"leave --cfg out")]
    for i, (src, data, opts, message) in enumerate(cases):
        with pytest.raises(TrainError, match=rf"cannot start from .*{os.path.basename(src)} on .*\n  {message}"):
            train(data, tmp_path / f"run{i}", resume=src, kimg=0.008, **dict(bare, **opts))
        assert not (tmp_path / f"run{i}").exists()
    # A generator-only file: that, not a --cfg that was never given.
    with pytest.raises(TrainError, match=r"g_only.pkl holds no G, D; transfer learning needs G, D and G_ema"):
        train(d16, tmp_path / "run_g", resume=g_only, kimg=0.008, **bare)
    assert not (tmp_path / "run_g").exists()


def _tiny_official_pkl(path, cfg="stylegan2", d_architecture=None, **sizes):
    """An official-format .pkl of tiny networks (16 px); `d_architecture`: D's, if not resnet."""
    from sg3lib.compat.official_pkl import write_official_pkl
    from sg3lib.networks import build_network
    from sg3lib.train.config import make_config, network_kwargs
    c = make_config(16, cfg=cfg, **dict(dict(cbase=256, cmax=16, map=2, z_dim=16, w_dim=16), **sizes))
    (gc, gk), (dc, dk) = network_kwargs(c)
    if d_architecture:
        dk["architecture"] = d_architecture
    torch.manual_seed(5)
    nets = {"G": build_network(gc, gk), "D": build_network(dc, dk), "G_ema": build_network(gc, gk)}
    return str(write_official_pkl(path, nets)), nets


def test_transfer_with_sizes_other_than_the_network_names_each_option(tmp_path):
    """--cbase/--cmax/--map/--z-dim/--w-dim given with a .pkl of other sizes: the error names each
    option with the network's value and the run's, not only a list of tensors whose shapes differ."""
    pkl, _ = _tiny_official_pkl(tmp_path / "net.pkl")
    data = make_zip(tmp_path / "d.zip", n=8)
    bare = {k: v for k, v in TINY.items() if k not in ("cfg", "cbase", "cmax", "map", "z_dim", "w_dim")}
    cases = [(dict(cbase=128), r"--cbase: the network has 256, the run 128"),
             (dict(cmax=8), r"--cmax: the network has 16, the run 8"),
             (dict(map=3), r"--map: the network has 2, the run 3"),
             (dict(z_dim=8, w_dim=8), r"--z-dim: the network has 16, the run 8\n  --w-dim: the network has 16, "
                                      r"the run 8")]
    for i, (opts, message) in enumerate(cases):
        with pytest.raises(TrainError, match=rf"net.pkl: G does not fit the options given:\n  {message}.*\n"
                                             r"Leave these options out \(a transfer takes them from its source\)"):
            train(data, tmp_path / f"run{i}", resume=pkl, kimg=0.008, **dict(bare, **opts))
        assert not (tmp_path / f"run{i}").exists()  # refused before anything is written
    # Sizes that give the same channels at 16 px load (nothing to refuse).
    assert train(data, tmp_path / "ok", resume=pkl, kimg=0.008, **dict(bare, cbase=512))["cur_nimg"] == 8


def test_transfer_keeps_the_architecture_of_a_non_resnet_discriminator(tmp_path):
    """StyleGAN2-ADA's cifar config trains D with architecture 'orig' (no skip layers): a transfer
    from such a .pkl builds that D (it was refused: missing b16.skip.weight, with no option to fix
    it), every weight loads, and the run continues from its snapshot."""
    pkl, nets = _tiny_official_pkl(tmp_path / "orig.pkl", d_architecture="orig")
    data = make_zip(tmp_path / "d.zip", n=8)
    bare = {k: v for k, v in TINY.items() if k not in ("cfg", "cbase", "cmax", "map", "z_dim", "w_dim")}
    out = train(data, tmp_path / "run", resume=pkl, kimg=0.008, **dict(bare, glr=0.0, dlr=0.0))
    assert out["D"].init_kwargs["architecture"] == "orig"
    d0, d1 = nets["D"].state_dict(), out["D"].state_dict()
    assert set(d0) == set(d1) and all(torch.equal(d0[k], d1[k]) for k in d0)
    assert load(tmp_path / "run" / "snapshot-000000008.pt")["meta"]["config"]["darch"] == "orig"
    out = train(data, tmp_path / "run", resume="latest", kimg=0.016, **bare)
    assert out["cur_nimg"] == 16 and out["D"].init_kwargs["architecture"] == "orig"


def test_new_settings_from_a_snapshot_of_the_same_dataset_say_how(tmp_path):
    """--resume SNAPSHOT on the dataset its run trained on continues that run, so another
    architecture (here --freezed) is refused; the message said to do what was done (another --outdir
    with --resume at the snapshot). It says how to start a new run from those weights, which works."""
    import sg3lib
    from sg3lib.compat.official_pkl import write_official_pkl
    data = make_zip(tmp_path / "d.zip", n=8)
    train(data, tmp_path / "src", kimg=0.008, **TINY)
    snap = str(tmp_path / "src" / "snapshot-000000008.pt")
    with pytest.raises(TrainError, match=r"freezed: 0 -> 2\n.*continues that run.*write_official_pkl") as e:
        train(data, tmp_path / "dst", resume=snap, kimg=0.016, **dict(TINY, freezed=2))
    assert "another --outdir with --resume pointing at this snapshot" not in str(e.value)
    pkl = write_official_pkl(tmp_path / "start.pkl", sg3lib.load(snap))
    out = train(data, tmp_path / "dst", resume=str(pkl), kimg=0.008, **dict(TINY, freezed=2))
    assert out["cur_nimg"] == 8


def labelled_zip(path, classes, n=8, seed=0):
    """make_zip with a dataset.json that gives image i the class i % classes."""
    import json
    data = make_zip(path, n=n, seed=seed)
    with zipfile.ZipFile(data, "a") as z:
        z.writestr("dataset.json", json.dumps({"labels": [[f"00000/img{i:08d}.png", i % classes]
                                                          for i in range(n)]}))
    return data


def test_transfer_from_a_conditional_network_takes_its_classes(tmp_path):
    """--resume from a conditional .pkl, or another run's conditional snapshot, without --cond: the
    classes come from the source as the rest of its architecture does, and every weight loads."""
    from sg3lib.compat.official_pkl import write_official_pkl
    from sg3lib.networks import build_network
    from sg3lib.train.config import make_config, network_kwargs
    c = make_config(16, 3, 3, cfg="stylegan2", cbase=256, cmax=16, map=2, z_dim=16, w_dim=16)
    (gc, gk), (dc, dk) = network_kwargs(c)
    nets = {"G": build_network(gc, gk), "D": build_network(dc, dk), "G_ema": build_network(gc, gk)}
    pkl = str(write_official_pkl(tmp_path / "cond.pkl", nets))
    bare = {k: v for k, v in TINY.items() if k not in ("cfg", "cbase", "cmax", "map", "z_dim", "w_dim")}
    out = train(labelled_zip(tmp_path / "d.zip", 3), tmp_path / "a", resume=pkl, kimg=0.008,
                **dict(bare, glr=0.0, dlr=0.0))
    assert out["G"].c_dim == 3 and out["D"].c_dim == 3
    d0, d1 = nets["D"].state_dict(), out["D"].state_dict()
    assert all(torch.equal(d0[k], d1[k]) for k in d0)
    assert load(tmp_path / "a" / "snapshot-000000008.pt")["meta"]["config"]["cond"] is True
    out = train(labelled_zip(tmp_path / "d2.zip", 3, seed=4), tmp_path / "b", resume=str(tmp_path / "a"),
                kimg=0.008, **bare)
    assert out["G"].c_dim == 3 and load(tmp_path / "b" / "snapshot-000000008.pt")["meta"]["config"]["cond"]


def test_fakes_grid_of_a_conditional_run_shows_its_classes(tmp_path):
    """A dataset sorted by class (as sg3 curate --labels folders writes it): the fakes grid has one
    class per row (one per cell when there are more classes than rows), not the first class alone."""
    from sg3lib.explore.generate import tiny_generator
    from sg3lib.train.loop import save_grid
    for n_classes, expected in ((3, [[0] * 8, [1] * 8, [2] * 8, [0] * 8]),
                                (4, [[0] * 8, [1] * 8, [2] * 8, [3] * 8]),
                                (6, [[(r * 8 + i) % 6 for i in range(8)] for r in range(4)])):
        G = tiny_generator(resolution=16, c_dim=n_classes)
        seen, forward = [], G.forward
        G.forward = lambda z, c, **kw: (seen.append(c.argmax(1)), forward(z, c, **kw))[1]
        labels = torch.eye(n_classes)[torch.arange(n_classes).repeat_interleave(40)]
        save_grid(G, {"resolution": 16, "seed": 0}, labels, tmp_path / "fakes.png", "cpu")
        assert torch.cat(seen).view(4, 8).tolist() == expected
        assert (tmp_path / "fakes.png").is_file()


class _CodedGenerator:
    """A stand-in G_ema whose image k of the grid says which it is: channel 0 holds 7k, channel 1
    the pixel's place in its image, channel 2 the constant `last`; stored so that x * 127.5 + 128 lands
    half way between two whole numbers (the uint8 cast truncates)."""
    z_dim = 4

    def __init__(self, res, channels=3, last=200):
        self.res, self.channels, self.last, self.made = res, channels, last, 0

    def __call__(self, z, c, noise_mode):
        assert noise_mode == "const"
        r = self.res
        k = torch.arange(self.made, self.made + len(z)).view(-1, 1, 1).expand(-1, r, r)
        self.made += len(z)
        place = (torch.arange(r * r).view(1, r, r) % 16).expand(len(z), -1, -1)
        codes = torch.stack([k * 7, place * 16, torch.full_like(k, self.last)], 1)[:, :self.channels]
        return (codes.float() - 127.5) / 127.5


@pytest.mark.parametrize("res, cols, rows", [(4, 8, 4), (256, 8, 4), (512, 4, 2)])
def test_fakes_grid_lays_out_its_images_row_by_row(tmp_path, res, cols, rows):
    """The fakes grid is 8 x 4 images up to 256 px and 4 x 2 above, image k in row k // cols and
    column k % cols, each image upright and whole."""
    from PIL import Image
    from sg3lib.train.loop import save_grid
    G = _CodedGenerator(res)
    save_grid(G, {"resolution": res, "seed": 0}, None, tmp_path / "fakes.png", "cpu")
    img = np.asarray(Image.open(tmp_path / "fakes.png"))
    assert G.made == cols * rows and img.shape == (rows * res, cols * res, 3)
    for k in range(cols * rows):
        cell = img[k // cols * res:(k // cols + 1) * res, k % cols * res:(k % cols + 1) * res]
        assert (cell[..., 0] == 7 * k).all(), k
        assert np.array_equal(cell[..., 1], np.arange(res * res).reshape(res, res) % 16 * 16), k
        assert (cell[..., 2] == 200).all()


def test_fakes_grid_maps_minus_one_to_black_and_one_to_white(tmp_path):
    """Pixels are x * 127.5 + 128 cut to 0..255: -1 is 0, 0 is 128, 1 is 255, beyond is clamped;
    a one-channel generator's grid is a greyscale PNG."""
    from PIL import Image
    from sg3lib.train.loop import save_grid

    class Constant:
        z_dim = 4

        def __call__(self, z, c, noise_mode):
            v = torch.tensor([-3.0, -1.0, 0.0, 1.0, 3.0, 0.5, -0.5, 0.0])
            return v.view(-1, 1, 1, 1).expand(len(z), 1, 4, 4).clone()
    save_grid(Constant(), {"resolution": 4, "seed": 0}, None, tmp_path / "fakes.png", "cpu")
    grid = Image.open(tmp_path / "fakes.png")
    assert grid.mode == "L" and grid.size == (32, 16)
    top_left = np.asarray(grid)[::4, ::4]
    assert top_left.tolist() == [[0, 0, 128, 255, 255, 191, 64, 128]] * 4


def test_resumed_tensorboard_purges_from_the_snapshot_on(tmp_path, monkeypatch):
    """Killed after a snapshot, a run redoes its later ticks; TensorBoard is told to hide the events
    from the snapshot's image count on (a stand-in writer: TensorBoard is not installed here)."""
    made = []

    class FakeWriter:
        def __init__(self, log_dir, purge_step=None):
            made.append(purge_step)

        def add_scalar(self, *args, **kwargs):
            pass

        def flush(self):
            pass

        def close(self):
            pass

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=FakeWriter))
    data = make_zip(tmp_path / "d.zip")
    run = tmp_path / "run"
    train(data, run, kimg=0.016, tensorboard=True, **dict(TINY, tick=0.008))
    train(data, run, resume="latest", kimg=0.024, tensorboard=True, **dict(TINY, tick=0.008))
    assert made == [None, 16 + 1]


def test_training_where_there_is_no_resource_module(tmp_path, monkeypatch):
    """Windows has no `resource` module (peak RSS): CPU training there ran to its first tick and
    died with ModuleNotFoundError. The stats line goes without mem_peak_gb instead."""
    monkeypatch.setitem(sys.modules, "resource", None)  # `import resource` raises ImportError
    data = make_zip(tmp_path / "d.zip")
    train(data, tmp_path / "r", kimg=0.016, **TINY)
    import json
    lines = [json.loads(line) for line in open(tmp_path / "r" / "stats.jsonl")]
    assert lines and all("mem_peak_gb" not in r and "sec_per_kimg" in r for r in lines)


def _stand_in_run(sums=None, counts=None, p=0.0, rt=None):
    """A training run with only what tick_stats reads: one CPU process, its tick's sums, ADA's p."""
    from sg3lib.train import loop
    run = object.__new__(loop._Run)
    run.sums, run.counts, run.world, run.rank, run.device = sums or {}, counts or {}, 1, 0, torch.device("cpu")
    run.ada = types.SimpleNamespace(p=p, rt=rt)
    return run


def test_peak_memory_on_the_cpu_is_in_gib_on_macos_too(monkeypatch):
    """ru_maxrss is in KiB on Linux and in bytes on macOS: a 3 GiB process is 3.0 on both."""
    for platform, maxrss in (("linux", 3 * 2 ** 20), ("darwin", 3 * 2 ** 30)):
        usage = types.SimpleNamespace(ru_maxrss=maxrss)
        fake = types.SimpleNamespace(RUSAGE_SELF=0, getrusage=lambda who, usage=usage: usage)
        monkeypatch.setitem(sys.modules, "resource", fake)
        monkeypatch.setattr(sys, "platform", platform)
        rec = _stand_in_run().tick_stats({"cur_nimg": 16, "cur_tick": 0, "step": 2}, 1.0, 16)
        assert rec["mem_peak_gb"] == 3.0, platform


def test_a_tick_record_holds_the_means_and_the_speed_of_its_tick():
    """Each statistic is its tick's mean (sum over count), the internal sums (the ADA sign sum and
    names starting with "_") stay out of the record, and sec_per_kimg is the tick's seconds per
    thousand images: 32 images in 2 s is 62.5 s/kimg."""
    sums = {"loss_G": torch.tensor(6.0), "loss_D": torch.tensor(1.5), "real_sign": torch.tensor(8.0),
            "_pl_mean": torch.tensor(3.0)}
    run = _stand_in_run(sums, {"loss_G": 4, "loss_D": 3, "real_sign": 32, "_pl_mean": 1}, p=0.25, rt=0.5)
    rec = run.tick_stats({"cur_nimg": 64, "cur_tick": 1, "step": 4}, 2.0, 32)
    assert rec["loss_G"] == 1.5 and rec["loss_D"] == 0.5
    assert "real_sign" not in rec and "_pl_mean" not in rec
    assert rec["sec_per_tick"] == 2.0 and rec["sec_per_kimg"] == 62.5
    assert (rec["kimg"], rec["tick"], rec["step"], rec["ada_p"], rec["ada_rt"]) == (0.064, 2, 4, 0.25, 0.5)
    assert run.sums == {} and run.counts == {}  # the next tick starts from nothing


def test_an_infinite_loss_is_flagged_as_well_as_nan():
    """A loss that overflowed to inf is as diverged as NaN; finite values and non-floats pass."""
    from sg3lib.train.stats import divergence_warning
    assert "loss_G is inf" in divergence_warning({"kimg": 1.0, "loss_G": float("inf")})
    assert "loss_D is -inf" in divergence_warning({"kimg": 1.0, "loss_D": float("-inf"), "loss_G": 0.5})
    assert divergence_warning({"kimg": 1.0, "loss_G": 1e30, "tick": 3}) is None




def test_interrupt_frees_the_run_and_a_rerun_continues(tmp_path, monkeypatch):
    """A notebook's "Interrupt kernel" during a snapshot write, the traceback kept as IPython keeps
    it: the loader's processes are gone, the dataset zip is closed, the networks are freed (a rerun
    in the kernel needs no second copy on the GPU), the message names the snapshot to continue
    from, and the rerun continues from it."""
    import gc
    import multiprocessing
    import weakref
    import sg3lib.train.loop as loop
    data = make_zip(tmp_path / "d.zip")
    run = tmp_path / "run"
    nets, saves = [], []
    real_build, real_save = loop._build, torch.save

    def build(*a, **k):
        out = real_build(*a, **k)
        nets.extend(weakref.ref(n) for n in out)
        return out

    def save(obj, f, *a, **k):
        saves.append(1)
        if len(saves) == 2:  # the second snapshot, half written
            f.write(b"PK\x03\x04 half a snapshot")
            raise KeyboardInterrupt
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(loop, "_build", build)
    monkeypatch.setattr(torch, "save", save)
    opts = dict(TINY, tick=0.008, workers=2)  # a snapshot after every step
    with pytest.raises(KeyboardInterrupt) as caught:
        train(data, run, kimg=0.032, **opts)
    monkeypatch.setattr(torch, "save", real_save)
    kept = caught.value  # held, with its traceback, as a notebook holds the last error
    assert multiprocessing.active_children() == []  # the loader's workers
    assert not open_in_this_process(data)
    gc.collect()
    assert len(nets) == 3 and all(r() is None for r in nets), "the traceback keeps the networks alive"
    assert isinstance(kept, loop.TrainingInterrupted)
    assert str(kept) == ("training interrupted at 0.016 kimg; the newest snapshot is snapshot-000000008.pt "
                         "(0.008 kimg): continue from it with train(..., resume='latest') "
                         "(sg3 train --resume latest)")
    assert sorted(p.name for p in run.iterdir()) == ["fakes-000000008.png", "fakes-init.png",
                                                     "snapshot-000000008.pt", "stats.jsonl"]
    out = train(data, run, resume="latest", kimg=0.016, **opts)
    assert out["cur_nimg"] == 16 and snaps(run) == ["snapshot-000000008.pt", "snapshot-000000016.pt"]
    del kept


def test_interrupt_while_setting_up_says_no_snapshot_was_written(tmp_path, monkeypatch):
    import sg3lib.train.loop as loop

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(loop, "save_grid", interrupted)  # the initial grid, before the first step
    with pytest.raises(loop.TrainingInterrupted, match=r"^training interrupted at 0 kimg; no snapshot was "
                                                       r"written yet: run it again to start over$"):
        train(make_zip(tmp_path / "d.zip", n=8), tmp_path / "run", kimg=0.008, **TINY)


def test_ctrl_c_in_sg3_train_ends_it_with_one_line(tmp_path):
    """SIGINT to the process group, as a terminal's Ctrl-C and Jupyter's interrupt send it (to the
    loader's workers too): exit status 130 and a line saying how to continue, no traceback, no
    process left over."""
    data = make_zip(tmp_path / "d.zip")
    run = tmp_path / "run"
    args = ["train", "--data", data, "--outdir", str(run), "--cfg", "stylegan2", "--batch", "8",
            "--batch-gpu", "4", "--kimg", "10", "--tick", "0.008", "--snap", "1", "--cbase", "256", "--cmax", "16",
            "--map", "2", "--z-dim", "16", "--w-dim", "16", "--workers", "2", "--no-progress"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    proc = start_in_a_session([sys.executable, "-m", "sg3lib.cli"] + args, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
    err = interrupt_group_when(proc, lambda: bool(snaps(run)), "sg3 train (its first snapshot)", 300, 120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err, err
    assert re.search(r"sg3 train: training interrupted at [\d.]+ kimg; the newest snapshot is "
                     r"snapshot-\d{9}\.pt .*--resume latest", err), err
    time.sleep(0.5)  # (a worker that outlived its parent would be reparented, still in the group)
    with pytest.raises(ProcessLookupError):
        os.killpg(proc.pid, 0)


def test_a_child_of_a_background_job_still_takes_ctrl_c():
    """pytest run as a shell's background job (`... &`) ignores SIGINT, and a child inherits that:
    the Ctrl-C test above then trained on until its 120 s hang guard. start_in_a_session gives the
    child SIGINT at its default, as a terminal's command has it, and leaves the caller's as it was."""
    import signal
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        proc = start_in_a_session([sys.executable, "-c", "import signal; print(signal.getsignal(signal.SIGINT) "
                                   "is signal.default_int_handler)"], stdout=subprocess.PIPE, text=True)
        out = proc.communicate(timeout=60)[0]
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, old)
    assert out.strip() == "True"


def test_ctrl_c_under_torchrun_is_said_once(tmp_path, monkeypatch, capsys):
    """torchrun passes Ctrl-C to every process: each printed the same 'training interrupted' line
    (8 copies on 8 GPUs). Rank 0's interrupt says it; the others' are quiet, as setup errors are."""
    from sg3lib.cli import main
    from sg3lib.train import loop

    def interrupted(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(loop, "_train", interrupted)
    for rank in (0, 1):
        monkeypatch.setattr(loop.dist_mod, "init", lambda device, rank=rank: (rank, 2, torch.device("cpu")))
        with pytest.raises(loop.TrainingInterrupted, match="training interrupted while setting up") as e:
            train(tmp_path / "d.zip", tmp_path / "run", **TINY)
        assert e.value.quiet == (rank == 1)
        capsys.readouterr()
        assert main(["train", "--data", str(tmp_path / "d.zip"), "--outdir", str(tmp_path / "run")]) == 130
        err = capsys.readouterr().err
        assert ("sg3 train: training interrupted while setting up" in err) == (rank == 0), err


def test_resume_latest_refuses_when_every_snapshot_is_cut_off(tmp_path, capsys):
    """Drive after a disconnect left only a truncated and an empty snapshot: resuming said 'no
    snapshot yet: starting a new run', cut stats.jsonl and overwrote the run's snapshot files. It
    refuses, naming each file and what is wrong, and leaves the folder as it is; so does a new run."""
    data, run = make_zip(tmp_path / "d.zip"), tmp_path / "run"
    train(data, run, kimg=0.016, **dict(TINY, tick=0.008))
    full = (run / "snapshot-000000016.pt").read_bytes()
    (run / "snapshot-000000016.pt").write_bytes(full[: len(full) // 3])
    (run / "snapshot-000000008.pt").write_bytes(b"")
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    capsys.readouterr()
    with pytest.warns(UserWarning, match="skipped 2 incomplete"):
        with pytest.raises(TrainError) as e:
            train(data, run, resume="latest", kimg=0.024, **dict(TINY, tick=0.008))
    msg = str(e.value)
    assert "snapshot-000000016.pt: truncated" in msg and "snapshot-000000008.pt: empty" in msg
    assert "no snapshot" not in capsys.readouterr().out
    with pytest.raises(TrainError, match="already holds a run"):
        train(data, run, kimg=0.008, **TINY)
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before


def test_resume_latest_skips_a_damaged_newest_snapshot_and_keeps_what_it_writes(tmp_path, capsys):
    """A newest snapshot whose ZIP directory is whole but whose contents are damaged: resuming
    goes on from the newest one that reads, says which it skipped, continues exactly, and pruning
    (--keep-snapshots 1) keeps the snapshot it writes, not only the damaged one."""
    import zipfile
    data, run = make_zip(tmp_path / "d.zip"), tmp_path / "run"
    opts = dict(TINY, tick=0.008)
    train(data, run, kimg=0.016, **opts)
    with zipfile.ZipFile(run / "snapshot-000000040.pt", "w") as z:
        z.writestr("archive/data.pkl", b"damaged")
    capsys.readouterr()
    train(data, run, resume="latest", kimg=0.024, keep_snapshots=1, **opts)
    said = capsys.readouterr().out
    assert "resuming from" in said and "snapshot-000000016.pt" in said
    assert "skipped 1" in said and "snapshot-000000040.pt" in said
    assert snaps(run) == ["snapshot-000000024.pt", "snapshot-000000040.pt"]
    train(data, tmp_path / "straight", kimg=0.024, **opts)
    a, b = load(run / "snapshot-000000024.pt"), load(tmp_path / "straight" / "snapshot-000000024.pt")
    assert_same_state(a["networks"], b["networks"])


def test_without_the_bar_each_tick_prints_one_line(tmp_path, capsys):
    """`--no-progress` (a log file, nohup) used to print nothing while training: a run's only sign of
    life was stats.jsonl. Without the bar each tick prints one line (its image count and losses)."""
    data = make_zip(tmp_path / "d.zip")
    train(data, tmp_path / "r", kimg=0.032, **TINY)
    lines = [s for s in capsys.readouterr().out.splitlines() if s.startswith("tick ")]
    assert len(lines) == 2, lines
    assert "kimg 0.016" in lines[0] and "kimg 0.032" in lines[1] and all("loss_D" in s for s in lines)


def test_a_tick_with_a_non_finite_loss_is_flagged_on_stderr(tmp_path, capsys, monkeypatch):
    """A diverged run (NaN or inf losses) went on writing NaN into stats.jsonl and the bar without a
    word; the tick that first has one says so on stderr, with what to do."""
    from sg3lib.train import loop
    real = loop._Run.tick_stats

    def diverged(self, state, *a, **k):
        rec = real(self, state, *a, **k)
        if state["cur_nimg"] > 16:
            rec["loss_G"] = float("nan")
        return rec

    monkeypatch.setattr(loop._Run, "tick_stats", diverged)
    data = make_zip(tmp_path / "d.zip")
    train(data, tmp_path / "r", kimg=0.032, **TINY)
    err = capsys.readouterr().err
    assert err.count("loss_G is nan") == 1 and "kimg 0.032" in err and "snapshot" in err, err


def test_snapshot_time_is_not_counted_in_the_next_tick(tmp_path, monkeypatch):
    """sec_per_tick and sec_per_kimg are training speed: the tick after a snapshot also counted the
    time of writing the snapshot and its grid. A stand-in clock moves only while the grid is drawn."""
    from sg3lib.train import loop
    now = [1000.0]
    monkeypatch.setattr(loop, "time", types.SimpleNamespace(time=lambda: now[0]))
    real_grid = loop.save_grid

    def slow_grid(*a, **k):
        now[0] += 100.0
        return real_grid(*a, **k)

    monkeypatch.setattr(loop, "save_grid", slow_grid)
    data = make_zip(tmp_path / "d.zip")
    train(data, tmp_path / "r", kimg=0.032, **TINY)
    import json
    recs = [json.loads(line) for line in open(tmp_path / "r" / "stats.jsonl")]
    assert len(recs) == 2 and [r["sec_per_tick"] for r in recs] == [0.0, 0.0], recs


def test_class_labels_for_drawing_c_are_kept_as_class_indices(tmp_path):
    """The labels a conditional run draws c from were an images x classes float matrix, built with a
    pass over all labels per image: 5 GB and many minutes for 1.28M images of 1000 classes before the
    first step. They are kept as class indices, made one-hot when drawn: the same c as before."""
    import json
    from sg3lib.data import ImageDataset
    from sg3lib.train.loop import _grid_labels, _labels, draw_step
    data = make_zip(tmp_path / "d.zip", n=6)
    classes = [4, 0, 2, 4, 1, 0]
    with zipfile.ZipFile(data, "a") as z:
        z.writestr("dataset.json", json.dumps({"labels": [[f"00000/img{i:08d}.png", k] for i, k in enumerate(classes)],
                                               "class_names": [f"c{k}" for k in range(300)]}))
    ds = ImageDataset(data, use_labels=True, xflip=True)
    labels = _labels(ds)

    def held(x):  # elements of the tensors it keeps
        if isinstance(x, torch.Tensor):
            return x.numel()
        return sum(held(v) for v in vars(x).values()) if hasattr(x, "__dict__") else 0
    assert len(labels) == 6 and held(labels) < 6 * 300
    one_hot = torch.eye(300)[classes]
    r = draw_step({"seed": 3}, 5, "Gmain", 16, 4, labels, "cpu")
    idx = torch.randint(6, [16], generator=torch.Generator().manual_seed(0))
    assert r["c"].shape == (16, 300) and r["c"].dtype == torch.float32
    assert torch.equal(r["c"], draw_step({"seed": 3}, 5, "Gmain", 16, 4, one_hot, "cpu")["c"])
    assert torch.equal(labels[idx], one_hot[idx])
    assert torch.equal(_grid_labels(labels, 8, 4), _grid_labels(one_hot, 8, 4))


def test_kimg_and_tick_count_whole_images_despite_float_rounding(tmp_path, monkeypatch):
    """--kimg 4.03 and --tick 2.015 at batch 65 are 62 and 31 steps, but 4.03 * 1000 is
    4030.0000000000005 in floating point: the run took a 63rd step (4095 images) and the first tick
    ended a step late, at 2080. A stand-in step only counts images: the cadence is the loop's."""
    from sg3lib.train import loop

    def count_only(self, state, loader):
        state["cur_nimg"] += self.c["batch"]
        state["step"] += 1

    monkeypatch.setattr(loop._Run, "step", count_only)
    data = make_zip(tmp_path / "d.zip")
    out = train(data, tmp_path / "r", kimg=4.03, **dict(TINY, batch=65, batch_gpu=65, mbstd_group=5, tick=2.015,
                                                          snap=1, keep_snapshots=0))
    assert (out["cur_nimg"], out["step"]) == (4030, 62)
    assert [(r["kimg"], r["tick"]) for r in stats_lines(tmp_path / "r")] == [(2.015, 1), (4.03, 2)]
    assert snaps(tmp_path / "r") == ["snapshot-000002015.pt", "snapshot-000004030.pt"]


def test_a_full_disk_when_writing_the_grid_or_the_stats_says_what_to_do(tmp_path, monkeypatch):
    """Only the snapshot's OSError became "free disk space and resume": when the snapshot took the last
    space, the fakes grid (or stats.jsonl) failed with a raw OSError from inside PIL."""
    from PIL import Image
    from sg3lib.train import stats
    data = make_zip(tmp_path / "d.zip")

    def no_space(*a, **k):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(Image.Image, "save", no_space)
    with pytest.raises(TrainError, match=r"could not write .*fakes-init.png: No space left on device.*--resume latest"):
        train(data, tmp_path / "a", kimg=0.016, **TINY)
    monkeypatch.undo()
    monkeypatch.setattr(stats.StatsWriter, "write", no_space)
    with pytest.raises(TrainError, match=r"could not write .*stats.jsonl: No space left on device"):
        train(data, tmp_path / "b", kimg=0.016, **TINY)
    monkeypatch.undo()  # resuming rewrites stats.jsonl up to the snapshot: a raw OSError had no file name
    train(data, tmp_path / "c", kimg=0.008, **TINY)
    from sg3lib.train import loop
    monkeypatch.setattr(loop, "truncate_after", no_space)
    with pytest.raises(TrainError, match=r"could not write .*c.stats.jsonl: No space left on device.*free disk space"):
        train(data, tmp_path / "c", kimg=0.016, resume="latest", **TINY)
    monkeypatch.undo()  # a snapshot refused for another reason is not blamed on the disk
    from sg3lib import checkpoint

    def refused(*a, **k):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(checkpoint, "save_snapshot", refused)
    with pytest.raises(TrainError, match=r"could not write snapshot .*: Permission denied\. The previous snapshot "
                                         r"is kept; fix that and resume"):
        train(data, tmp_path / "c", kimg=0.016, resume="latest", **TINY)


def test_a_run_folder_reached_through_a_link_continues_from_its_own_newest_snapshot(tmp_path):
    """--outdir link/run with --resume real/run/<its newest snapshot> (a Drive folder through a link):
    refused as 'holds snapshot-..., which is not older than' itself (the paths were compared as text)."""
    data = make_zip(tmp_path / "d.zip")
    train(data, tmp_path / "real" / "run", kimg=0.008, **TINY)
    (tmp_path / "link").symlink_to(tmp_path / "real")
    out = train(data, tmp_path / "link" / "run", resume=str(tmp_path / "real" / "run" / "snapshot-000000008.pt"),
                kimg=0.016, **TINY)
    assert out["cur_nimg"] == 16 and snaps(tmp_path / "real" / "run")[-1] == "snapshot-000000016.pt"


def test_a_folder_another_process_trains_in_is_refused(tmp_path, live_process):
    """A second notebook (or Colab tab) on the same run folder deleted the first one's snapshot while
    it was being written ('could not write snapshot ... free disk space'), truncated its stats, and
    both wrote the same snapshot names. A live process's lock refuses the second run; a lock left by
    a process that is gone, or whose pid is now another process's, is replaced."""
    import json
    import socket
    from sg3lib.train import loop
    data, run = make_zip(tmp_path / "d.zip"), tmp_path / "run"
    train(data, run, kimg=0.008, **TINY)
    assert not (run / loop.RUN_LOCK).exists()  # released when train() returns
    other = live_process
    lock = {"host": socket.gethostname(), "pid": other.pid, "start": loop._process_start(other.pid)}
    (run / loop.RUN_LOCK).write_text(json.dumps(lock))
    partial = run / ".snapshot-000000016.pt.tmp-0badf00d"  # the other process's save in progress
    partial.write_bytes(b"PK being written")
    with pytest.raises(TrainError, match=rf"run is being trained in by another process on this machine "
                                         rf"\(pid {other.pid}\).*Stop it first, or choose another --outdir"):
        train(data, run, kimg=0.016, resume="latest", **TINY)
    assert partial.exists() and snaps(run) == ["snapshot-000000008.pt"]  # nothing of it touched
    (run / loop.RUN_LOCK).write_text(json.dumps(dict(lock, start=(lock["start"] or 0) + 1)))  # a reused pid
    train(data, run, kimg=0.016, resume="latest", **TINY)
    other.kill()
    other.wait()
    (run / loop.RUN_LOCK).write_text(json.dumps(lock))  # the process is gone: its lock is stale
    train(data, run, kimg=0.024, resume="latest", **TINY)
    assert snaps(run)[-1] == "snapshot-000000024.pt" and not (run / loop.RUN_LOCK).exists()


def test_the_progress_bar_ends_where_training_does(tmp_path, monkeypatch):
    """Training runs whole steps: --kimg 0.010 at batch 8 trains 16 images, and the bar (total 10) lost
    its percentage and ETA at 8 of 10, a bare counter for the rest of the run."""
    import tqdm.auto
    bars = []

    class Bar(tqdm.auto.tqdm):
        def __init__(self, *a, **k):
            super().__init__(*a, **dict(k, disable=True))
            self.asked = k
            bars.append(self)

        def update(self, n=1):
            self.done = getattr(self, "done", self.asked.get("initial", 0)) + n
    monkeypatch.setattr(tqdm.auto, "tqdm", Bar)
    data = make_zip(tmp_path / "d.zip")
    train(data, tmp_path / "r", kimg=0.010, **TINY)
    (bar,) = [b for b in bars if b.asked.get("desc") == "training"]
    assert bar.asked["total"] == 16 and bar.done == 16
    bars.clear()
    train(data, tmp_path / "r", kimg=0.030, resume="latest", **TINY)  # from 16: 2 steps to 32
    (bar,) = [b for b in bars if b.asked.get("desc") == "training"]
    assert (bar.asked["initial"], bar.asked["total"], bar.done) == (16, 32, 32)


def test_misspelt_options_are_refused_not_stored(tmp_path):
    """make_config took any key: keep_snapshot=1 trained with the default and went into every snapshot."""
    data = make_zip(tmp_path / "d.zip")
    with pytest.raises(TrainError, match=r"unknown training option\(s\) 'keep_snapshot' \(did you mean 'keep_snapshots'\?\)"):
        train(data, tmp_path / "r", kimg=0.016, keep_snapshot=1, **TINY)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("seed", [2 ** 32, -1, 1.5, True])
def test_a_seed_outside_32_bits_is_refused(tmp_path, seed):
    """Every random stream took the seed's low 32 bits: --seed 4294967296 was --seed 0 again."""
    with pytest.raises(TrainError, match="--seed .* must be a whole number from 0 to 4294967295"):
        train(make_zip(tmp_path / "d.zip"), tmp_path / "r", kimg=0.016, **dict(TINY, seed=seed))


def test_paths_from_the_home_folder_continue_the_run(tmp_path, monkeypatch, capsys):
    """A '~' (from Python, or `--resume=~/...`, which the shell leaves alone) was not expanded: the
    snapshot to continue was loaded as weights to start from (a new run from 0, transfer settings, no
    Adam or ADA state), and an outdir '~/run' was made as a folder named '~' under the current one."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    make_zip(tmp_path / "d.zip")
    train("~/d.zip", "~/run", kimg=0.016, **TINY)
    assert snaps(tmp_path / "run") == ["snapshot-000000016.pt"] and not (tmp_path / "~").exists()
    out = train("~/d.zip", "~/branch", resume="~/run/snapshot-000000016.pt", kimg=0.024, **dict(TINY, tick=0.008))
    assert out["cur_nimg"] == 24 and snaps(tmp_path / "branch") == ["snapshot-000000024.pt"]


def test_a_damaged_image_ends_sg3_train_with_one_line(tmp_path, capsys):
    """A PNG whose header reads but whose data is damaged ended `sg3 train` with a 60-line traceback
    (through the DataLoader's workers too); now one error line that says how to go on."""
    from sg3lib.cli import main
    data = make_zip(tmp_path / "d.zip")
    with zipfile.ZipFile(data) as z:
        members = {n: z.read(n) for n in z.namelist()}
    name = sorted(n for n in members if n.endswith(".png"))[3]
    members[name] = members[name][:60] + b"\0" * (len(members[name]) - 60)
    with zipfile.ZipFile(data, "w") as z:
        for n, b in members.items():
            z.writestr(n, b)
    for workers in ("0", "2"):
        rc = main(["train", "--data", str(data), "--outdir", str(tmp_path / f"r{workers}"), "--cfg", "stylegan2",
                   "--batch", "8", "--cbase", "256", "--cmax", "16", "--map", "2", "--z-dim", "16", "--w-dim", "16",
                   "--kimg", "0.032", "--workers", workers, "--no-progress"])
        err = capsys.readouterr().err
        assert rc == 2, err
        line = [ln for ln in err.splitlines() if ln.startswith("error: ")]
        assert len(line) == 1 and name in line[0] and "cannot be read" in line[0], err
        assert "no snapshot was written yet" in line[0] and "Traceback" not in err


def test_a_fresh_start_removes_what_a_killed_save_left(tmp_path, capsys):
    """Only resume='latest' cleaned the run folder: a run killed while saving its first snapshot and
    started again without --resume kept the hidden temporary (a snapshot's size) for good."""
    data = make_zip(tmp_path / "d.zip")
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / ".snapshot-000000008.pt.tmp-0badf00d").write_bytes(b"PK half a snapshot")
    train(data, tmp_path / "r", kimg=0.016, **TINY)
    assert "removed 1 partial file(s) of an interrupted save" in capsys.readouterr().out
    assert not list((tmp_path / "r").glob(".snapshot-*"))


def test_flags_a_run_was_started_with_can_be_turned_off_when_continuing_it(tmp_path):
    from sg3lib.train.cli import add_train_arguments
    import argparse
    p = argparse.ArgumentParser()
    add_train_arguments(p)
    base = ["--data", "d.zip", "--outdir", "r"]
    for flag in ("deterministic", "tf32", "tensorboard"):
        assert getattr(p.parse_args(base), flag) is None  # the run's own setting
        assert getattr(p.parse_args(base + [f"--{flag}"]), flag) is True
        assert getattr(p.parse_args(base + [f"--no-{flag}"]), flag) is False


@pytest.mark.parametrize("key", ["mirror", "cond", "deterministic", "tf32", "tensorboard"])
def test_switches_are_true_or_false(tmp_path, key):
    """train(mirror="false") (a notebook setting typed as text) was taken as true."""
    with pytest.raises(TrainError, match=f"{key.replace('_', '-')} 'false' must be True or False"):
        train(make_zip(tmp_path / "d.zip"), tmp_path / "r", kimg=0.016, **dict(TINY, **{key: "false"}))


def test_continuing_with_other_classes_does_not_suggest_a_transfer_that_is_refused_too(tmp_path):
    """The different-architecture message suggested exporting a .pkl and starting from it, which the
    transfer check then refuses for the same class mismatch."""
    import json

    def labelled(classes):
        path = make_zip(tmp_path / "c.zip")
        with zipfile.ZipFile(path, "a") as z:
            z.writestr("dataset.json", json.dumps({"labels": [[f"00000/img{i:08d}.png", i % classes]
                                                              for i in range(16)]}))
        return path
    run = tmp_path / "r"
    train(labelled(2), run, kimg=0.008, **dict(TINY, cond=True))
    with pytest.raises(TrainError) as e:
        train(labelled(3), run, resume="latest", kimg=0.016, **dict(TINY, cond=True))
    msg = str(e.value)
    assert "c_dim: 2 -> 3" in msg and "labelled with its 2 classes" in msg and "write_official_pkl" not in msg


def _damage_inside(path):
    """Zero bytes of the largest tensor of a snapshot: its ZIP directory stays whole, its CRC fails."""
    with zipfile.ZipFile(path) as z:
        info = max(z.infolist(), key=lambda i: i.file_size)
    b = bytearray(path.read_bytes())
    start = b.index(b"PK\x03\x04", info.header_offset)
    data = start + 30 + int.from_bytes(b[start + 26:start + 28], "little") + int.from_bytes(b[start + 28:start + 30], "little")
    b[data:data + 64] = bytes(64)
    path.write_bytes(bytes(b))


def test_with_the_newest_snapshot_damaged_inside_the_one_resumed_is_named(tmp_path, capsys):
    """The newest snapshot fails its CRC check, so resume='latest' goes on from the one before; yet a
    finished run returned (and `sg3 train` printed) the damaged file as its snapshot, and an interrupt
    said 'continue from snapshot-000000032.pt', which resume='latest' skips."""
    from sg3lib.train import loop
    data = make_zip(tmp_path / "d.zip")
    run = tmp_path / "r"
    train(data, run, kimg=0.032, **TINY)  # snapshots at 16 and 32 images
    _damage_inside(run / "snapshot-000000032.pt")
    out = train(data, run, resume="latest", kimg=0.016, **TINY)
    assert out["cur_nimg"] == 16 and out["snapshot"] == str(run / "snapshot-000000016.pt")
    assert "fails its CRC check" in capsys.readouterr().out

    def stop(event, info):
        raise KeyboardInterrupt
    with pytest.raises(loop.TrainingInterrupted, match=r"the newest snapshot is snapshot-000000016.pt \(0.016 kimg\)"):
        train(data, run, resume="latest", kimg=0.048, callback=stop, **TINY)


def test_a_new_image_size_on_resume_says_which_dataset_the_run_needs(tmp_path):
    """The advice was to start a new run from the snapshot in another --outdir (or from an exported
    .pkl), which is refused in turn: the image size is part of the weights."""
    run = tmp_path / "r"
    train(make_zip(tmp_path / "d16.zip"), run, kimg=0.016, **TINY)
    with pytest.raises(TrainError) as e, pytest.warns(UserWarning, match="it continues on .*d32.zip"):
        train(make_zip(tmp_path / "d32.zip", res=32), run, resume="latest", kimg=0.032, **TINY)
    msg = str(e.value)
    assert "resolution: 16 -> 32" in msg and "continue it on a 16 px dataset with 3 channel(s)" in msg
    assert "--resume pointing" not in msg and "start.pkl" not in msg


def test_resume_latest_on_another_dataset_warns_and_a_link_is_the_same_dataset(tmp_path, capsys):
    """resume='latest' with another --data continued silently (and the new snapshots recorded the
    other dataset); a snapshot continued through a link to its own dataset was taken for another
    dataset: a new run from its weights, counters from 0."""
    d, x = make_zip(tmp_path / "d.zip"), make_zip(tmp_path / "x.zip", seed=5)
    run = tmp_path / "r"
    train(d, run, kimg=0.016, **TINY)
    with pytest.warns(UserWarning, match=rf"this run trained on {re.escape(str(d))}; it continues on "
                                         rf"{re.escape(str(x))}\. If that is another dataset"):
        assert train(x, run, resume="latest", kimg=0.032, **TINY)["cur_nimg"] == 32
    link = tmp_path / "link.zip"
    link.symlink_to(d)
    capsys.readouterr()
    out = train(link, tmp_path / "r2", resume=str(run / "snapshot-000000016.pt"), kimg=0.032, **TINY)
    assert out["cur_nimg"] == 32 and "continuing the run of" in capsys.readouterr().out


def test_a_kill_while_a_run_starts_leaves_no_hidden_file_for_good(tmp_path):
    """The write probe and the run lock's temporary (a kill between their write and rename or removal)
    were not among the leftovers that every start removes."""
    data = make_zip(tmp_path / "d.zip")
    run = tmp_path / "r"
    train(data, run, kimg=0.016, **TINY)
    (run / ".write-test-123").write_text("ok")
    (run / "..sg3lib-training.tmp-8e0b2437").write_text("{}")
    train(data, run, resume="latest", kimg=0.032, **TINY)
    assert not list(run.glob(".write-test-*")) and not list(run.glob("..sg3lib-training.tmp-*"))


def test_a_mbstd_group_above_batch_gpu_is_refused_and_d_adam_is_lazy_also_without_r1(tmp_path, monkeypatch):
    """--mbstd-group 4 with --batch-gpu 2 silently became a group of 2 (another D statistic; the help
    says it must divide --batch-gpu; the official training refuses it). And --gamma 0 gave D the
    plain lr 0.002, where the official training keeps lazy R1's 0.002 x 16/17 and beta2 0.99^(16/17)."""
    data = make_zip(tmp_path / "d.zip")
    with pytest.raises(TrainError, match=r"--mbstd-group 4 is larger than --batch-gpu 2"):
        train(data, tmp_path / "r", kimg=0.008, **dict(TINY, batch_gpu=2, mbstd_group=4))
    assert not (tmp_path / "r").exists()
    created = []
    real = torch.optim.Adam
    monkeypatch.setattr(torch.optim, "Adam", lambda params, **kw: created.append(kw) or real(params, **kw))
    train(data, tmp_path / "g0", kimg=0.008, **dict(TINY, gamma=0, D_reg_interval=16, dlr=0.002))
    d = created[1]
    assert d["lr"] == pytest.approx(0.002 * 16 / 17) and d["betas"][1] == pytest.approx(0.99 ** (16 / 17))


def test_a_process_start_is_its_start_in_clock_ticks_since_boot(live_process):
    """The lock tells a reused pid by /proc/<pid>/stat's field 22 (starttime): a process started now
    started about /proc/uptime seconds after boot. (The field before it, itrealvalue, is always 0.)"""
    from sg3lib.train import loop
    if not os.path.exists("/proc/self/stat"):
        pytest.skip("no /proc on this system")
    child = live_process
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    ticks = loop._process_start(child.pid)
    assert ticks is not None and abs(ticks / os.sysconf("SC_CLK_TCK") - uptime) < 10
    child.kill()
    child.wait()
    assert loop._process_start(child.pid) is None  # gone: /proc does not say


def test_a_run_lock_without_a_start_time_or_of_another_host(tmp_path, live_process):
    """A live process's lock that does not give its start (/proc did not say) still refuses the run;
    another machine's lock cannot be checked: it is replaced with a warning. A lock another process
    wrote meanwhile is not removed when this run ends."""
    import contextlib
    import json
    import socket
    from sg3lib.train import loop
    lock, other = tmp_path / loop.RUN_LOCK, live_process
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": other.pid, "start": None}))
    with contextlib.ExitStack() as closing, pytest.raises(TrainError, match=f"pid {other.pid}"):
        loop._take_run_lock(str(tmp_path), closing)
    lock.write_text(json.dumps({"host": "another-machine", "pid": other.pid, "start": None}))
    with contextlib.ExitStack() as closing:
        with pytest.warns(UserWarning, match=f"host 'another-machine' \\(pid {other.pid}\\) trains here"):
            loop._take_run_lock(str(tmp_path), closing)
        assert json.loads(lock.read_text())["pid"] == os.getpid()
        theirs = {"host": socket.gethostname(), "pid": other.pid, "start": loop._process_start(other.pid)}
        lock.write_text(json.dumps(theirs))  # taken over meanwhile (its owner deleted ours)
    assert json.loads(lock.read_text()) == theirs  # not ours to remove
    with contextlib.ExitStack() as closing:
        lock.unlink()
        loop._take_run_lock(str(tmp_path), closing)
    assert not lock.exists()  # ours: removed


def test_a_dataset_path_not_recorded_is_no_dataset(tmp_path):
    """A snapshot that stored no dataset path (None) is not the dataset given now, nor an error."""
    from sg3lib.train import loop
    d = make_zip(tmp_path / "d.zip")
    assert not loop._same_dataset(None, str(d)) and not loop._same_dataset(str(d), None)
    assert loop._same_dataset(None, None) and not loop._same_dataset("", str(d))
    assert not loop._same_dataset(str(d), str(tmp_path / "moved.zip"))


def test_continuing_into_a_folder_with_a_copy_of_the_same_snapshot_is_refused(tmp_path):
    """A copy of the snapshot (same counter, another file) in the folder is not older than it: the two
    histories would share one name."""
    from sg3lib.train import loop
    data, run, other = make_zip(tmp_path / "d.zip"), tmp_path / "run", tmp_path / "other"
    train(data, run, kimg=0.008, **TINY)
    src = run / "snapshot-000000008.pt"
    loop._check_continues_newest(str(run), str(src))  # its own folder: fine
    other.mkdir()
    shutil.copy(src, other / src.name)
    with pytest.raises(TrainError, match="holds snapshot-000000008.pt, which is not older than"):
        loop._check_continues_newest(str(other), str(src))


def test_resume_from_an_empty_folder_or_a_folder_of_unreadable_snapshots(tmp_path):
    """An empty folder: 'latest' is suggested. A folder whose snapshots cannot be read says what to do
    with them, and no more: its message ended '...out of the folder., or 'latest' for the newest
    snapshot in --outdir' (the check looked for 'cannot be read', which that message never says)."""
    from sg3lib.train import loop
    (tmp_path / "run").mkdir()
    with pytest.raises(TrainError, match=r"no snapshot-\*\.pt in this folder; pass a snapshot or \.pkl file, "
                                         r"or 'latest' for the newest snapshot in --outdir$"):
        loop._resume_file(tmp_path / "run")
    (tmp_path / "run" / "snapshot-000000008.pt").write_bytes(b"PK cut off")
    with pytest.warns(UserWarning), pytest.raises(TrainError, match="no snapshot there can be read") as e:
        loop._resume_file(tmp_path / "run")
    assert str(e.value).endswith("move these files out of the folder.") and "'latest'" not in str(e.value)


def test_a_snapshot_without_its_run_config_is_a_source_of_weights(tmp_path):
    """Training state without the run's config cannot be continued (the options are gone): its
    networks start a new run, as an official .pkl's would."""
    from sg3lib import checkpoint as ck
    from sg3lib.train import loop
    data, run = make_zip(tmp_path / "d.zip"), tmp_path / "run"
    train(data, run, kimg=0.008, **TINY)
    snap = ck.load_snapshot(str(run / "snapshot-000000008.pt"))
    assert snap["meta"]["kimg"] == 0.008 and snap["meta"]["dataset"] == str(data)
    assert loop._load_resume(str(run / "snapshot-000000008.pt"), "cpu")[0] == "snapshot"
    snap["meta"].pop("config")
    snap.pop("config", None)
    ck.save_snapshot(str(tmp_path / "snapshot-000000008.pt"), snap)
    kind, payload = loop._load_resume(str(tmp_path / "snapshot-000000008.pt"), "cpu")
    assert kind == "networks" and {"G", "D", "G_ema"} <= set(payload)


def test_only_the_writer_reports_the_newer_snapshots_it_skips(tmp_path, capsys):
    """Rank 0 (clean) says which newer snapshots it skipped; the other ranks look without a word (the
    message was printed once per process)."""
    from sg3lib.train import loop
    data, run = make_zip(tmp_path / "d.zip"), tmp_path / "run"
    train(data, run, kimg=0.008, **TINY)
    (run / "snapshot-000000016.pt").write_bytes(b"PK cut off")
    capsys.readouterr()
    path, snap = loop._find_latest(str(run), clean=False)
    assert path.endswith("snapshot-000000008.pt") and snap is not None
    assert "skipped" not in capsys.readouterr().out
    with pytest.warns(UserWarning):
        assert loop._find_latest(str(run), clean=True)[0] == path
    assert "skipped 1 newer snapshot(s) that cannot be read" in capsys.readouterr().out
    assert (run / "snapshot-000000016.pt").exists()  # left in place


def test_sg3_train_switches_take_the_usual_words_and_refuse_others(capsys):
    """--mirror true/false: type=bool would read 'false' (any non-empty text) as true."""
    import argparse
    from sg3lib.train.cli import add_train_arguments
    p = argparse.ArgumentParser()
    add_train_arguments(p)
    base = ["--data", "d.zip", "--outdir", "r"]
    for text, value in (("1", True), ("True", True), ("yes", True), ("on", True),
                        ("0", False), ("false", False), ("NO", False), ("off", False)):
        assert p.parse_args(base + ["--mirror", text]).mirror is value, text
    with pytest.raises(SystemExit):
        p.parse_args(base + ["--cond", "maybe"])
    assert "expected true/false, got 'maybe'" in capsys.readouterr().err


@pytest.fixture
def fake_train(monkeypatch):
    """sg3 train with train() and the process-group cleanup recorded instead of run."""
    from sg3lib.train import distributed, loop
    calls = types.SimpleNamespace(kwargs=None, cleanups=0, result={"snapshot": None, "cur_nimg": 0}, error=None)

    def train(data, outdir, **kwargs):
        calls.kwargs = dict(kwargs, data=data, outdir=outdir)
        if calls.error:
            raise calls.error
        return calls.result
    monkeypatch.setattr(loop, "train", train)
    monkeypatch.setattr(distributed, "cleanup", lambda: setattr(calls, "cleanups", calls.cleanups + 1))
    return calls


def test_sg3_train_hands_its_options_to_train_and_says_where_it_ended(fake_train, capsys):
    from sg3lib.train.cli import main
    args = ["--data", "d.zip", "--outdir", "r", "--kimg", "2", "--mirror", "off"]
    assert main(args) == 0 and fake_train.cleanups == 1
    kw = fake_train.kwargs
    assert kw["progress"] is True and kw["kimg"] == 2 and kw["mirror"] is False and kw["resume"] is None
    assert "no_progress" not in kw and str(kw["data"]) == "d.zip"
    assert capsys.readouterr().out == ""  # no snapshot written (nothing left to train): no 'done' line
    fake_train.result = {"snapshot": "r/snapshot-000002000.pt", "cur_nimg": 2000}
    assert main(args + ["--no-progress"]) == 0 and fake_train.kwargs["progress"] is False
    assert capsys.readouterr().out == "done: 2000 images, last snapshot r/snapshot-000002000.pt\n"


def test_sg3_train_errors_are_one_line_once_and_the_process_group_is_left(fake_train, capsys):
    from sg3lib.train.cli import main
    from sg3lib.train.loop import TrainError
    fake_train.error = TrainError("the dataset is empty")
    assert main(["--data", "d.zip", "--outdir", "r"]) == 2 and fake_train.cleanups == 1
    assert capsys.readouterr().err == "error: the dataset is empty\n"
    fake_train.error.quiet = True  # another process of the torchrun run says it
    assert main(["--data", "d.zip", "--outdir", "r"]) == 2 and fake_train.cleanups == 2
    assert capsys.readouterr().err == ""
