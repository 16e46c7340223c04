"""Curation throughput and memory (issue 4): images/s for 1-4 megapixel JPEGs to 256 px on
2 workers, and peak memory for many small images (must not grow with the count).

    python benchmarks/bench_curate.py [--jpegs 40] [--counts 5000 20000] [--workers 2]
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def smooth_picture(rng, w, h):
    """Gradients + blocks, upsampled from a small array so making big JPEGs stays fast."""
    small = rng.integers(0, 256, (max(2, h // 64), max(2, w // 64), 3), dtype=np.uint8)
    img = Image.fromarray(small).resize((w, h), Image.BILINEAR)
    return img


def make_jpegs(folder, n, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        mp = rng.uniform(1, 4) * 1e6
        aspect = rng.uniform(0.75, 1.33)
        w, h = int((mp * aspect) ** 0.5), int((mp / aspect) ** 0.5)
        smooth_picture(rng, w, h).save(folder / f"{i:05d}.jpg", quality=90)


def make_small(folder, n, seed=1):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(folder / f"{i:06d}.png", compress_level=1)


CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[4])
from sg3lib.data import curate
t = time.time()
rep = curate(sys.argv[1], sys.argv[2], int(sys.argv[3]), workers=int(sys.argv[5]), progress=False,
             near_dup_threshold=None if sys.argv[6] == 'none' else int(sys.argv[6]), min_size=16, max_upscale=None)
print(json.dumps(dict(accepted=rep['accepted'], total=rep['total'], seconds=time.time() - t,
      main_peak_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
      worker_peak_mb=resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)))
"""


def run(src, dest, res, workers, near="4"):
    out = subprocess.run([sys.executable, "-c", CHILD, str(src), str(dest), str(res), str(ROOT), str(workers), near],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--jpegs", type=int, default=40)
    ap.add_argument("--counts", type=int, nargs="+", default=[5000, 20000])
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_jpegs(tmp / "jpegs", a.jpegs)
        r = run(tmp / "jpegs", tmp / "j.zip", 256, a.workers)
        print(f"1-4 Mpx JPEG -> 256 px, {a.workers} workers: {r['total'] / r['seconds']:.1f} images/s "
              f"({r['total']} in {r['seconds']:.1f} s; main peak {r['main_peak_mb']:.0f} MB, "
              f"worker peak {r['worker_peak_mb']:.0f} MB)")
        for n in a.counts:
            make_small(tmp / f"small{n}", n)
            r = run(tmp / f"small{n}", tmp / f"s{n}.zip", 32, a.workers)
            print(f"{n} small images -> 32 px: {r['total'] / r['seconds']:.0f} images/s, main peak "
                  f"{r['main_peak_mb']:.0f} MB, worker peak {r['worker_peak_mb']:.0f} MB")


if __name__ == "__main__":
    main()
