"""How many CPUs this process may use, for the default number of worker processes.

os.cpu_count() is the host's count: in a container limited to 2 CPUs on a 64-core host, or a
job pinned to a few cores, it starts far more processes than there are CPUs to run them.
Standard library only: curation imports this without torch.
"""
import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def usable_cpus(cgroup_root=None):
    """CPUs this process may run on (its affinity), capped by a container's CPU quota (cgroup v2
    `cpu.max`, v1 `cpu/cpu.cfs_quota_us`), rounded up; at least 1."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        n = os.cpu_count() or 1
    quota = _cgroup_quota(Path(cgroup_root or CGROUP_ROOT))
    return max(1, min(n, math.ceil(quota)) if quota else n)


def _cgroup_quota(root):
    """The CPU quota in CPUs (2.5 = 250 ms per 100 ms), or None: no limit, or none readable."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]  # "max 100000" or "200000 100000"
    except (OSError, ValueError):
        try:
            quota = (root / "cpu" / "cpu.cfs_quota_us").read_text().strip()  # -1: no limit
            period = (root / "cpu" / "cpu.cfs_period_us").read_text().strip()
        except OSError:
            return None
    try:
        q, p = int(quota), int(period)
    except ValueError:  # "max"
        return None
    return q / p if q > 0 and p > 0 else None
