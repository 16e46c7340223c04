"""Training speed: sec/kimg and peak memory of sg3lib.train.train.

    python benchmarks/bench_train.py --preset cpu-tiny          # recorded on the CPU machine
    python benchmarks/bench_train.py --preset gpu               # StyleGAN3-T/-R, 256/512 px, batch 32
    python benchmarks/bench_train.py --preset gpu --res 256 --precision fp16 fp32
    python benchmarks/bench_train.py --preset gpu --res 256 --cfg stylegan3-t --sync-debug   # host syncs
    python benchmarks/bench_train.py --preset gpu --res 256 --cfg stylegan3-t --compile default --batch-gpu 16
    python benchmarks/bench_train.py --preset gpu --res 256 --cfg stylegan3-t --batch-gpu 16 --profile   # top costs

--compile runs G and D of the main phases under torch.compile; the warm-up tick compiles (its
length is reported as first_tick_s), the measured tick runs compiled.
--profile runs the measured tick (16 steps: R1 once, path length as often as in a long run) under
torch.profiler and records where its time went (results.top_costs) instead of the speed table: the
profiler's own overhead makes its sec/kimg no speed figure.

Each case trains on a synthetic dataset (random smooth images, made in a temporary folder) for
a warm-up tick and a measured tick; the figures are the measured tick's `sec_per_kimg` and
`mem_peak_gb` from stats.jsonl (GPU: torch.cuda.max_memory_allocated; CPU: peak RSS).
Prints one JSON line per case and a Markdown table, which is appended to benchmarks/RESULTS.md
unless --no-write.
"""
import argparse
import collections
import contextlib
import datetime
import io
import json
import os
import platform
import sys
import tempfile
import time
import warnings
import zipfile

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

PRESETS = {
    "cpu-tiny": [dict(cfg="stylegan2", res=16, batch=8, batch_gpu=8, cbase=256, cmax=16, map=2, z_dim=16,
                      w_dim=16, imgs=64),
                 dict(cfg="stylegan3-t", res=16, batch=8, batch_gpu=8, cbase=128, cmax=8, map=2, z_dim=8,
                      w_dim=8, imgs=32)],
    "gpu": [dict(cfg=c, res=r, batch=32, batch_gpu=bg, imgs=1024)
            for c in ("stylegan3-t", "stylegan3-r") for r in (256, 512) for bg in (16, 8)]
           + [dict(cfg="stylegan2", res=256, batch=32, batch_gpu=16, imgs=1024)],
}


def make_dataset(path, n, res):
    from PIL import Image
    rng = np.random.RandomState(0)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as z:
        for i in range(min(n, 256)):
            yy, xx = np.mgrid[:res, :res] / res
            a = np.stack([np.sin(xx * 6 + rng.rand() * 6), np.cos(yy * 5 + rng.rand() * 6), xx * yy], -1)
            buf = io.BytesIO()
            Image.fromarray(((a * 0.5 + 0.5) * 255).astype(np.uint8)).save(buf, format="PNG")
            z.writestr(f"{i // 1000:05d}/img{i:08d}.png", buf.getvalue())


class TickProfiler:
    """train()'s callback: profiles the second tick (started when the first tick ends)."""

    def __init__(self, device):
        from results import profiler  # benchmarks/results.py
        self.prof, self.device, self.t0, self.wall_s = profiler(device), device, None, None

    def __call__(self, event, info):
        if event != "tick":
            return
        if self.t0 is None:
            self.prof.start()
            self.t0 = time.perf_counter()
        elif self.wall_s is None:  # the tick's statistics were just read: its work has finished
            self.wall_s = time.perf_counter() - self.t0  # before stop(), which gathers every event (s)
            self.prof.stop()


