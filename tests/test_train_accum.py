"""Gradient accumulation and multi-process training give the same result as one big batch."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from sg3lib.train import train
from test_train import assert_same_state, make_zip, stats_lines

ROOT = Path(__file__).resolve().parents[1]


def _max_diff(a, b):
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def _weights(path):
    s = torch.load(path, weights_only=True)
    return s, {n: s["networks"][n]["state_dict"] for n in ("G", "D")}


# StyleGAN2 (path length and R1 on) at 16 px, batch 8: about a second per step on one core.
TINY_ARGS = ["--cfg", "stylegan2", "--batch", "8", "--tick", "0.008", "--snap", "1", "--cbase", "256", "--cmax",
             "16", "--map", "2", "--z-dim", "16", "--w-dim", "16", "--workers", "0", "--gamma", "1", "--p", "0.3",
             "--no-progress"]


@pytest.fixture(autouse=True)
def _torchrun_temp_in_tmp_path(tmp_path, monkeypatch):
    """torchrun keeps a torchelastic_* log folder in the temp dir and leaves it: put it in tmp_path
    (each run of this file left a dozen in /tmp)."""
    (tmp_path / "tmp").mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))


def _torchrun(args, **popen):
    """`torchrun --nproc_per_node=2 -m sg3lib.cli train ARGS` on the CPU (gloo); a Popen if asked."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "sg3lib.cli", "train"] + [str(a) for a in args]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    if popen:
        return subprocess.Popen(cmd, env=env, **popen)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)  # a hang guard


def _close_stats(a, b, rtol=1e-4):
    assert len(a) == len(b) and all(set(x) == set(y) for x, y in zip(a, b)), (a, b)
    for x, y in zip(a, b):
        for k in x:
            assert abs(x[k] - y[k]) <= rtol * max(abs(y[k]), 1e-3), (k, x[k], y[k])


def test_grad_accumulation_4x2_equals_1x8(tmp_path):
    """StyleGAN3-T, R1, path length and ADA on, style mixing on: 2 steps at batch 8 as 1 round of 8
    and as 4 rounds of 2 (minibatch-stddev group 2) end with the same weights and Adam moments (the
    path-length noise was drawn per round: the weights differed by 4e-3)."""
    data = make_zip(tmp_path / "d.zip")
    opts = dict(cfg="stylegan3-t", batch=8, kimg=0.016, tick=0.008, cbase=128, cmax=8, map=2,
                z_dim=8, w_dim=8, workers=0, gamma=1.0, p=0.3, D_reg_interval=1, mbstd_group=2, snap=1,
                style_mixing=0.5, pl_weight=2.0, progress=False)
    train(data, tmp_path / "a", batch_gpu=8, **opts)
    train(data, tmp_path / "b", batch_gpu=2, **opts)
    sa, wa = _weights(tmp_path / "a" / "snapshot-000000016.pt")
    sb, wb = _weights(tmp_path / "b" / "snapshot-000000016.pt")
    g0 = torch.load(tmp_path / "a" / "snapshot-000000008.pt", weights_only=True)["networks"]["G"]["state_dict"]
    moved = _max_diff(wa["G"], g0)
    assert moved > 1e-3  # one Adam step moves weights by ~lr = 0.0025: a split error would show
    assert _max_diff(wa["G"], wb["G"]) < 5e-5, _max_diff(wa["G"], wb["G"])
    assert _max_diff(wa["D"], wb["D"]) < 5e-5, _max_diff(wa["D"], wb["D"])
    for opt in ("opt_G", "opt_D"):
        ma, mb = sa["training_state"][opt]["state"], sb["training_state"][opt]["state"]
        for i in ma:
            torch.testing.assert_close(ma[i]["exp_avg"], mb[i]["exp_avg"], rtol=1e-3, atol=1e-7)
            torch.testing.assert_close(ma[i]["exp_avg_sq"], mb[i]["exp_avg_sq"], rtol=1e-3, atol=1e-12)
    pl = [sx["training_state"]["pl_mean"] for sx in (sa, sb)]
    assert float(pl[0]) > 0 and abs(float(pl[0]) - float(pl[1])) < 1e-4 * float(pl[0]), pl
    _close_stats(stats_lines(tmp_path / "a"), stats_lines(tmp_path / "b"))  # means per image, not per round


