import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(os.environ.get("SG3_FIXTURES", ROOT.parent / "shared" / "fixtures" / "reference"))


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU; skipped without one")
    config.addinivalue_line("markers", "slow: takes more than a few seconds on 2 CPU cores")
    try:
        import torch
        # Two cores shared by pytest-xdist workers: one thread each avoids oversubscription.
        if os.environ.get("PYTEST_XDIST_WORKER"):
            torch.set_num_threads(1)
    except ImportError:
        pass


def pytest_collection_modifyitems(config, items):
    try:
        import torch
        has_gpu = torch.cuda.is_available()
    except ImportError:
        has_gpu = False
    if has_gpu:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def fixtures_dir():
    if not FIXTURES.is_dir():
        pytest.fail(f"reference fixtures not found at {FIXTURES}; set SG3_FIXTURES to the folder of the "
                    "reference fixtures (the official networks' outputs, shared/fixtures/reference beside the "
                    "checkout; see README)")
    return FIXTURES


@pytest.fixture
def full_float32():
    """float32 on a GPU without TF32 (cuDNN convolutions default to it: ~1e-3 relative error, ten
    times the fixtures' tolerance), as the official training runs; restored afterwards."""
    import torch
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def open_in_this_process(path):
    """Is `path` open in this process? (Linux /proc; elsewhere nothing is known, so False.)"""
    fds = "/proc/self/fd"
    if not os.path.isdir(fds):
        return False
    targets = []
    for fd in os.listdir(fds):
        try:
            targets.append(os.readlink(os.path.join(fds, fd)))
        except OSError:
            continue
    return os.path.realpath(path) in targets


def damage_compressed_bytes(path, member):
    """Overwrite ten bytes inside the compressed data of zip `path`'s `member` (not its headers), as a
    bad copy might: a deflated member then fails with zlib.error when read."""
    import zipfile
    with zipfile.ZipFile(path) as z:
        info = z.getinfo(member)
    b = bytearray(Path(path).read_bytes())
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)  # after the local header
    b[start + 2:start + 12] = b"\xff" * 10
    Path(path).write_bytes(bytes(b))


def start_in_a_session(cmd, **popen):
    """subprocess.Popen(cmd) in a session (and process group) of its own, with SIGINT at its default,
    as a terminal starts a command. A shell starts a background job (a script's `pytest ... &`) with
    SIGINT ignored, and that passes on through exec: the child then never saw interrupt_group_when's
    Ctrl-C and trained on (a handled SIGINT is at its default after exec, an ignored one stays ignored)."""
    import signal
    import subprocess
    ignored = signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    if ignored:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
    try:
        return subprocess.Popen(cmd, start_new_session=True, **popen)
    finally:
        if ignored:
            signal.signal(signal.SIGINT, signal.SIG_IGN)


def interrupt_group_when(proc, ready, what, wait_s, end_s):
    """Once `ready()` holds, send SIGINT to `proc`'s process group (started with start_in_a_session),
    as a terminal's Ctrl-C and Jupyter's interrupt send it; return its stderr once it has ended.
    `what` names the process in the failure messages; the waits are hang guards, not speed checks."""
    import signal
    import subprocess
    import time
    deadline = time.time() + wait_s
    while not ready() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    if proc.poll() is not None or not ready():
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"{what} never got to the point of the interrupt:\n" + proc.communicate()[1].decode())
    os.killpg(proc.pid, signal.SIGINT)
    try:
        return proc.communicate(timeout=end_s)[1].decode()
    except subprocess.TimeoutExpired:  # say which processes were left and what they were doing
        left = subprocess.run(["ps", "-o", "pid,ppid,stat,wchan:24,etimes,args", "--sid", str(proc.pid)],
                              capture_output=True, text=True).stdout
        os.killpg(proc.pid, signal.SIGKILL)
        err = proc.communicate()[1].decode()
        pytest.fail(f"{what} did not end on SIGINT; its processes then:\n{left}\nits stderr:\n{err}")
