"""Images/s of full-width generators (official configs), appended to benchmarks/RESULTS.md.

CPU (recorded by the foundation/networks issue):
    python benchmarks/bench_generate.py --res 64 256 --batch 4
GPU (the GPU issue):
    python benchmarks/bench_generate.py --device cuda --res 256 512 1024 --batch 8 32 --precision fp32 fp16 bf16 --arch sg3t sg3r sg2
    python benchmarks/bench_generate.py --device cuda --res 1024 --batch 32 --precision fp16 --compile reduce-overhead
    python benchmarks/bench_generate.py --device cuda --res 1024 --batch 32 --precision fp16 --profile

--profile repeats each case's timed calls under torch.profiler (after timing them) and records
where that time went (results.top_costs).

--compile MODE runs G under torch.compile (the kernels are custom ops: one graph, no breaks);
reduce-overhead adds CUDA graphs. The first calls compile (minutes); they are not timed.
"""
import argparse
import datetime
import os
import sys
import time

import torch

from results import append_results, machine_line, profiler, stop_on_sigterm, top_costs  # benchmarks/results.py
from sg3lib.networks import build_network
from sg3lib.train.config import COMPILE_MODES

ARCHS = {  # official full-width configurations
    "sg3t": ("training.networks_stylegan3.Generator", dict(channel_base=32768, channel_max=512, mapping_kwargs=dict(num_layers=2))),
    "sg3r": ("training.networks_stylegan3.Generator", dict(channel_base=65536, channel_max=1024, conv_kernel=1,
                                                           use_radial_filters=True, mapping_kwargs=dict(num_layers=2))),
    "sg2": ("training.networks_stylegan2.Generator", dict(channel_base=32768, channel_max=512, mapping_kwargs=dict(num_layers=8))),
}


@torch.no_grad()
def images_per_second(arch, res, batch, precision, device, iters, compile_mode=None, profile=False):
    """Images/s over `iters` calls after warm-up; with `profile`, also (images/s, top costs) of the
    same calls repeated under the profiler."""
    cls, kw = ARCHS[arch]
    G = build_network(cls, dict(z_dim=512, c_dim=0, w_dim=512, img_resolution=res, img_channels=3, **kw)).eval().to(device)
    if precision == "bf16":
        G.set_bf16(True)
    force_fp32 = precision == "fp32"
    z = torch.randn(batch, 512, device=device)
    # ('cuda:1' is a GPU too: an exact 'cuda' test left it unsynchronised, timing kernel launches only)
    sync = (lambda: torch.cuda.synchronize(device)) if torch.device(device).type == "cuda" else (lambda: None)
    if compile_mode:
        torch._dynamo.reset()
        G = torch.compile(G, mode=compile_mode, fullgraph=True)  # kernels and reference ops: one graph each
    for _ in range(3 if compile_mode else 1):  # warm-up: kernel build, allocator, compilation, graph capture
        G(z, None, noise_mode="const", force_fp32=force_fp32)
    sync()
    t0 = time.perf_counter()
    for _ in range(iters):
        G(z, None, noise_mode="const", force_fp32=force_fp32)
    sync()
    ips = batch * iters / (time.perf_counter() - t0)
    if not profile:
        return ips
    with profiler(device) as prof:
        t0 = time.perf_counter()
        for _ in range(iters):
            G(z, None, noise_mode="const", force_fp32=force_fp32)
        sync()
        wall_s = time.perf_counter() - t0
    return ips, top_costs(prof, device, wall_s)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--arch", nargs="+", default=["sg3t"], choices=sorted(ARCHS))
    ap.add_argument("--res", nargs="+", type=int, default=[64, 256])
    ap.add_argument("--batch", nargs="+", type=int, default=[4])
    ap.add_argument("--precision", nargs="+", default=["fp32"], choices=["fp32", "fp16", "bf16"])
    ap.add_argument("--iters", type=int, default=1)
    ap.add_argument("--compile", default=None, choices=[m for m in COMPILE_MODES if m != "none"],
                    help="run G under torch.compile with this mode")
    ap.add_argument("--profile", action="store_true", help="also record where each case's time goes")
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args(argv)
    rows, profiles = [], []
    cases = [(arch, res, batch, prec) for arch in a.arch for res in a.res for batch in a.batch for prec in a.precision]
    with stop_on_sigterm() as stop:
        for arch, res, batch, prec in cases:
            ips = images_per_second(arch, res, batch, prec, a.device, a.iters, a.compile, a.profile)
            if a.profile:
                ips, costs = ips
                profiles.append(f"\n### Where the time goes: {arch} {res} px, batch {batch}, {prec}, "
                                f"{a.compile or 'eager'} ({a.iters} calls under torch.profiler)\n\n{costs}")
            rows.append(f"| {arch} | {res} | {batch} | {prec} | {a.compile or 'eager'} | {ips:.3f} "
                        f"| {batch / ips:.2f} |")
            print(rows[-1], flush=True)
    stopped = stop.note(len(rows), len(cases))
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    text = (f"\n## Generation, {stamp}, {a.device}\n\n- machine: {machine_line(a.device)}\n"
            f"- command: `python benchmarks/bench_generate.py {' '.join(sys.argv[1:] if argv is None else argv)}`\n"
            f"{stopped}\n"
            "| arch | res | batch | precision | torch.compile | images/s | s per batch |\n|---|---|---|---|---|---|---|\n"
            + "\n".join(rows) + "\n" + "".join(profiles))
    print("".join(profiles) + stopped)
    if not a.no_write and rows:
        append_results(text)
    stop.exit_if_stopped()


if __name__ == "__main__":
    main()