def run_case(case, workdir, precision, sync_debug=False, compile_mode="none", tf32=False, profile=False):
    import torch
    from sg3lib.train import train
    if sync_debug:  # a short run (16 steps at batch 32) that counts host syncs instead of timing
        case = dict(case, imgs=256)
    if profile:  # 16 steps per tick: the profiled tick holds one R1 step (every 16th) and pl every 4th
        case = dict(case, imgs=16 * case["batch"])
    profiler = TickProfiler("cuda" if torch.cuda.is_available() else "cpu") if profile else None
    data = os.path.join(workdir, f"data{case['res']}.zip")
    if not os.path.exists(data):
        make_dataset(data, case["imgs"], case["res"])
    out = os.path.join(workdir, f"run-{case['cfg']}-{case['res']}-{case['batch_gpu']}-{precision}-{compile_mode}-{tf32}")
    tick = case["imgs"] / 1000
    opts = {k: v for k, v in case.items() if k not in ("res", "imgs")}
    t0 = time.time()
    caught = []
    with contextlib.ExitStack() as stack:
        if sync_debug:
            caught = stack.enter_context(warnings.catch_warnings(record=True))
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            stack.callback(torch.cuda.set_sync_debug_mode, 0)
        train(data, out, kimg=2 * tick, tick=tick, snap=0, workers=0 if not torch.cuda.is_available() else 2,
              precision=precision, compile=compile_mode, tf32=tf32, progress=False, keep_snapshots=1,
              callback=profiler, **opts)
    recs = [json.loads(line) for line in open(os.path.join(out, "stats.jsonl"))]
    last = recs[-1]
    result = dict(case, sec_per_kimg=round(last["sec_per_kimg"], 2), mem_peak_gb=round(last["mem_peak_gb"], 3),
                  wall_s=round(time.time() - t0, 1), precision=precision + (" +tf32" if tf32 else ""),
                  compile=compile_mode,
                  first_tick_s=round(recs[0]["sec_per_tick"], 1))
    if sync_debug:
        syncs = collections.Counter(f"{os.path.relpath(w.filename)}:{w.lineno}" for w in caught
                                    if "synchroniz" in str(w.message))
        result["host_syncs"] = dict(syncs.most_common())
        result["steps"] = int(2 * tick * 1000 // case["batch"])
    if profile:
        from results import top_costs
        result["profile"] = top_costs(profiler.prof, profiler.device, profiler.wall_s)
    return result


def main(argv=None):
    from sg3lib.train.config import COMPILE_MODES
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", choices=sorted(PRESETS), default="cpu-tiny")
    p.add_argument("--precision", nargs="+", default=["fp32"], choices=["fp32", "fp16", "bf16"],
                   help="fp16/bf16: the 4 highest resolutions in reduced precision, as the official default")
    p.add_argument("--compile", default="none", choices=COMPILE_MODES,
                   help="G and D of the main phases under torch.compile in this mode")
    p.add_argument("--tf32", action="store_true", help="let float32 layers use TF32 (train's tf32 option)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--res", type=int, nargs="+", default=None, help="only the preset's cases at these resolutions")
    p.add_argument("--cfg", nargs="+", default=None, help="only these configs (e.g. stylegan3-t)")
    p.add_argument("--batch-gpu", type=int, nargs="+", default=None, help="only the preset's cases with these")
    p.add_argument("--no-write", action="store_true", help="print only; do not append to RESULTS.md")
    p.add_argument("--sync-debug", action="store_true",
                   help="GPU: count host syncs per source line in a short run (torch.cuda.set_sync_debug_mode); "
                        "prints only")
    p.add_argument("--profile", action="store_true",
                   help="profile the measured tick and record its top costs (instead of the speed table)")
    args = p.parse_args(argv)
    import torch
    if args.sync_debug and not torch.cuda.is_available():
        p.error("--sync-debug counts CUDA host syncs: it needs a GPU")
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu"
    print(f"# bench_train {args.preset} on {dev}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {time.strftime('%Y-%m-%d %H:%M')}")
    cases = [c for c in PRESETS[args.preset] if (args.res is None or c["res"] in args.res)
             and (args.cfg is None or c["cfg"] in args.cfg)
             and (args.batch_gpu is None or c["batch_gpu"] in args.batch_gpu)]
    from results import append_results, machine_line, stop_on_sigterm  # benchmarks/results.py
    rows = []
    with stop_on_sigterm() as stop, tempfile.TemporaryDirectory() as work:
        for case in cases:
            for precision in args.precision:
                r = run_case(case, work, precision, args.sync_debug, args.compile, args.tf32, args.profile)
                print(json.dumps({k: v for k, v in r.items() if k != "profile"}), flush=True)
                rows.append(r)
    stopped = stop.note(len(rows), len(cases) * len(args.precision))
    if stopped:
        print(stopped, flush=True)
    if args.sync_debug:
        return stop.exit_if_stopped()
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    head = (f"- machine: {machine_line(device, tf32=args.tf32 if device == 'cuda' else None)}\n"
            f"- command: `python benchmarks/bench_train.py {' '.join(sys.argv[1:] if argv is None else argv)}`\n"
            + stopped)
    if args.profile:
        text = "".join(f"\n## Training profile, {stamp}: {r['cfg']} {r['res']} px, batch {r['batch']}, batch-gpu "
                       f"{r['batch_gpu']}, {r['precision']}, torch.compile {r['compile']}\n\n{head}"
                       f"- the measured tick ({r['imgs']} images) under torch.profiler\n{r['profile']}"
                       for r in rows)
        print(text)
        if not args.no_write and rows:
            append_results(text)
        return stop.exit_if_stopped() or text
    table = ("| cfg | res | batch | batch-gpu | precision | torch.compile | sec/kimg | peak mem GB | first tick s |\n"
             "|---|---|---|---|---|---|---|---|---|\n")
    table += "\n".join(f"| {r['cfg']} | {r['res']} | {r['batch']} | {r['batch_gpu']} | {r['precision']} | "
                       f"{r['compile']} | {r['sec_per_kimg']} | {r['mem_peak_gb']} | {r['first_tick_s']} |"
                       for r in rows)
    print("\n" + table)
    if not args.no_write and rows:
        section = (f"\n## Training, {stamp}\n\n{head}"
                   "- figures of the second (measured) tick; peak memory from torch.cuda.max_memory_allocated "
                   "(GPU) or peak RSS (CPU)\n\n" + table + "\n")
        append_results(section)
    return stop.exit_if_stopped() or table


if __name__ == "__main__":
    main()
