"""The training phases on the GPU's code path, without a GPU: the kernels compiled for the CPU by
tests/cudasim stand in for the extension, and the modulated convolutions take the grouped form GPU
training uses. Losses and every parameter gradient must match the reference path (tiny networks,
float32): the kernels' autograd Functions (slope codes, masks, double backward for R1 and path length)
wired into whole networks, as the GPU will run them. In float16 too (the layers StyleGAN marks, as on a
GPU, on both paths), where the dtype plumbing of the kernels' Functions is what is checked and the
gradients agree to float16's rounding. And the main phases as `--compile` runs them: G and D traced
whole by torch.compile (no graph break), with the eager results."""
import contextlib
import functools
import sys
import warnings
from pathlib import Path

import pytest
import torch

from sg3lib import ops
from sg3lib.networks import build_network, stylegan2, stylegan3
from sg3lib.ops import _cuda
from sg3lib.ops.conv import modulated_conv2d
from sg3lib.train.config import make_config, network_kwargs
from sg3lib.train.loop import draw_step, slice_step
from sg3lib.train.loss import Phases
from test_ops_cuda import _install, _simulator

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_memory import gpu_precision  # noqa: E402

CPU = torch.device("cpu")


def _phase_results(G, D, c, batch, device=CPU):
    """{phase: (loss, gradients of the trained network's parameters)} for one round."""
    phases = Phases(G, D, c, device)
    gen = torch.Generator().manual_seed(1)
    real = torch.randn([batch, 3, 16, 16], generator=gen).to(device)
    real_c = torch.empty([batch, 0], device=device)
    pl_noise = torch.randn([batch, 3, 16, 16], generator=gen).to(device)
    sigma, p = 0.5, 0.0
    runs = [("G main", G, lambda r: phases.G_main(r, sigma, p), "Gmain"),
            ("D main", D, lambda r: phases.D_main(r, real, real_c, sigma, p), "Dmain"),
            ("D R1", D, lambda r: phases.D_r1(r, real, real_c, sigma, p, 4), "Dreg")]
    if c["pl_weight"] > 0:
        runs.append(("G pl", G, lambda r: phases.G_pl(r, 2, pl_noise), "Greg"))
    out = {}
    for name, net, run, phase_id in runs:
        G.requires_grad_(net is G)
        D.requires_grad_(net is D)
        r = slice_step(draw_step(c, 0, phase_id, batch, G.z_dim, None, CPU), 0, batch, device)
        torch.manual_seed(2)  # the synthesis noise
        loss, _ = run(r)
        params = [q for q in net.parameters() if q.requires_grad]
        out[name] = (loss.detach(), torch.autograd.grad(loss, params, allow_unused=True))
    return out


def _assert_close_to_scale(got, want, rtol, atol, msg):
    """got == want, both divided by want's largest magnitude (gradients span orders of magnitude)."""
    scale = want.abs().max().clamp(min=1e-6)
    torch.testing.assert_close(got / scale, want / scale, rtol=rtol, atol=atol, msg=msg)


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("cfg", ["stylegan3-t", "stylegan2"])
def test_training_phases_on_the_cuda_path_match_the_reference(cfg, precision, monkeypatch):
    # path length regularisation on every config (StyleGAN3's presets leave it off, but a user may turn it on)
    c = make_config(16, cfg=cfg, batch=2, cbase=128, cmax=8, map=2, z_dim=8, w_dim=8, precision=precision,
                    pl_weight=2.0)
    # fp16: the layers StyleGAN marks in float16, as on a GPU, on both paths
    with gpu_precision() if precision == "fp16" else contextlib.nullcontext():
        (g_class, g_kwargs), (d_class, d_kwargs) = network_kwargs(c)
        torch.manual_seed(0)
        G, D = build_network(g_class, g_kwargs), build_network(d_class, d_kwargs)
        want = _phase_results(G, D, c, 2)

        ext = _install(monkeypatch, _simulator().SimulatedExt())
        monkeypatch.setattr(ops, "_use_cuda", lambda x, impl: None if impl == "ref" else _cuda)
        for module in (stylegan3, stylegan2):  # GPU training's form (the CPU picks the batched one)
            monkeypatch.setattr(module, "modulated_conv2d", functools.partial(modulated_conv2d, grouped=True))
        got = _phase_results(G, D, c, 2)
        _cuda._reset()

    assert ext.calls.get("bias_act_launch") and ext.calls.get("filtered_lrelu_launch" if cfg != "stylegan2"
                                                               else "upfirdn2d_launch")
    assert set(got) == set(want) == {"G main", "D main", "D R1", "G pl"}
    for name in want:
        (loss0, grads0), (loss1, grads1) = want[name], got[name]
        if precision == "fp16":  # rounding differs between the kernels and the reference: compare to
            # the phase's scale. Path length is a second-order phase: StyleGAN3's in float16 is off from
            # float32's by about a tenth of its largest gradient on both paths (measured: reference 0.125,
            # kernels 0.078), so the float32 case is its exact check and this one a coarse one.
            rtol, gtol = (2e-2, 2e-1) if name == "G pl" else (5e-3, 3e-2)
            torch.testing.assert_close(loss1, loss0, rtol=rtol, atol=0, msg=f"{name} loss")
            scale = max(g.abs().max() for g in grads0 if g is not None)
            for i, (g0, g1) in enumerate(zip(grads0, grads1)):
                if g0 is None and g1 is None:
                    continue
                err = (g0 - (0 if g1 is None else g1)).abs().max() if g0 is not None else g1.abs().max()
                assert err <= gtol * scale, f"{name} gradient {i}: off by {err / scale:.1e} of the phase's largest"
            continue
        _assert_fp32_phase_matches(name, want[name], got[name])


