"""Gradient accumulation and multi-process training give the same result as one big batch."""
import os
import subprocess
import sys
from pathlib import Path

import torch

from sg3lib.train import train
from test_train import make_zip

ROOT = Path(__file__).resolve().parents[1]


def _max_diff(a, b):
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def _weights(path):
    s = torch.load(path, weights_only=True)
    return s, {n: s["networks"][n]["state_dict"] for n in ("G", "D")}


def test_grad_accumulation_4x2_equals_1x8(tmp_path):
    """StyleGAN3-T, R1 and ADA on, style mixing on: 2 steps at batch 8 as 1 round of 8 and as
    4 rounds of 2 (minibatch-stddev group 2) end with the same weights and Adam moments."""
    data = make_zip(tmp_path / "d.zip")
    opts = dict(cfg="stylegan3-t", batch=8, kimg=0.016, tick=0.008, cbase=128, cmax=8, map=2,
                z_dim=8, w_dim=8, workers=0, gamma=1.0, p=0.3, D_reg_interval=1, mbstd_group=2, snap=1,
                style_mixing=0.5, progress=False)
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


def test_two_process_gloo_equals_one_process(tmp_path):
    """torchrun --nproc_per_node=2 on the CPU (gloo), global batch 8 = 2 x 4, equals one process
    with 2 rounds of 4."""
    data = make_zip(tmp_path / "d.zip")
    args = ["--data", data, "--cfg", "stylegan2", "--batch", "8", "--batch-gpu", "4", "--kimg", "0.016",
            "--tick", "0.008", "--snap", "1", "--cbase", "256", "--cmax", "16", "--map", "2", "--z-dim", "16",
            "--w-dim", "16", "--workers", "0", "--gamma", "1", "--p", "0.3", "--no-progress"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          "-m", "sg3lib.cli", "train", "--outdir", str(tmp_path / "two")] + args,
                         env=env, capture_output=True, text=True, timeout=600)
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
    for opt in ("opt_G", "opt_D"):
        ma, mb = s1["training_state"][opt]["state"], s2["training_state"][opt]["state"]
        for i in ma:
            torch.testing.assert_close(ma[i]["exp_avg"], mb[i]["exp_avg"], rtol=1e-3, atol=1e-7)


def test_two_processes_without_batch_gpu(tmp_path):
    """torchrun with 2 processes and no --batch-gpu: each takes half of the batch (official default)."""
    data = make_zip(tmp_path / "d.zip")
    args = ["--data", data, "--cfg", "stylegan2", "--batch", "8", "--kimg", "0.008", "--tick", "0.008",
            "--cbase", "256", "--cmax", "16", "--map", "2", "--z-dim", "16", "--w-dim", "16", "--workers", "0",
            "--gamma", "1", "--no-progress", "--outdir", str(tmp_path / "two")]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          "-m", "sg3lib.cli", "train"] + args, env=env, capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stdout[-3000:] + two.stderr[-3000:]
    s = torch.load(tmp_path / "two" / "snapshot-000000008.pt", weights_only=True)
    assert s["meta"]["config"]["batch_gpu"] == 4
