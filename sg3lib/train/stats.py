"""Training statistics: one JSON object per tick appended to stats.jsonl (optional TensorBoard).

Each line is written and flushed whole, so a killed run leaves at most a truncated last line,
which `read_stats` skips (and counts).
"""
import json
import os

from ..files import atomic_write


class StatsWriter:
    """purge_step: on resume, the first image count whose TensorBoard events belong to lost work (after
    the snapshot); TensorBoard hides those, as truncate_after drops their stats.jsonl lines."""

    def __init__(self, run_dir, tensorboard=False, purge_step=None):
        self.path = os.path.join(run_dir, "stats.jsonl")
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.tb = SummaryWriter(run_dir, purge_step=purge_step)
            except ImportError:
                print("TensorBoard is not installed (pip install tensorboard); writing stats.jsonl only")

    def write(self, record):
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
        if self.tb is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k != "kimg":
                    self.tb.add_scalar(k, v, global_step=int(record.get("kimg", 0) * 1000))
            self.tb.flush()

    def close(self):
        if self.tb is not None:
            self.tb.close()


def read_stats(run_dir):
    """Return (records, n_bad_lines) from run_dir/stats.jsonl."""
    path = os.path.join(run_dir, "stats.jsonl")
    recs, bad = [], 0
    if not os.path.exists(path):
        return recs, bad
    with open(path) as f:
        for line in f:
            try:
                recs.append(json.loads(line))
            except ValueError:
                bad += 1
    return recs, bad


def truncate_after(run_dir, kimg):
    """Drop records newer than `kimg` (a resumed run rewrites them), atomically."""
    path = os.path.join(run_dir, "stats.jsonl")
    recs, _ = read_stats(run_dir)
    if not os.path.exists(path):
        return
    with atomic_write(path, "w") as f:  # fsynced: the log is the run's history, not an empty file after a crash
        for r in recs:
            if r.get("kimg", 0) <= kimg + 1e-9:
                f.write(json.dumps(r) + "\n")