@pytest.mark.slow
def test_two_process_gloo_equals_one_process(tmp_path):
    """torchrun --nproc_per_node=2 on the CPU (gloo), global batch 8 = 2 processes x 2 rounds of 2,
    equals one process with 4 rounds of 2 (rank 1's two rounds take the batch's images 4..8: they
    once took 2..6, which one round per process did not show)."""
    data = make_zip(tmp_path / "d.zip")
    args = ["--data", data, "--cfg", "stylegan2", "--batch", "8", "--batch-gpu", "2", "--kimg", "0.016",
            "--tick", "0.008", "--snap", "1", "--cbase", "256", "--cmax", "16", "--map", "2", "--z-dim", "16",
            "--w-dim", "16", "--workers", "0", "--gamma", "1", "--p", "0.3", "--no-progress"]
    two = _torchrun(["--outdir", tmp_path / "two"] + args)
    assert two.returncode == 0, two.stdout[-3000:] + two.stderr[-3000:]
    from sg3lib.cli import main
    assert main(["train", "--outdir", str(tmp_path / "one")] + args) == 0
    s1, w1 = _weights(tmp_path / "one" / "snapshot-000000016.pt")
    s2, w2 = _weights(tmp_path / "two" / "snapshot-000000016.pt")
    assert sorted(p.name for p in (tmp_path / "two").iterdir() if p.suffix == ".pt") == \
        ["snapshot-000000008.pt", "snapshot-000000016.pt"]  # rank 1 wrote nothing extra
    g0 = torch.load(tmp_path / "one" / "snapshot-000000008.pt", weights_only=True)["networks"]["G"]["state_dict"]
    assert _max_diff(w1["G"], g0) > 1e-3
    assert _max_diff(w1["G"], w2["G"]) < 5e-5, _max_diff(w1["G"], w2["G"])
    assert _max_diff(w1["D"], w2["D"]) < 5e-5, _max_diff(w1["D"], w2["D"])
    assert s1["training_state"]["ada"] == s2["training_state"]["ada"]
    pl = [s["training_state"]["pl_mean"] for s in (s1, s2)]  # path length's mean of all ranks' images
    assert pl[0] > 0 and torch.allclose(pl[0], pl[1], rtol=1e-4), pl
    for opt in ("opt_G", "opt_D"):
        ma, mb = s1["training_state"][opt]["state"], s2["training_state"][opt]["state"]
        for i in ma:
            torch.testing.assert_close(ma[i]["exp_avg"], mb[i]["exp_avg"], rtol=1e-3, atol=1e-7)
    # stats.jsonl: the whole batch's means (rank 0 logged those of its own half).
    _close_stats(stats_lines(tmp_path / "two"), stats_lines(tmp_path / "one"))
    # The 2-process snapshot continues in one process (4 rounds of 2) as the 1-process run.
    assert main(["train", "--outdir", str(tmp_path / "cont"), "--resume",
                 str(tmp_path / "two" / "snapshot-000000008.pt")] + args) == 0
    _, w3 = _weights(tmp_path / "cont" / "snapshot-000000016.pt")
    assert _max_diff(w1["G"], w3["G"]) < 5e-5 and _max_diff(w1["D"], w3["D"]) < 5e-5


def test_two_processes_without_batch_gpu(tmp_path):
    """torchrun with 2 processes and no --batch-gpu: each takes half of the batch (official default)."""
    data = make_zip(tmp_path / "d.zip")
    args = ["--data", data, "--cfg", "stylegan2", "--batch", "8", "--kimg", "0.008", "--tick", "0.008",
            "--cbase", "256", "--cmax", "16", "--map", "2", "--z-dim", "16", "--w-dim", "16", "--workers", "0",
            "--gamma", "1", "--no-progress", "--outdir", str(tmp_path / "two")]
    two = _torchrun(args)
    assert two.returncode == 0, two.stdout[-3000:] + two.stderr[-3000:]
    assert any(p.name.startswith("torchelastic_") for p in (tmp_path / "tmp").iterdir())  # not in /tmp
    s = torch.load(tmp_path / "two" / "snapshot-000000008.pt", weights_only=True)
    assert s["meta"]["config"]["batch_gpu"] == 4