def _assert_fp32_phase_matches(name, want, got):
    """The CUDA path's float32 loss and gradients of one phase against the reference's."""
    (loss0, grads0), (loss1, grads1) = want, got
    torch.testing.assert_close(loss1, loss0, rtol=1e-4, atol=1e-5, msg=f"{name} loss")
    assert len(grads0) == len(grads1)
    for i, (g0, g1) in enumerate(zip(grads0, grads1)):
        if g1 is None and g0 is not None:
            # the slope codes end R1's and path length's graphs where the reference carries zeros (lrelu'' = 0): a
            # parameter reached only that way gets no gradient, as with the official CUDA ops
            assert name in ("D R1", "G pl") and not g0.any(), f"{name}: gradient {i} missing on the CUDA path"
            continue
        assert (g0 is None) == (g1 is None), f"{name}: gradient {i} is None on the reference path only"
        if g0 is not None:
            _assert_close_to_scale(g1, g0, 1e-3, 1e-4, f"{name} gradient {i}")


@pytest.mark.gpu
@pytest.mark.parametrize("cfg", ["stylegan3-t", "stylegan3-r", "stylegan2"])
def test_training_phases_with_the_kernels_on_cuda_match_the_reference(cfg, monkeypatch, full_float32):
    """On a GPU: every training phase with the compiled kernels against the reference ops on the
    same GPU (same networks and convolutions), in float32 without TF32: losses and gradients."""
    c = make_config(16, cfg=cfg, batch=2, cbase=128, cmax=8, map=2, z_dim=8, w_dim=8, pl_weight=2.0,
                    precision="fp32")  # (the default fp16 would run every 16 px layer in float16)
    (g_class, g_kwargs), (d_class, d_kwargs) = network_kwargs(c)
    torch.manual_seed(0)
    cuda = torch.device("cuda")
    G, D = build_network(g_class, g_kwargs).to(cuda), build_network(d_class, d_kwargs).to(cuda)
    assert _cuda.available()[0], _cuda.available()[1]
    got = _phase_results(G, D, c, 2, cuda)
    monkeypatch.setattr(ops, "_use_cuda", lambda x, impl: None)  # the reference ops, on the GPU
    want = _phase_results(G, D, c, 2, cuda)
    assert set(got) == set(want)
    for name in want:
        _assert_fp32_phase_matches(name, want[name], got[name])


