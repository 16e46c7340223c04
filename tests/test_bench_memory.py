"""benchmarks/bench_memory.py: the meta-device run counts what the GPU path saves."""
import math
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
import bench_memory  # noqa: E402

from sg3lib.networks import build_network  # noqa: E402
from sg3lib.train.config import make_config, network_kwargs  # noqa: E402


def test_saved_masks_match_the_layer_geometry():
    """The filtered_lrelu masks G main keeps are batch x channels x th x ceil(tw / 4) bytes per layer,
    th and tw from each layer's own sizes, padding and filter taps; bias_act (D, mapping) keeps its
    slope codes; and the other phases save too."""
    batch = 4
    phases, peaks, fixed, (n_g, n_d), per_kimg = bench_memory.profile("stylegan3-t", 32, batch)
    (g_class, g_kwargs), _ = network_kwargs(make_config(32, cfg="stylegan3-t", precision="fp16"))
    G = build_network(g_class, g_kwargs)
    expected = 0
    for name in G.synthesis.layer_names:
        layer = getattr(G.synthesis, name)
        conv_out = int(layer.in_size[0]) + layer.conv_kernel - 1
        side = conv_out * layer.up_factor + layer.padding[0] + layer.padding[1] - layer.up_taps + 1
        expected += batch * layer.out_channels * side * math.ceil(side / 4)
    masks = [s for s in phases["G main"].seen if s.dtype == torch.uint8]
    assert sum(s.nbytes for s in masks if len(s.shape) == 4) == expected  # filtered_lrelu: [N, C, th, tw4]
    assert any(len(s.shape) == 1 for s in masks)  # bias_act's slope codes, [ceil(numel / 4)]
    assert all(p.total > 0 for p in phases.values())
    assert n_g == sum(p.numel() for p in G.parameters()) and fixed == 12 * (n_g + n_d) + 4 * n_g
    # a phase's peak holds at least what it saved; R1's backward goes through a double-backward graph
    assert set(peaks) == set(phases) == {"G main", "D main", "D R1"}  # no path length phase in SG3
    assert all(peaks[name].peak >= phases[name].total for name in peaks)
    assert peaks["D R1"].peak > phases["D R1"].total
    # every phase writes at least what it holds at its peak; D main (real and fake images) counts
    # more FLOPs than R1 (real ones only), and the per-kimg total weighs R1 by its interval
    assert all(peaks[name].written >= peaks[name].peak for name in peaks)
    assert peaks["D main"].flops > peaks["D R1"].flops > 0
    assert per_kimg == pytest.approx(sum(1000 / batch * peaks[n].flops * w
                                         for n, w in [("G main", 1), ("D main", 1), ("D R1", 1 / 16)]))
    # reduced precision where StyleGAN marks it: some saved tensors are float16
    assert any(s.dtype == torch.float16 for s in phases["G main"].seen)


def test_peak_memory_follows_storages_until_freed():
    """On the meta device: a temporary counts until freed, views share their storage, and the peak of
    a forward and backward is what was alive at once."""
    mb = 1000 * 1000
    x = torch.empty(mb // 4, device="meta", requires_grad=True)  # made outside: not counted
    with bench_memory.PeakMemory() as m:
        y = (x * 2).sin()  # x * 2 is kept for sin's backward; y is alive: 2 MB
        assert (m.now, m.peak, m.ops, m.written) == (2 * mb, 2 * mb, 2, 2 * mb)
        view = y[:10]  # a view: no new storage
        assert m.now == 2 * mb
        y.sum().backward()  # dy (4 bytes), cos(x * 2) * dy (1 MB) alive with the 2 MB kept, then x.grad
        del y, view
    assert m.peak >= 3 * mb
    assert m.now == x.grad.untyped_storage().nbytes() == mb  # only x.grad is left


def test_stylegan2_profiles_the_path_length_phase_too():
    """StyleGAN2 trains with path length regularization: its double-backward phase is measured too."""
    phases, peaks, _, _, _ = bench_memory.profile("stylegan2", 32, 4)
    assert set(peaks) == {"G main", "G pl", "D main", "D R1"}
    assert peaks["G pl"].peak > phases["G pl"].total > 0


def test_grouped_convolution_gradients_cost_what_the_forward_does():
    """torch's FLOP formula counts a grouped convolution's weight gradient as if ungrouped; the one
    bench_memory uses counts each gradient at the forward's cost, grouped, transposed or not."""
    from torch.utils.flop_counter import FlopCounterMode
    for transposed in (False, True):
        x = torch.empty(1, 8 * 6, 10, 10, device="meta", requires_grad=True)  # 8 groups of 6 channels
        w = torch.empty(8 * (6 if transposed else 5), 5 if transposed else 6, 3, 3, device="meta", requires_grad=True)
        conv = torch.nn.functional.conv_transpose2d if transposed else torch.nn.functional.conv2d
        with FlopCounterMode(display=False, custom_mapping=bench_memory.CONV_BACKWARD) as fc:
            y = conv(x, w, groups=8)
            forward = fc.get_total_flops()
            torch.autograd.grad(y.sum(), [x, w])
        # 2 * outputs * (inputs per group) * taps: conv 40 x 8x8 outputs of 6 x 3x3 inputs each;
        # transposed: 48 x 10x10 inputs, each spread over 5 x 3x3 outputs
        assert forward == (2 * 40 * 8 * 8 * 6 * 9 if not transposed else 2 * 48 * 10 * 10 * 5 * 9)
        assert fc.get_total_flops() == 3 * forward


def test_a_filter_that_matches_no_case_is_refused_before_anything_is_written(tmp_path, monkeypatch, capsys):
    """bench_memory appended a dated section of two empty tables to RESULTS.md for --cfg stylegan3t."""
    import results
    appended = []
    monkeypatch.setattr(results, "append_results", lambda text: appended.append(text))
    monkeypatch.setattr(sys, "argv", ["bench_memory.py", "--cfg", "stylegan3t"])
    with pytest.raises(SystemExit) as e:
        bench_memory.main()
    assert e.value.code == 2 and "no case matches" in capsys.readouterr().err and not appended


def test_bench_generate_synchronises_a_numbered_gpu(monkeypatch):
    """`--device cuda:0` was never synchronised (the test was device == 'cuda'): the timed loop
    measured kernel launches, and RESULTS.md would get an inflated images/s."""
    import bench_generate

    class Fake(torch.nn.Module):
        def to(self, *a, **k):
            return self

        def forward(self, z, c, **k):
            return z
    synced = []
    real_randn = torch.randn
    monkeypatch.setattr(bench_generate, "build_network", lambda *a, **k: Fake())
    monkeypatch.setattr(torch, "randn", lambda *a, device=None, **k: real_randn(*a, **k))
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: synced.append(str(device)))
    for device in ("cuda", "cuda:1"):
        synced.clear()
        bench_generate.images_per_second("sg3t", 64, 2, "fp32", device, iters=3)
        assert synced and set(synced) == {device}