@pytest.mark.slow
def test_one_process_snapshot_continues_on_two_processes(tmp_path):
    """A snapshot of one process without --batch-gpu (8 per round) continued by 2 processes: its
    stored batch-gpu does not fit, so each takes half (it was refused: '--batch 8 must be a multiple
    of --batch-gpu 8 x 2'), and the open tick's sums are counted once: as one process continuing
    with --batch-gpu 4 (the same split, so StyleGAN2's per-round noise is the same too)."""
    import shutil
    from sg3lib.cli import main
    data = make_zip(tmp_path / "d.zip")
    args = ["--data", data] + TINY_ARGS + ["--tick", "0.016", "--deterministic"]
    assert main(["train", "--outdir", str(tmp_path / "two"), "--kimg", "0.008"] + args) == 0
    shutil.copytree(tmp_path / "two", tmp_path / "one")
    assert main(["train", "--outdir", str(tmp_path / "one"), "--kimg", "0.016", "--resume", "latest",
                 "--batch-gpu", "4"] + args) == 0
    r = _torchrun(["--outdir", tmp_path / "two", "--kimg", "0.016", "--resume", "latest"] + args)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "does not split --batch 8 over 2 process(es): using 4" in r.stdout
    s1, w1 = _weights(tmp_path / "one" / "snapshot-000000016.pt")
    s2, w2 = _weights(tmp_path / "two" / "snapshot-000000016.pt")
    assert s2["meta"]["config"]["batch_gpu"] == 4
    assert _max_diff(w1["G"], w2["G"]) < 5e-5 and _max_diff(w1["D"], w2["D"]) < 5e-5
    _close_stats(stats_lines(tmp_path / "two"), stats_lines(tmp_path / "one"))


@pytest.mark.slow
def test_two_processes_resumed_in_an_open_tick_log_what_a_run_never_stopped_logs(tmp_path):
    """A 2-process run that ends inside a tick and is continued by 2 processes: its stats.jsonl is
    that of a run never stopped, to the last digit (rank 0 had taken the all-ranks totals, rounded
    to float32, so the tick's sums were added in another order: loss_D 1.5680094957 vs 1.5680093765)."""
    data = make_zip(tmp_path / "d.zip")
    args = ["--data", data] + TINY_ARGS + ["--batch-gpu", "4", "--tick", "0.016", "--deterministic"]
    for out, stops in (("straight", ["0.032"]), ("stopped", ["0.024", "0.032"])):
        for kimg in stops:
            r = _torchrun(["--outdir", tmp_path / out, "--kimg", kimg, "--resume", "latest"] + args)
            assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    ts = torch.load(tmp_path / "stopped" / "snapshot-000000024.pt", weights_only=True)["training_state"]
    assert [len(v["per_rank"]["count"]) for v in ts["tick_sums"].values()] == [2] * len(ts["tick_sums"])
    stopped = stats_lines(tmp_path / "stopped")  # (the open tick's line at 0.024 replaced by the tick's)
    assert [line["kimg"] for line in stopped] == [0.016, 0.032]
    assert stopped == stats_lines(tmp_path / "straight")