@pytest.mark.gpu
@pytest.mark.parametrize("cfg", ["stylegan3-t", "stylegan2"])
def test_training_phases_on_cuda_queue_without_host_syncs(cfg):
    """On a GPU: each training phase (G main and D main with augmentation, R1, path length) queues its
    work without waiting for the GPU, so the host stays ahead. torch's sync debug mode flags each call
    that waits (a copy from pageable memory, an index tensor from the CPU, .item()); the test lists where."""
    c = make_config(16, cfg=cfg, batch=4, cbase=128, cmax=8, map=2, z_dim=8, w_dim=8, pl_weight=2.0)
    (g_class, g_kwargs), (d_class, d_kwargs) = network_kwargs(c)
    torch.manual_seed(0)
    cuda = torch.device("cuda")
    G, D = build_network(g_class, g_kwargs).to(cuda), build_network(d_class, d_kwargs).to(cuda)
    phases = Phases(G, D, c, cuda)
    real, pl_noise = torch.randn([2, 4, 3, 16, 16], device=cuda)
    real_c = torch.empty([4, 0], device=cuda)
    sigma, p = 0.5, 0.6  # blur and augmentation on: half the images move by whole pixels, half resample
    runs = {"Gmain": lambda r: phases.G_main(r, sigma, p), "Dmain": lambda r: phases.D_main(r, real, real_c, sigma, p),
            "Dreg": lambda r: phases.D_r1(r, real, real_c, sigma, p, 4), "Greg": lambda r: phases.G_pl(r, 2, pl_noise)}

    def run_phases():
        for phase_id, run in runs.items():
            r = slice_step(draw_step(c, 0, phase_id, 4, G.z_dim, None, CPU), 0, 4, cuda)
            run(r)[0].backward()

    run_phases()  # the first calls build and load the kernels and let cuDNN choose
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            run_phases()
            phases.update_pl_mean(torch.ones([], device=cuda), 4)  # once per path-length step
            phases.update_stats(draw_step(c, 0, "Gmain", 4, G.z_dim, None, CPU), 4)  # once per step (CPU draws)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    sites = sorted({f"{Path(w.filename).name}:{w.lineno}" for w in caught if "synchroniz" in str(w.message)})
    assert not sites, f"host syncs at {sites}"


@pytest.mark.slow
@pytest.mark.parametrize("cfg, path", [("stylegan3-t", "reference"), ("stylegan3-t", "kernels"),
                                       ("stylegan2", "kernels")])  # StyleGAN2's reference: as SG3-T's D
def test_compiled_main_phases_match_eager(cfg, path, monkeypatch):
    """config compile: G main and D main run G and D compiled, each network one graph (fullgraph:
    no break, on the reference path and with the kernels), with the eager losses and gradients;
    R1 and path length stay eager. aot_eager stands in for inductor (minutes to build on 2 cores):
    it traces what inductor would, forward and backward, without generating code."""
    from sg3lib.train import loss as loss_mod
    c = make_config(16, cfg=cfg, batch=2, cbase=128, cmax=8, map=2, z_dim=8, w_dim=8)
    (g_class, g_kwargs), (d_class, d_kwargs) = network_kwargs(c)
    if cfg == "stylegan3-t":
        g_kwargs.update(num_layers=4, num_critical=1)  # 5 synthesis layers: tracing time is per layer
    torch.manual_seed(0)
    G, D = build_network(g_class, g_kwargs), build_network(d_class, d_kwargs)
    if path == "kernels":
        _install(monkeypatch, _simulator().SimulatedExt())
        monkeypatch.setattr(ops, "_use_cuda", lambda x, impl: None if impl == "ref" else _cuda)
    want = _phase_results(G, D, c, 2)

    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return torch._dynamo.lookup_backend("aot_eager")(gm, example_inputs)

    monkeypatch.setattr(loss_mod, "compile_module", lambda m, mode: torch.compile(m, backend=backend, fullgraph=True))
    torch._dynamo.reset()
    try:
        got = _phase_results(G, D, dict(c, compile="default"), 2)
    finally:
        torch._dynamo.reset()
        _cuda._reset()
    # mapping, synthesis and D, once in each main phase (G trains in one, D in the other)
    assert len(graphs) == 6
    for name in want:
        (loss0, grads0), (loss1, grads1) = want[name], got[name]
        torch.testing.assert_close(loss1, loss0, rtol=1e-5, atol=1e-6, msg=f"{name} loss")
        assert len(grads0) == len(grads1)
        for i, (g0, g1) in enumerate(zip(grads0, grads1)):
            assert (g0 is None) == (g1 is None), f"{name}: gradient {i}"
            if g0 is not None:
                _assert_close_to_scale(g1, g0, 1e-4, 1e-5, f"{name} gradient {i}")
