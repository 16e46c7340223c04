"""Milliseconds per call of sg3lib.ops, forward and backward, on StyleGAN3-T layer shapes.

    python benchmarks/bench_ops.py                    # GPU if present (ref vs cuda), else CPU (ref)
    python benchmarks/bench_ops.py --device cpu --res 256 --batch 1
    python benchmarks/bench_ops.py --res 256 512 1024 --dtype float32 float16

Layer shapes follow StyleGAN3-T's schedule (Karras et al. 2021, appendix F): the synthesis layers
run at size R + 20 (a 10-pixel margin) with about 32768 / R channels at the top, the first layers
at 36 px with 512 channels; filtered_lrelu upsamples by 2 (12 taps) or 4 (24 taps) and downsamples
by 2 (12 taps). The discriminator's 2x downsampling (4-tap filter) and its bias + lrelu
complete the set. Filters are random: speed does not depend on their values.

Appends a section (date, machine, command, table) to benchmarks/RESULTS.md unless --no-write.
"""
import argparse
import datetime
import math
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from results import append_results, machine_line, stop_on_sigterm  # noqa: E402  (benchmarks/results.py)
from sg3lib import ops  # noqa: E402


def layer_cases(res, batch):
    """(op name, label, make(device, dtype) -> (fn(x, impl), x, extra inputs needing grad))."""
    top_c = min(max(32768 // res, 8), 512)  # channel_base 32768, channel_max 512
    mid_c = min(2 * top_c, 512)

    def flrelu(size, ch, up, up_taps, pad):
        def make(dev, dt):
            x = torch.randn(batch, ch, size, size, device=dev, dtype=dt)
            b = torch.randn(ch, device=dev)
            fu, fd = torch.rand(up_taps, device=dev), torch.rand(12, device=dev)
            return (lambda x, impl: ops.filtered_lrelu(x, fu / fu.sum(), fd / fd.sum(), b, up=up, down=2,
                                                       padding=pad, clamp=256, impl=impl)), x
        return make

    def down2(size, ch):
        def make(dev, dt):
            f = torch.tensor([1.0, 3.0, 3.0, 1.0], device=dev) / 8
            return (lambda x, impl: ops.upfirdn2d(x, f, down=2, padding=1, impl=impl)), \
                torch.randn(batch, ch, size, size, device=dev, dtype=dt)
        return make

    def bias_lrelu(size, ch):
        def make(dev, dt):
            b = torch.randn(ch, device=dev)
            return (lambda x, impl: ops.bias_act(x, b, act="lrelu", clamp=256, impl=impl)), \
                torch.randn(batch, ch, size, size, device=dev, dtype=dt)
        return make

    s = res + 20
    return [
        ("filtered_lrelu", "36px x512 up2 down2", flrelu(36, 512, 2, 12, [9, 8, 9, 8])),
        ("filtered_lrelu", f"{res // 2 + 20}->{s}px x{mid_c} up4 down2",
         flrelu(res // 2 + 20, mid_c, 4, 24, [-6, -9, -6, -9])),
        ("filtered_lrelu", f"{s}px x{top_c} up2 down2", flrelu(s, top_c, 2, 12, [9, 8, 9, 8])),
        ("upfirdn2d", f"D {res}px x{top_c} down2 4-tap", down2(res, top_c)),
        ("bias_act", f"D {res}px x{top_c} lrelu", bias_lrelu(res, top_c)),
    ]


def timeit(fn, device, warmup, iters):
    """Median milliseconds per call."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    return times[len(times) // 2]


def bench_one(make, impl, device, dtype, warmup, iters):
    fn, x = make(device, dtype)
    x.requires_grad_(True)
    with torch.no_grad():
        fwd = timeit(lambda: fn(x, impl), device, warmup, iters)
    y = fn(x, impl)
    dy = torch.randn_like(y)
    bwd = timeit(lambda: torch.autograd.grad(y, x, dy, retain_graph=True), device, warmup, iters)
    return fwd, bwd


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--res", type=int, nargs="+", default=None, help="output resolutions (default GPU: 256 512 "
                   "1024; CPU: 256)")
    p.add_argument("--batch", type=int, default=None, help="batch size (default GPU 4, CPU 1)")
    p.add_argument("--dtype", nargs="+", default=None, choices=["float32", "float16"])
    p.add_argument("--iters", type=int, default=None, help="timed calls (default GPU 20, CPU 3)")
    p.add_argument("--warmup", type=int, default=None, help="untimed calls first (default GPU 3, CPU 1)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--no-write", action="store_true", help="print only; do not append to RESULTS.md")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    if args.threads:
        torch.set_num_threads(args.threads)
    res_list = args.res or ([256, 512, 1024] if gpu else [256])
    batch = args.batch or (4 if gpu else 1)
    dtypes = [getattr(torch, d) for d in (args.dtype or (["float32", "float16"] if gpu else ["float32"]))]
    iters = args.iters or (20 if gpu else 3)
    warmup = args.warmup if args.warmup is not None else (3 if gpu else 1)

    impls = ["ref"]
    note = ""
    if gpu:
        from sg3lib.ops import _cuda
        ok, reason = _cuda.available()
        impls += ["cuda"] if ok else []
        note = "" if ok else f"\nCUDA kernels unavailable ({reason}): reference only.\n"

    from tqdm.auto import tqdm
    jobs = [(r, c, dt) for r in res_list for c in layer_cases(r, batch) for dt in dtypes]
    rows = []
    with stop_on_sigterm() as stop:  # the stage budget's SIGTERM: the finished cases are still written
        for res, (op, label, make), dt in tqdm(jobs, desc="bench", unit="case"):
            t = {}
            for impl in impls:
                try:
                    t[impl] = bench_one(make, impl, device, dt, warmup, iters)
                except (torch.cuda.OutOfMemoryError, MemoryError):
                    t[impl] = (math.nan, math.nan)
                if gpu:
                    torch.cuda.empty_cache()
            rows.append((res, op, label, str(dt).replace("torch.", ""), t))
    stopped = stop.note(len(rows), len(jobs))

    head = "| res | op | layer | dtype | " + " | ".join(f"{i} fwd ms | {i} bwd ms" for i in impls)
    head += " | speed-up fwd / bwd |" if "cuda" in impls else " |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for res, op, label, dt, t in rows:
        cells = " | ".join(f"{t[i][0]:.2f} | {t[i][1]:.2f}" for i in impls)
        if "cuda" in impls:
            cells += f" | {t['ref'][0] / t['cuda'][0]:.1f}x / {t['ref'][1] / t['cuda'][1]:.1f}x"
        lines.append(f"| {res} | {op} | {label} | {dt} | {cells} |")
    table = "\n".join(lines)
    cmd = "python benchmarks/bench_ops.py " + " ".join(argv if argv is not None else sys.argv[1:])
    section = (f"## {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
               f"{'GPU' if gpu else 'CPU'}\n\n- machine: {machine_line(device)}\n- command: `{cmd.strip()}`\n"
               f"- batch {batch}, median of {iters} calls after {warmup} warm-up; backward = autograd.grad "
               f"w.r.t. x of a retained graph\n{stopped}{note}\n{table}\n")
    print(section)
    if not args.no_write and rows:
        append_results(section)
    stop.exit_if_stopped()
    return 0


if __name__ == "__main__":
    sys.exit(main())