def _processes_naming(text):
    """Pids of the processes whose command line contains `text` (Linux /proc)."""
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if text.encode() in f.read():
                    pids.append(int(pid))
        except OSError:
            pass
    return pids


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads the process list from /proc")
def test_sigkill_of_torchrun_ends_its_ranks_and_resume_is_exact(tmp_path):
    """SIGKILL of torchrun's process group after a snapshot ends the ranks too (torchrun starts
    them in sessions of their own: they trained on, writing snapshots beside the resumed run); the
    2-process resume with --resume latest equals a run that never stopped, bit for bit, and only
    rank 0 cleans up what the kill left (one message)."""
    data = make_zip(tmp_path / "d.zip")
    run, straight = tmp_path / "run", tmp_path / "straight"
    args = ["--data", data] + TINY_ARGS + ["--deterministic"]
    proc = _torchrun(["--outdir", run, "--kimg", "1"] + args, start_new_session=True,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120  # hang guards, not speed checks
    # The kill may still land inside a later save (seen: the .tmp of snapshot 16 beside the planted
    # file), so the check below asks for one message naming the planted file, not for a count.
    while not (run / "fakes-000000008.png").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (run / "snapshot-000000008.pt").exists()
    gone_by = time.time() + 10  # they end with torchrun; orphans trained on for 20 s and more
    while _processes_naming(str(run)) and time.time() < gone_by:
        time.sleep(0.2)
    left = _processes_naming(str(run))
    for pid in left:  # leave no orphan training behind
        os.kill(pid, signal.SIGKILL)
    assert not left, "ranks kept training after torchrun was killed"
    (run / ".fakes-000000099.png.tmp-x").write_bytes(b"cut")  # what a killed grid write leaves
    r = _torchrun(["--outdir", run, "--kimg", "0.024", "--resume", "latest"] + args)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    cleaned = [line for line in r.stdout.splitlines() if "partial file(s)" in line]
    assert len(cleaned) == 1 and ".fakes-000000099.png.tmp-x" in cleaned[0], r.stdout[-3000:]
    assert "resuming from" in r.stdout
    r = _torchrun(["--outdir", straight, "--kimg", "0.024"] + args)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    a = torch.load(run / "snapshot-000000024.pt", weights_only=True)
    b = torch.load(straight / "snapshot-000000024.pt", weights_only=True)
    assert_same_state(a["networks"], b["networks"])
    for k in ("opt_G", "opt_D", "ada", "pl_mean", "step"):
        assert_same_state(a["training_state"][k], b["training_state"][k])
    assert stats_lines(run) == stats_lines(straight)
    assert not list(run.glob(".*.tmp-*"))


@pytest.mark.slow
def test_setup_error_of_one_or_all_ranks_is_one_message(tmp_path):
    """A bad --data (every rank fails) and an outdir that cannot be made (only rank 0 checks it):
    one 'error:' line, not one per rank, and every rank ends (the timeout is a hang guard)."""
    data = make_zip(tmp_path / "d.zip")
    (tmp_path / "a_file").write_text("")
    for args, says in (([ "--data", tmp_path / "nope.zip", "--outdir", tmp_path / "r"], "dataset not found"),
                       (["--data", data, "--outdir", tmp_path / "a_file" / "r"], "output folder")):
        r = _torchrun(args + TINY_ARGS + ["--kimg", "0.008"])
        out = r.stdout + r.stderr
        assert r.returncode != 0
        errors = [line for line in out.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and says in errors[0], out[-3000:]


_THREE_RANKS = '''
import json, sys
import torch, torch.distributed as dist
from sg3lib.train import distributed as D

def rank_main(rank, out):  # (a file rendezvous: no port to pick, so none another test can take first)
    dist.init_process_group("gloo", init_method=f"file://{out}/rendezvous", rank=rank, world_size=3)
    m = torch.nn.Linear(2, 1)
    torch.nn.init.constant_(m.weight, rank)
    m.register_buffer("ema", torch.full([2], float(rank)))
    m.register_buffer("mean", torch.full([3], 10.0 * rank))
    m.register_buffer("count", torch.tensor([rank]))
    got = {"first_of_1_2": D.first_failed_rank(rank in (1, 2)), "first_of_none": D.first_failed_rank(False)}
    D.average_buffers(m)
    got.update(ema=m.ema.tolist(), mean=m.mean.tolist(), count=m.count.tolist())
    m.ema.fill_(rank)
    D.broadcast_module(m)
    got.update(weight=m.weight.flatten().tolist(), ema_after_broadcast=m.ema.tolist())
    D.cleanup()
    got["still_in_a_group"] = dist.is_initialized()
    with open(f"{out}/rank{rank}.json", "w") as f:
        json.dump(got, f)

if __name__ == "__main__":
    torch.multiprocessing.spawn(rank_main, args=(sys.argv[1],), nprocs=3)
'''


def test_the_collectives_of_three_ranks(tmp_path):
    """Three gloo processes (the torchrun tests have two, where the lowest failing rank and the
    highest are the same one, and where one failing rank is all there can be besides rank 0)."""
    import json
    from sg3lib.train import distributed as D
    assert D.first_failed_rank(True) == 0 and D.first_failed_rank(False) is None  # one process
    (tmp_path / "three_ranks.py").write_text(_THREE_RANKS)
    r = subprocess.run([sys.executable, str(tmp_path / "three_ranks.py"), str(tmp_path)], capture_output=True,
                       text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT)))
    assert r.returncode == 0, r.stderr[-3000:]
    for rank in range(3):
        got = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert got["first_of_1_2"] == 1 and got["first_of_none"] is None
        assert got["ema"] == [1.0, 1.0] and got["mean"] == [10.0] * 3  # every float buffer: the mean of 0, 1, 2
        assert got["count"] == [rank]                                    # an integer one is the rank's own
        assert got["weight"] == [0.0, 0.0] and got["ema_after_broadcast"] == [0.0, 0.0]  # rank 0's, buffers too
        assert got["still_in_a_group"] is False
