"""Training statistics: one JSON object per tick appended to stats.jsonl (optional TensorBoard).

Each line is written and flushed whole, so a killed run leaves at most a truncated last line,
which `read_stats` skips (and counts).
"""
import json
import math
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
            for k, v in record.items():  # (not the Unix time: a float32 scalar keeps it to 128 s)
                if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("kimg", "time"):
                    self.tb.add_scalar(k, v, global_step=round(record.get("kimg", 0) * 1000))
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
    with open(path, encoding="utf-8", errors="replace") as f:  # damaged bytes: a bad line, not a crash
        for line in f:
            try:
                rec = json.loads(line)
            except ValueError:
                bad += 1
                continue
            if isinstance(rec, dict):
                recs.append(rec)
            else:  # valid JSON, but not a record ('0', 'null': damaged): truncate_after would fail on it
                bad += 1
    return recs, bad


def truncate_after(run_dir, kimg):
    """Drop records newer than `kimg` (a resumed run rewrites them), atomically."""
    path = os.path.join(run_dir, "stats.jsonl")
    recs, bad = read_stats(run_dir)
    if not os.path.exists(path):
        return
    if bad:
        print(f"{path}: dropped {bad} unreadable line{'s' * (bad > 1)} (cut short or damaged)")
    with atomic_write(path, "w") as f:  # fsynced: the log is the run's history, not an empty file after a crash
        for r in recs:
            if r.get("kimg", 0) <= kimg + 1e-9:
                f.write(json.dumps(r) + "\n")


def tick_line(rec):
    """One line for a tick, for a run without the progress bar (a log file)."""
    parts = [f"tick {rec['tick']}", f"kimg {rec['kimg']:g}"]
    parts += [f"{k} {rec[k]:.4g}" for k in ("loss_G", "loss_D", "ada_p", "sec_per_kimg", "mem_peak_gb") if k in rec]
    return "  ".join(parts)


def divergence_warning(rec):
    """A warning if the record has NaN or infinite values (a diverged run), else None."""
    bad = [k for k, v in rec.items() if isinstance(v, float) and not math.isfinite(v)]
    if bad:
        return (f"warning: {', '.join(f'{k} is {rec[k]}' for k in bad)} at kimg {rec['kimg']:g}: training has "
                "diverged; resume from an earlier snapshot with a lower --glr/--dlr or a larger --gamma")
    return None
