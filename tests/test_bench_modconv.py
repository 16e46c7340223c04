"""benchmarks/bench_modconv.py reads the layers off the real networks and times both forms."""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_modconv  # noqa: E402

from sg3lib.networks import build_network  # noqa: E402
from sg3lib.train.config import make_config, network_kwargs  # noqa: E402


def test_layers_follow_the_network():
    """One entry per distinct modulated convolution of StyleGAN3-T's synthesis, counts adding up to its
    layers, each in the dtype training gives it (the top layers float16, the rest float32)."""
    layers = bench_modconv.synthesis_layers("stylegan3-t", 256, "fp16")  # meta device: no compute
    (g_class, g_kwargs), _ = network_kwargs(make_config(256, cfg="stylegan3-t", precision="fp16"))
    G = build_network(g_class, g_kwargs)
    assert sum(layers.values()) == len(G.synthesis.layer_names)
    assert {layer.dtype for layer in layers} == {torch.float16, torch.float32}
    torgb = [layer for layer in layers if not layer.demodulate]
    assert len(torgb) == 1 and torgb[0].weight_shape[0] == 3 and torgb[0].x_shape[1:] == (256, 256)
    assert all(layer.input_gain for layer in layers)  # StyleGAN3's magnitude EMA


def test_main_times_both_forms_on_the_cpu():
    section = bench_modconv.main(["--device", "cpu", "--cfg", "stylegan2", "--res", "8", "--batch", "1",
                                  "--iters", "1", "--warmup", "0", "--no-write"])
    rows = [ln for ln in section.splitlines() if ln.startswith("| stylegan2 | 8 |")]
    layers = bench_modconv.synthesis_layers("stylegan2", 8, "fp32")
    assert len(rows) == len(layers) + 1  # each distinct layer, and the summary
    assert any(" | 2 | " in r for r in rows)  # an upsampling layer (transposed convolution)
    for r in rows[:-1]:
        batched, grouped = (float(c) for c in r.split("|")[8:10])
        assert batched > 0 and grouped > 0
