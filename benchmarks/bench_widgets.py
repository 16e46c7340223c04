"""Latency per widget update: move a control, time until the new image is shown.

    python benchmarks/bench_widgets.py                       # the demo model's config (32 px SG3-T), CPU
    python benchmarks/bench_widgets.py --network out/demo/run/snapshot-000000400.pt
    python benchmarks/bench_widgets.py --official-1024 --device cuda   # 1024 px StyleGAN3-T config

Appends a section (date, machine, command, table) to benchmarks/RESULTS.md unless --no-write.
'update' is the time from the slider change to the image being shown (the worker's debounce
included); 'render' is the render alone (mapping, synthesis, PNG encoding), from render_sync().
The network's weights do not change the cost, so a random one with the right config is enough.
"""
import argparse
import datetime
import statistics
import sys
import time

import torch

from results import append_results, machine_line, stop_on_sigterm  # benchmarks/results.py
from sg3lib.explore import load_generator
from sg3lib.explore.widgets import Interpolator, LatentExplorer, StyleMixer
from sg3lib.networks import build_network

DEMO = dict(z_dim=64, c_dim=0, w_dim=64, img_resolution=32, img_channels=3, channel_base=1024, channel_max=32,
            mapping_kwargs=dict(num_layers=2))  # as sg3lib/demo.py trains it on a CPU
OFFICIAL_1024 = dict(z_dim=512, c_dim=0, w_dim=512, img_resolution=1024, img_channels=3, channel_base=32768,
                     channel_max=512, mapping_kwargs=dict(num_layers=2))


def bench(view, control, values, sync_repeats):
    view.wait(300)
    updates = []
    for v in values:
        view.controls[control].value = v
        view.wait(300)
        updates.append(view.last_latency_s)
    renders = []
    for _ in range(sync_repeats):
        getattr(view, "_cache", {}).clear()  # StyleMixer: time a full render (all three images)
        t = time.perf_counter()
        view.render_sync()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        renders.append(time.perf_counter() - t)
    view.close()
    return statistics.median(updates), statistics.median(renders)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--network", help="a snapshot or .pkl (default: a random net with the demo config)")
    ap.add_argument("--official-1024", action="store_true", help="the official 1024 px StyleGAN3-T config")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    ap.add_argument("--updates", type=int, default=10)
    ap.add_argument("--no-write", action="store_true", help="print only; do not append to RESULTS.md")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.network:
        G = load_generator(args.network, device=args.device)
        name = args.network
    else:
        cfg = OFFICIAL_1024 if args.official_1024 else DEMO
        G = build_network("training.networks_stylegan3.Generator", cfg).to(args.device).eval().requires_grad_(False)
        name = f"random StyleGAN3-T, {cfg['img_resolution']} px, channel_base {cfg['channel_base']}"
    print(f"{name} on {args.device} ({torch.get_num_threads()} CPU threads)")
    vals = list(range(1, args.updates + 1))
    cases = [("LatentExplorer seed", LatentExplorer, "seed", vals),
             ("LatentExplorer rotate", LatentExplorer, "rotate", [float(v * 10) for v in vals]),
             ("Interpolator t", Interpolator, "t", [v / (len(vals) + 1) for v in vals]),
             ("StyleMixer style seed (style + mix)", StyleMixer, "style", vals),
             ("StyleMixer layer range (mix only)", StyleMixer, "layers", [(1, 2 + v % (G.num_ws - 3)) for v in vals])]
    rows = []
    with stop_on_sigterm() as stop:  # the stage budget's SIGTERM: the finished widgets are still written
        for label, widget, control, values in cases:  # each view made when its turn comes, closed by bench
            update, render = bench(widget(G), control, values, args.updates)
            print(f"  {label:36s} update {update * 1000:7.1f} ms   render {render * 1000:7.1f} ms   (medians)",
                  flush=True)
            rows.append(f"| {label} | {update * 1000:.1f} | {render * 1000:.1f} |")
    stopped = stop.note(len(rows), len(cases))
    cmd = "python benchmarks/bench_widgets.py " + " ".join(sys.argv[1:] if argv is None else argv)
    section = (f"## Widgets, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {args.device}\n\n"
               f"- machine: {machine_line(args.device)}\n- command: `{cmd.strip()}`\n"
               f"- {name}; update: slider change to image shown, render: render_sync() alone; medians of "
               f"{args.updates}\n{stopped}\n| widget (control moved) | update ms | render ms |\n|---|---|---|\n"
               + "\n".join(rows) + "\n")
    if not args.no_write and rows:
        append_results(section)
    stop.exit_if_stopped()
    return section


if __name__ == "__main__":
    main()
