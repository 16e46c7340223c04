"""The CUDA path of sg3lib.ops, checked three ways.

1. Loader (CPU): without a GPU, or with a broken toolchain, `available()` says why, warns once and
   never hangs; the build lock breaks stale locks and bounds waiting.
2. Kernel logic and autograd wiring (CPU): the kernels in kernels/*.cu themselves, compiled with g++
   for the CPU simulator in tests/cudasim (blocks of fibers, real shared memory and barriers, NaN
   guards for out-of-bounds reads, checked guards for out-of-bounds writes, threads run in both
   orders for races). Plugged in place of the compiled extension, they run the real autograd
   Functions of _cuda.py, whose forward, backward and double backward must match the reference ops.
3. GPU (marked `gpu`, skipped without one): the compiled kernels against the reference, fp32 and
   fp16, forward, backward and double backward, for odd sizes and every up/down/padding
   combination of the StyleGAN2/3 layers (the SG3 schedule comes from the reference fixtures).
"""
import json
import math
import os
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest
import torch

from sg3lib.ops import _cuda
from sg3lib.ops.bias_act import bias_act_ref
from sg3lib.ops.filtered_lrelu import filtered_lrelu_ref
from sg3lib.ops.upfirdn2d import parse_padding, parse_scaling, upfirdn2d_ref

ACTS = ["linear", "relu", "lrelu", "tanh", "sigmoid", "elu", "selu", "softplus", "swish"]


def assert_close(a, b, tol, what=""):
    """Max abs difference relative to the reference's scale (at least 1)."""
    assert a.shape == b.shape, f"{what}: shape {tuple(a.shape)} != {tuple(b.shape)}"
    scale = max(float(b.detach().abs().max()), 1.0) if b.numel() else 1.0
    err = float((a.detach().float() - b.detach().float()).abs().max()) / scale if b.numel() else 0.0
    assert err <= tol, f"{what}: max error {err:.3g} > {tol:g} (scale {scale:.3g})"


# =============================================================================================
# 1. Loader


@pytest.fixture
def fresh_loader(monkeypatch, tmp_path):
    monkeypatch.setenv("SG3LIB_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("SG3LIB_CUDA", raising=False)
    _cuda._reset()
    yield
    _cuda._reset()


def _pretend_gpu(monkeypatch, caps=((9, 0),), torch_archs=()):
    """GPUs of compute capabilities `caps` (device 0 current); torch built for `torch_archs`."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: len(caps))
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: caps[device or 0])
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: list(torch_archs))
    monkeypatch.setattr(torch.version, "cuda", torch.version.cuda or "13.0")


def test_no_gpu_falls_back_with_reason(fresh_loader, monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", torch.version.cuda or "13.0")  # a CUDA torch, as here
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    start = time.monotonic()
    with pytest.warns(UserWarning, match="no CUDA GPU"):
        ok, reason = _cuda.available()
    assert not ok and "no CUDA GPU" in reason
    lines = _cuda.report().splitlines()
    assert [ln.split(":")[0] for ln in lines] == ["upfirdn2d", "filtered_lrelu", "bias_act"]
    assert all("reference (no CUDA GPU" in ln for ln in lines)
    assert time.monotonic() - start < 5


def test_disabled_by_env(fresh_loader, monkeypatch):
    monkeypatch.setenv("SG3LIB_CUDA", "0")
    _pretend_gpu(monkeypatch)
    assert _cuda.available() == (False, "disabled by SG3LIB_CUDA=0")


def test_missing_nvcc_warns_once_and_falls_back(fresh_loader, monkeypatch, tmp_path):
    _pretend_gpu(monkeypatch)
    monkeypatch.setenv("CUDA_HOME", str(tmp_path / "no-such-cuda"))
    with pytest.warns(UserWarning, match="nvcc not found") as record:
        ok, reason = _cuda.available()
    assert not ok and str(tmp_path / "no-such-cuda") in reason
    assert len([w for w in record if "sg3lib" in str(w.message)]) == 1
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second call must not warn again
        assert _cuda.available() == (False, reason)
    assert "nvcc not found" in _cuda.report()
    with pytest.raises(RuntimeError, match="nvcc not found"):
        _cuda._ext()


def _toolkit(root, headers=True, nvcc_script="exit 0"):
    """A CUDA toolkit folder: bin/nvcc (a shell script), and include/cuda_runtime.h if headers."""
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "nvcc").write_text(f"#!/bin/sh\n{nvcc_script}\n")
    (root / "bin" / "nvcc").chmod(0o755)
    if headers:
        (root / "include").mkdir()
        (root / "include" / "cuda_runtime.h").write_text("")
    return root


def test_find_nvcc_skips_a_guess_without_headers(monkeypatch, tmp_path):
    """nvcc as a wrapper script in /usr/local/bin makes torch guess CUDA_HOME=/usr/local, which has
    no headers (a build then fails at cuda_runtime.h): the toolkit with headers is found instead.
    An explicit CUDA_HOME decides, and one without headers is reported as such."""
    from torch.utils import cpp_extension
    wrapper_home = _toolkit(tmp_path / "usr-local", headers=False)
    real_home = _toolkit(tmp_path / "cuda-13.0")
    monkeypatch.delenv("CUDA_HOME", raising=False)
    monkeypatch.delenv("CUDA_PATH", raising=False)
    monkeypatch.setattr(cpp_extension, "CUDA_HOME", str(wrapper_home))
    monkeypatch.setenv("PATH", f"{wrapper_home / 'bin'}:{real_home / 'bin'}")
    assert _cuda.find_nvcc()[0] != str(wrapper_home / "bin" / "nvcc")  # first on PATH, no headers
    monkeypatch.setenv("PATH", f"{real_home / 'bin'}:{wrapper_home / 'bin'}")
    assert _cuda.find_nvcc()[0] == str(real_home / "bin" / "nvcc")
    monkeypatch.setenv("CUDA_HOME", str(wrapper_home))
    nvcc, why = _cuda.find_nvcc()
    assert nvcc is None and "no include/cuda_runtime.h" in why and str(wrapper_home) in why
    monkeypatch.setenv("CUDA_HOME", str(real_home))
    assert _cuda.find_nvcc()[0] == str(real_home / "bin" / "nvcc")


def test_find_nvcc_takes_condas_cuda_layout(monkeypatch, tmp_path):
    """environment.yml's conda CUDA 12 packages put the headers in targets/x86_64-linux/include only
    (pytorch/pytorch#144690): that toolkit is used, and the build is given that include folder."""
    home = _toolkit(tmp_path / "conda-env", headers=False)
    inc = home / "targets" / "x86_64-linux" / "include"
    inc.mkdir(parents=True)
    (inc / "cuda_runtime.h").write_text("")
    monkeypatch.setenv("CUDA_HOME", str(home))
    assert _cuda.find_nvcc()[0] == str(home / "bin" / "nvcc")
    assert str(inc) in _cuda._load_kwargs("x", tmp_path / "build")["extra_include_paths"]


def _pretend_windows(monkeypatch):
    """sys.platform 'win32' for sg3lib's own checks. torch.utils.cpp_extension is imported first: it
    fixes its platform constants at import (a first import under 'win32' made LIB_EXT '.pyd' for
    the rest of the process, and later tests could not load a built library)."""
    import torch.utils.cpp_extension  # noqa: F401
    monkeypatch.setattr(sys, "platform", "win32")


def test_find_nvcc_takes_nvcc_exe_on_windows(monkeypatch, tmp_path):
    """A Windows toolkit (CUDA_PATH, or conda's Library/) has bin/nvcc.exe and no bin/nvcc: looking
    for bin/nvcc found no toolkit there, so the kernels were never built on Windows."""
    home = tmp_path / "Library"
    (home / "bin").mkdir(parents=True)
    (home / "bin" / "nvcc.exe").write_bytes(b"MZ")
    (home / "bin" / "nvcc.exe").chmod(0o755)  # Windows's os.access X_OK: the file exists
    (home / "include").mkdir()
    (home / "include" / "cuda_runtime.h").write_text("")
    monkeypatch.delenv("CUDA_HOME", raising=False)
    monkeypatch.setenv("CUDA_PATH", str(home))
    _pretend_windows(monkeypatch)
    assert _cuda.find_nvcc() == (str(home / "bin" / "nvcc.exe"), f"nvcc at {home / 'bin' / 'nvcc.exe'}")
    assert Path(_cuda._load_kwargs("x", tmp_path / "build")["sources"][0]).is_file()


def test_first_error_line_picks_the_cause():
    log = ("[1/4] c++ -c sg3_binding.cpp\nFAILED: upfirdn2d.cuda.o\n"
           "kernels/upfirdn2d.cu(12): error: identifier \"foo\" is undefined\n"
           "ninja: build stopped: subcommand failed.\nRuntimeError: Error building extension 'x'\n")
    assert _cuda._first_error_line(log) == 'kernels/upfirdn2d.cu(12): error: identifier "foo" is undefined'
    tb = "Traceback (most recent call last):\n  raise OSError('CUDA_HOME')\nOSError: CUDA_HOME is not set\n"
    assert _cuda._first_error_line(tb) == "OSError: CUDA_HOME is not set"
    assert _cuda._first_error_line("nvcc fatal   : Unsupported gpu architecture 'compute_200'").startswith("nvcc fatal")


def _fake_toolchain(monkeypatch, tmp_path):
    """A GPU machine whose nvcc fails every build (so a build that starts is seen to fail)."""
    _pretend_gpu(monkeypatch)
    from torch.utils import cpp_extension
    monkeypatch.setattr(cpp_extension, "is_ninja_available", lambda: True)
    home = _toolkit(tmp_path / "fake-cuda",
                    nvcc_script="echo 'fake.cu(1): error: this toolchain is broken' >&2\nexit 1")
    monkeypatch.setenv("CUDA_HOME", str(home))
    monkeypatch.setenv("SG3LIB_BUILD_TIMEOUT", "120")


def _compile_stub_module(name, path):
    """A real (empty) Python extension module called `name` at `path`, standing in for a build."""
    src = path.with_suffix(".c")
    src.write_text("#include <Python.h>\n"
                   f"static struct PyModuleDef m = {{PyModuleDef_HEAD_INIT, \"{name}\", NULL, -1, NULL}};\n"
                   f"PyMODINIT_FUNC PyInit_{name}(void) {{ return PyModule_Create(&m); }}\n")
    subprocess.run(["gcc", "-shared", "-fPIC", "-I", sysconfig.get_paths()["include"], str(src), "-o", str(path)],
                   check=True, capture_output=True)


def test_failed_build_reports_first_error_line(fresh_loader, monkeypatch, tmp_path):
    """A toolchain that cannot build (a failing nvcc; on a CPU-only torch the build already stops
    at torch's CUDA checks): the build subprocess fails, and the reason quotes the error."""
    _fake_toolchain(monkeypatch, tmp_path)
    start = time.monotonic()
    with pytest.warns(UserWarning, match="build failed"):
        ok, reason = _cuda.available()
    assert not ok and reason.startswith("build failed: ") and "error" in reason.lower()
    assert time.monotonic() - start < 120
    logs = list((tmp_path / "cache").rglob("build_error.log"))
    assert len(logs) == 1 and logs[0].read_text().strip()
    assert not list((tmp_path / "cache").glob("*.lock")), "the build lock must be released"


def test_stamped_build_loads_without_building(fresh_loader, monkeypatch, tmp_path, capsys):
    """A finished build (its library and a stamp holding its key) is imported as it is: no build
    subprocess, no ninja, so a cache copied with new file times still loads. Without the stamp (a
    build that died half-way) or with another key's stamp, it builds afresh."""
    _fake_toolchain(monkeypatch, tmp_path)
    key = _cuda.build_key()
    name = f"sg3lib_kernels_{key}"
    build_dir = tmp_path / "cache" / "kernels" / key
    build_dir.mkdir(parents=True)
    _compile_stub_module(name, _cuda._library_path(name, build_dir))

    with pytest.warns(UserWarning, match="build failed"):  # library there but no stamp: rebuilt
        assert not _cuda.available()[0]
    assert "building the CUDA kernels" in capsys.readouterr().err  # a notebook user is told why it waits
    _cuda._reset()
    (build_dir / "built").write_text("0123456789abcdef\n")  # another key's stamp: rebuilt
    with pytest.warns(UserWarning, match="build failed"):
        assert not _cuda.available()[0]
    assert "building the CUDA kernels" in capsys.readouterr().err

    _cuda._reset()
    (build_dir / "built").write_text(key + "\n")
    real_popen = subprocess.Popen

    def no_build(*args, **kwargs):
        raise AssertionError("a stamped build must not be rebuilt")
    monkeypatch.setattr(subprocess, "Popen", no_build)
    ok, reason = _cuda.available()
    assert ok and "cached build" in reason and str(build_dir) in reason
    assert "building" not in capsys.readouterr().err
    # ...and without ninja, which only a build needs (it was refused before the cache was looked at)
    _cuda._reset()
    from torch.utils import cpp_extension
    monkeypatch.setattr(cpp_extension, "is_ninja_available", lambda: False)
    ok, reason = _cuda.available()
    assert ok and "cached build" in reason, reason
    monkeypatch.setattr(cpp_extension, "is_ninja_available", lambda: True)  # (the builds below need it)
    assert _cuda._ext().__name__ == name
    assert not list((tmp_path / "cache").glob("*.lock")), "the build lock must be released"

    # A stamped library that does not import (a damaged copy): built again. (Another key: the
    # stub is mapped into this process and Python would hand back the loaded module.)
    _cuda._reset()
    monkeypatch.setattr(subprocess, "Popen", real_popen)
    key = "feedbeef00000000"
    monkeypatch.setattr(_cuda, "build_key", lambda: key)
    build_dir = tmp_path / "cache" / "kernels" / key
    build_dir.mkdir()
    _cuda._library_path(f"sg3lib_kernels_{key}", build_dir).write_bytes(b"not a library")
    (build_dir / "built").write_text(key + "\n")
    (build_dir / ".ninja_log").write_text("# ninja log v5\n")  # ninja would take the library as up to date
    with pytest.warns(UserWarning, match="build failed"):
        assert not _cuda.available()[0]
    assert not (build_dir / "built").exists()
    assert not _cuda._library_path(f"sg3lib_kernels_{key}", build_dir).exists(), "rebuilt from an empty folder"


def test_build_key_tracks_sources(monkeypatch, tmp_path):
    _pretend_gpu(monkeypatch)
    src = _cuda.kernel_dir()
    copy = tmp_path / "kernels"
    copy.mkdir()
    for p in src.iterdir():
        (copy / p.name).write_bytes(p.read_bytes())
    monkeypatch.setattr(_cuda, "kernel_dir", lambda: copy)
    k1 = _cuda.build_key()
    assert k1 == _cuda.build_key()
    (copy / "bias_act.cu").write_text((copy / "bias_act.cu").read_text() + "\n// changed\n")
    assert _cuda.build_key() != k1
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (8, 6))
    assert len({k1, _cuda.build_key()}) == 2


def _record_build_env(monkeypatch):
    """Builds that fail at once, recording the environment each was given."""
    envs = []

    def run_build(cmd, env, timeout):
        envs.append(env)
        return 1, "fake.cu(1): error: not built in this test"
    monkeypatch.setattr(_cuda, "_run_build", run_build)
    return envs


def test_build_covers_every_visible_gpu(fresh_loader, monkeypatch, tmp_path, capsys):
    """A machine with an A100 (current) and a T4: the build is for both (it used to be for the current
    GPU only, and ops on the T4 failed with "no kernel image is available"), the highest with PTX as
    torch does, and the set is part of the key."""
    _fake_toolchain(monkeypatch, tmp_path)
    envs = _record_build_env(monkeypatch)
    _pretend_gpu(monkeypatch, caps=[(8, 0)])
    a100_only = _cuda.build_key()
    _pretend_gpu(monkeypatch, caps=[(8, 0), (7, 5), (8, 0)])
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "3.5;5.2")  # as images that build torch set it: not read
    with pytest.warns(UserWarning, match="build failed"):
        assert not _cuda.available()[0]
    assert [e["TORCH_CUDA_ARCH_LIST"] for e in envs] == ["7.5;8.0+PTX"]
    assert "for sm_75, sm_80" in capsys.readouterr().err
    assert _cuda.build_key() != a100_only


def test_build_message_says_torch_cuda_arch_list_is_not_used(fresh_loader, monkeypatch, tmp_path, capsys):
    """TORCH_CUDA_ARCH_LIST is left alone (images set it for every process), but someone who set it
    is told which list is built instead; it changes neither the build nor the cache key."""
    _fake_toolchain(monkeypatch, tmp_path)
    envs = _record_build_env(monkeypatch)
    _pretend_gpu(monkeypatch, caps=[(8, 6)])
    key = _cuda.build_key()
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "8.0")
    assert _cuda.build_key() == key
    with pytest.warns(UserWarning, match="build failed"):
        assert not _cuda.available()[0]
    assert [e["TORCH_CUDA_ARCH_LIST"] for e in envs] == ["8.6+PTX"]
    err = capsys.readouterr().err
    assert "building the CUDA kernels for sm_86" in err and "TORCH_CUDA_ARCH_LIST='8.0' is not used" in err
    _cuda._reset()
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "8.6+PTX")  # the list built anyway: nothing to say
    with pytest.warns(UserWarning, match="build failed"):
        assert not _cuda.available()[0]
    assert "TORCH_CUDA_ARCH_LIST" not in capsys.readouterr().err


def test_build_for_a_gpu_newer_than_torch(fresh_loader, monkeypatch, tmp_path):
    """A GPU newer than torch's own build is built for torch's newest architecture plus PTX, which the
    driver compiles for the GPU (as torch does; an older torch rejects an arch it does not know)."""
    _fake_toolchain(monkeypatch, tmp_path)
    envs = _record_build_env(monkeypatch)
    _pretend_gpu(monkeypatch, caps=[(12, 0), (8, 6)], torch_archs=["sm_80", "sm_86", "sm_90a", "compute_90"])
    with pytest.warns(UserWarning, match="build failed"):
        assert not _cuda.available()[0]
    assert [e["TORCH_CUDA_ARCH_LIST"] for e in envs] == ["8.6;9.0+PTX"]


def test_build_key_tracks_nvcc_version(monkeypatch, tmp_path):
    """A toolkit upgraded in place (same nvcc path, another release) gets a build of its own; nvcc
    --version runs once per process for a given nvcc file."""
    _pretend_gpu(monkeypatch)
    calls = tmp_path / "calls"
    home = _toolkit(tmp_path / "cuda", nvcc_script=f"echo x >> {calls}\necho 'Cuda compilation tools, release 12.4'")
    monkeypatch.setenv("CUDA_HOME", str(home))
    old = _cuda.build_key()
    assert _cuda.build_key() == old
    (home / "bin" / "nvcc").write_text(f"#!/bin/sh\necho x >> {calls}\necho 'Cuda compilation tools, release 12.6.1'\n")
    assert _cuda.build_key() != old
    assert _cuda.build_key() != old
    assert len(calls.read_text().split()) == 2, "nvcc --version must run once per nvcc file, not per key"


_NO_PID_NS = pytest.mark.skipif(not os.path.exists("/proc/self/ns/pid"), reason="no /proc pid namespace (not Linux)")


def _holder(pid, **kw):
    """A lock record as a process of this host (and, unless `ns` is given, this pid namespace) writes it."""
    record = {"pid": pid, "host": __import__("socket").gethostname(), "time": 0, **kw}
    if "ns" not in record:
        record["ns"] = _cuda.process_namespace()
    return json.dumps(record)


@_NO_PID_NS
def test_lock_breaks_dead_holder(tmp_path):
    lock = tmp_path / "k.lock"
    lock.write_text(_holder(2 ** 22 + 12345))
    with pytest.warns(UserWarning, match="stale"):
        with _cuda.FileLock(lock, timeout_s=5, stale_s=3600):
            assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert not lock.exists()


def test_lock_breaks_old_lock(tmp_path):
    lock = tmp_path / "k.lock"
    lock.write_text(json.dumps({"pid": 1, "host": "another-host", "time": 0}))
    os.utime(lock, (time.time() - 100, time.time() - 100))
    with pytest.warns(UserWarning, match="100 s old|stale"):
        with _cuda.FileLock(lock, timeout_s=5, stale_s=50):
            pass


def test_lock_held_by_live_process_times_out(tmp_path):
    lock = tmp_path / "k.lock"
    lock.write_text(_holder(os.getpid()))
    start = time.monotonic()
    with pytest.raises(TimeoutError, match="held by"):
        _cuda.FileLock(lock, timeout_s=0.6, stale_s=3600, poll_s=0.1).acquire()
    assert 0.5 < time.monotonic() - start < 5
    assert lock.exists(), "a live holder's lock must be left alone"


def test_lock_from_another_pid_namespace_is_judged_by_age(tmp_path):
    """A container sharing this hostname (host networking, a pod) holds the lock: its pid means nothing
    here, so a live holder must not be judged dead from it (the lock used to be broken, and two builds
    ran into one folder). Such a lock, and one from an older sg3lib without a namespace, is broken
    by age only."""
    lock = tmp_path / "k.lock"
    for other in ("00000000-0000-0000-0000-000000000000/4:1", None):
        lock.write_text(_holder(2 ** 22 + 12345, ns=other))
        with pytest.raises(TimeoutError, match="held by"):
            _cuda.FileLock(lock, timeout_s=0.3, stale_s=3600, poll_s=0.05).acquire()
        assert lock.exists(), "a lock from another pid namespace was broken by a pid check"
        os.utime(lock, (time.time() - 100, time.time() - 100))
        with pytest.warns(UserWarning, match="100 s old"):
            _cuda.FileLock(lock, timeout_s=5, stale_s=50, poll_s=0.05).acquire().release()


def test_lock_respects_its_holders_longer_time_limit(tmp_path):
    """A holder with a longer SG3LIB_BUILD_TIMEOUT than ours may build for longer: its lock is stale
    only past its own limit (it used to be broken past ours, during its build)."""
    lock = tmp_path / "k.lock"
    lock.write_text(_holder(2 ** 22 + 12345, ns="another-container", stale_s=3600.0))
    os.utime(lock, (time.time() - 100, time.time() - 100))
    with pytest.raises(TimeoutError, match="held by"):
        _cuda.FileLock(lock, timeout_s=0.3, stale_s=50, poll_s=0.05).acquire()
    assert lock.exists()
    os.utime(lock, (time.time() - 4000, time.time() - 4000))
    with pytest.warns(UserWarning, match="stale"):
        _cuda.FileLock(lock, timeout_s=5, stale_s=50, poll_s=0.05).acquire().release()
    assert not lock.exists()


@_NO_PID_NS
def test_lock_breakers_do_not_remove_a_fresh_lock(tmp_path):
    """Two processes judge the same dead holder's lock stale; the first breaks it and takes a fresh
    lock before the second acts: the second must leave that fresh lock alone (it used to rename it
    away and take its own: two holders building into one folder), and must not release it either."""
    lock = tmp_path / "k.lock"
    lock.write_text(_holder(2 ** 22 + 12345))
    first = _cuda.FileLock(lock, timeout_s=5, stale_s=3600, poll_s=0.05)

    class Second(_cuda.FileLock):
        def _holder(self):
            seen = super()._holder()
            if not first._mine:
                with pytest.warns(UserWarning, match="stale"):
                    first.acquire()  # between the second's look at the lock and its breaking it
            return seen

    with pytest.raises(TimeoutError, match="held by"):
        Second(lock, timeout_s=0.3, stale_s=3600, poll_s=0.05).acquire()
    assert json.loads(lock.read_text()) == first._mine
    _cuda.FileLock(lock, timeout_s=5, stale_s=3600).release()  # not its lock: left alone
    assert lock.exists()
    first.release()
    assert not lock.exists()


_LOCK_STRESS = """
import glob, json, os, sys, time, warnings
from sg3lib.ops._cuda import FileLock
d = sys.argv[1]
warnings.simplefilter("ignore")
lock = FileLock(os.path.join(d, "k.lock"), timeout_s=60, stale_s=3600, poll_s=0.001)
overlaps = 0
for i in range(12):
    lock.acquire()
    open(os.path.join(d, f"in.{os.getpid()}"), "w").close()
    overlaps += len(glob.glob(os.path.join(d, "in.*"))) > 1
    time.sleep(0.002)
    os.remove(os.path.join(d, f"in.{os.getpid()}"))
    if i % 3 == 2:  # as if killed while holding it: a dead holder's lock stays behind
        lock.path.write_text(json.dumps(dict(lock._mine, pid=2 ** 22 + 999)))
    else:
        lock.release()
print(overlaps)
"""


@_NO_PID_NS
@pytest.mark.slow  # four Pythons importing torch: ~12 s on 2 cores
def test_lock_is_exclusive_among_processes_breaking_stale_locks(tmp_path):
    """Four processes (torchrun ranks) take turns at a lock that keeps being left behind by 'killed'
    holders: never two inside at once, and nobody waits forever."""
    root = str(Path(_cuda.__file__).resolve().parents[2])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    procs = [subprocess.Popen([sys.executable, "-c", _LOCK_STRESS, str(tmp_path)], env=env, stdout=subprocess.PIPE,
                              text=True) for _ in range(4)]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert [int(o.split()[-1]) for o in outs] == [0, 0, 0, 0], "two processes held the lock at once"


def _build_that_outlives_its_timeout(monkeypatch, tmp_path):
    """A build past SG3LIB_BUILD_TIMEOUT (0.5 s) whose stand-in 'python' starts a background child
    that writes the returned file 1.5 s later, unless it is killed with the build."""
    _pretend_gpu(monkeypatch)
    from torch.utils import cpp_extension
    monkeypatch.setattr(cpp_extension, "is_ninja_available", lambda: True)
    monkeypatch.setattr(_cuda, "find_nvcc", lambda: ("/bin/true", "nvcc at /bin/true"))
    monkeypatch.setenv("SG3LIB_BUILD_TIMEOUT", "0.5")
    late = tmp_path / "written-after-the-timeout"
    fake_python = tmp_path / "python"
    fake_python.write_text(f"#!/bin/sh\n( sleep 1.5; echo late > {late} ) &\nsleep 30\n")
    fake_python.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(fake_python))
    return late


def test_build_timeout_kills_the_whole_build(fresh_loader, monkeypatch, tmp_path):
    """A build past SG3LIB_BUILD_TIMEOUT: the ninja and nvcc that the build's Python started must die
    with it, not go on writing into the build folder once the lock is released (while the next
    process builds there). Stand-in: a 'python' whose background child writes a file later."""
    late = _build_that_outlives_its_timeout(monkeypatch, tmp_path)
    start = time.monotonic()
    with pytest.warns(UserWarning, match="timed out"):
        assert not _cuda.available()[0]
    assert time.monotonic() - start < 10
    assert not list((tmp_path / "cache").rglob("*.lock")), "the build lock must be released"
    time.sleep(2.5)
    assert not late.exists(), "the build's child processes outlived its timeout"


def test_build_timeout_kills_the_process_tree_on_windows(fresh_loader, monkeypatch, tmp_path):
    """Windows has no process groups (os.killpg, SIGKILL): killing only the build's Python left its
    ninja, nvcc and cl compiling into the build folder after the lock was released. There the tree
    is ended with taskkill /T, before its root (whose death would orphan the rest); a stand-in for
    taskkill ends the group, as the real one ends the tree."""
    late = _build_that_outlives_its_timeout(monkeypatch, tmp_path)
    killpg, real_run, taskkills = os.killpg, subprocess.run, []

    def run(cmd, *args, **kwargs):
        if cmd[0] != "taskkill":
            return real_run(cmd, *args, **kwargs)
        taskkills.append(cmd)
        killpg(int(cmd[-1]), 9)
        return subprocess.CompletedProcess(cmd, 0)
    monkeypatch.delattr(os, "killpg")
    monkeypatch.setattr(subprocess, "run", run)
    _pretend_windows(monkeypatch)
    with pytest.warns(UserWarning, match="timed out"):
        assert not _cuda.available()[0]
    assert len(taskkills) == 1 and taskkills[0][:4] == ["taskkill", "/F", "/T", "/PID"]
    time.sleep(2.5)
    assert not late.exists(), "the build's child processes outlived its timeout"


def test_lock_held_makes_available_fall_back(fresh_loader, monkeypatch, tmp_path):
    _pretend_gpu(monkeypatch)
    from torch.utils import cpp_extension
    monkeypatch.setattr(cpp_extension, "is_ninja_available", lambda: True)
    monkeypatch.setattr(_cuda, "find_nvcc", lambda: ("/bin/true", "nvcc at /bin/true"))
    real_lock = _cuda.FileLock
    monkeypatch.setattr(_cuda, "FileLock", lambda path, timeout_s, stale_s: real_lock(path, 0.3, 3600, 0.1))
    key = _cuda.build_key()
    root = tmp_path / "cache" / "kernels"
    root.mkdir(parents=True)
    (root / f"{key}.lock").write_text(_holder(os.getpid()))
    with pytest.warns(UserWarning, match="lock held"):
        ok, reason = _cuda.available()
    assert not ok and reason.startswith("lock held:")


# =============================================================================================
# 2. The real kernels/*.cu, compiled for the CPU (tests/cudasim), driving the autograd Functions


def _simulator():
    import cudasim
    if cudasim.compiler() is None:
        if os.environ.get("CI") == "true":
            pytest.fail("no C++ compiler: CI must run the kernels in the CPU simulator (install g++)")
        pytest.skip("no C++ compiler for the CUDA simulator")
    return cudasim


def _install(monkeypatch, ext):
    """`ext` in place of the compiled CUDA extension, for sg3lib.ops._cuda."""
    _cuda._reset()
    monkeypatch.setattr(_cuda._State, "done", True)
    monkeypatch.setattr(_cuda._State, "ok", True)
    monkeypatch.setattr(_cuda._State, "module", ext)
    return ext


@pytest.fixture(params=[False, True], ids=["fwd-order", "rev-order"])
def simulated(request, monkeypatch):
    """The compiled-for-CPU kernels in place of the CUDA extension; each test runs twice, with the
    threads of every block in ascending and in descending order (a shared-memory race would show)."""
    yield _install(monkeypatch, _simulator().SimulatedExt(reverse=request.param))
    _cuda._reset()


def _call_upfirdn(impl, x, f, up, down, padding, flip, gain):
    if impl == "ref":
        return upfirdn2d_ref(x, f, up, down, padding, flip, gain)
    return _cuda.upfirdn2d(x, f, parse_scaling(up), parse_scaling(down), parse_padding(padding), flip, gain)


def test_cuda_ops_compile_into_one_graph(monkeypatch):
    """The kernels are custom ops: torch.compile traces the autograd Functions around them into one
    graph (fullgraph: no break), forward and backward, and gives the eager results."""
    _install(monkeypatch, _simulator().SimulatedExt())
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 13, 11, generator=g, requires_grad=True)
    b = torch.randn(3, generator=g, requires_grad=True)
    fu, fd = torch.rand(6, generator=g), torch.rand([4, 4], generator=g)
    fu, fd = fu / fu.sum(), fd / fd.sum()

    def net(x, b):
        t = _cuda.bias_act(x, b, 1, "lrelu", 0.2, math.sqrt(2), 4.0)
        t = _cuda.upfirdn2d(t, fu, (2, 2), (1, 1), (2, 3, 2, 3), False, 4.0)
        return _cuda.filtered_lrelu(t, fu, fd, b, 2, 2, (4, 3, 4, 3), math.sqrt(2), 0.2, 2.0, False)

    torch._dynamo.reset()
    results = []
    for fn in (net, torch.compile(net, fullgraph=True, backend="aot_eager")):
        y = fn(x, b)
        results.append((y, *torch.autograd.grad(y.square().sum(), [x, b])))
    torch._dynamo.reset()
    _cuda._reset()
    for got, want in zip(results[1], results[0]):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("radial", [False, True], ids=["separable", "2d"])
def test_simulated_kernels_are_order_independent(monkeypatch, radial):
    """Each block's threads run in ascending, then descending order: bit-identical outputs, forward
    and backward, so no thread reads shared memory another thread writes between the same two
    barriers (a race)."""
    sim = _simulator()
    g = torch.Generator().manual_seed(8)
    x = torch.randn(2, 3, 37, 41, generator=g, requires_grad=True)
    b = torch.randn(3, generator=g, requires_grad=True)
    fu = torch.rand(12, generator=g)
    fd = torch.rand([12, 12] if radial else [12], generator=g)
    fu, fd = fu / fu.sum(), fd / fd.sum()
    dy = None
    outs = []
    for reverse in (False, True):
        _install(monkeypatch, sim.SimulatedExt(reverse=reverse))
        y = _cuda.filtered_lrelu(x, fu, fd, b, 2, 2, (9, 8, 9, 8), 1.4, 0.2, 2.0, False)
        dy = torch.randn(y.shape, generator=g) if dy is None else dy
        gx, gb = torch.autograd.grad(y, [x, b], dy)
        up = _cuda.upfirdn2d(x.detach(), fu, (2, 2), (1, 1), (5, 6, 5, 6), False, 4.0)
        act = _cuda.bias_act(x.detach(), b.detach(), 1, "swish", 0.0, 1.0, None)
        outs.append((y, gx, gb, up, act))
    _cuda._reset()
    for a, r in zip(*outs):
        assert torch.equal(a, r)
    ref = filtered_lrelu_ref(x, fu, fd, b, 2, 2, [9, 8, 9, 8], 1.4, 0.2, 2.0, False)
    assert_close(outs[0][0], ref, 1e-5, "forward")
    assert_close(outs[0][1], torch.autograd.grad(ref, x, dy)[0], 1e-5, "backward")
    unclamped = filtered_lrelu_ref(x, fu, fd, b, 2, 2, [9, 8, 9, 8], 1.4, 0.2, None, False)
    assert not torch.allclose(ref, unclamped)  # the clamp, and so the mask's third code, was exercised


UPFIRDN_SIM_CASES = [  # (size hw, filter shape, up, down, padding, flip, gain)
    ((5, 6), (4,), 2, 1, [2, 1], False, 4.0),             # SG2 upsample
    ((6, 5), (4,), 1, 2, [1, 1], False, 1.0),             # SG2 downsample
    ((5, 5), (3, 4), [2, 1], [1, 2], [1, 2, 0, 3], True, 2.0),  # 2-D, mixed factors
    ((6, 7), (6,), 4, 2, [-1, -2, 3, -1], False, 16.0),   # SG3-like up 4, crop
    ((4, 5), None, 3, 1, 2, False, 9.0),                  # identity filter
    ((5, 6), (4,), 2, 1, [2, 1], False, -4.0),            # negative gain, separable: was complex taps
]


@pytest.mark.parametrize("case", UPFIRDN_SIM_CASES, ids=lambda c: f"{c[2]}-{c[3]}-{c[4]}")
def test_simulated_upfirdn2d_matches_reference(simulated, case):
    (h, w), fshape, up, down, padding, flip, gain = case
    torch.manual_seed(0)
    x = torch.randn(2, 2, h, w, requires_grad=True)
    f = torch.rand(fshape) + 0.1 if fshape else None
    ys = [_call_upfirdn(impl, x, f, up, down, padding, flip, gain) for impl in ("sim", "ref")]
    assert_close(ys[0], ys[1], 1e-5, "forward")
    dy = torch.randn_like(ys[1])
    gs = [torch.autograd.grad(y, x, dy, create_graph=True)[0] for y in ys]
    assert_close(gs[0], gs[1], 1e-5, "backward")
    v = torch.randn_like(x)  # second order: d/d(dy) of <dx, v> (the op is linear, so only dy path)
    dy.requires_grad_(True)
    gs = [torch.autograd.grad(y, x, dy, create_graph=True)[0] for y in
          [_call_upfirdn(impl, x, f, up, down, padding, flip, gain) for impl in ("sim", "ref")]]
    hh = [torch.autograd.grad((g * v).sum(), dy)[0] for g in gs]
    assert_close(hh[0], hh[1], 1e-5, "double backward")


def test_simulated_upfirdn2d_refuses_a_filter_of_other_rank(simulated):
    """A 0-D or 3-D filter gets the reference's ValueError on the CUDA path too: a 0-D one used to
    fail with an IndexError from the output size check, and a 3-D one, on an input smaller than its
    first dimension, with a misleading "output would be empty"."""
    x = torch.randn(1, 2, 3, 3)
    for f in (torch.tensor(2.0), torch.ones(5, 5, 5)):
        for impl in ("ref", "sim"):
            with pytest.raises(ValueError, match="filter must be 1-D"):
                _call_upfirdn(impl, x, f, 1, 1, 0, False, 1.0)


FLRELU_SIM_CASES = [  # (size hw, fu, fd, up, down, padding, gain, slope, clamp, flip, bias)
    ((4, 5), (6,), (6,), 2, 2, [3, 2, 3, 2], math.sqrt(2), 0.2, None, False, True),
    ((5, 4), (8,), (4,), 4, 2, [-1, -2, -1, -2], math.sqrt(2), 0.2, 0.4, False, True),
    ((4, 4), (6,), (4, 4), 2, 2, [2, 3, 1, 2], 1.3, 0.1, 0.7, True, True),  # radial-style 2-D fd
    ((3, 5), None, None, 1, 1, 0, 1.0, 1.0, 1.5, False, True),  # torgb: no filters, slope 1
    ((5, 5), (4,), None, 2, 1, [1, 1, 2, 1], math.sqrt(2), 0.2, None, False, False),
]


def _call_flrelu(impl, x, fu, fd, b, up, down, padding, gain, slope, clamp, flip):
    if impl == "ref":
        return filtered_lrelu_ref(x, fu, fd, b, up, down, padding, gain, slope, clamp, flip)
    return _cuda.filtered_lrelu(x, fu, fd, b, up, down, parse_padding(padding), gain, slope, clamp, flip)


@pytest.mark.parametrize("unfused", [False, True], ids=["fused", "unfused"])
@pytest.mark.parametrize("case", FLRELU_SIM_CASES, ids=lambda c: f"{c[3]}-{c[4]}-{c[5]}")
def test_simulated_filtered_lrelu_matches_reference(simulated, case, unfused):
    (h, w), fus, fds, up, down, padding, gain, slope, clamp, flip, has_b = case
    if unfused:
        simulated.force_unfused = True  # as if nothing fit: the unfused CUDA passes run instead
    torch.manual_seed(1)
    x = torch.randn(2, 3, h, w, requires_grad=True)
    b = torch.randn(3, requires_grad=True) if has_b else None
    fu = torch.rand(fus) + 0.1 if fus else None
    fd = torch.rand(fds) + 0.1 if fds else None
    ys = [_call_flrelu(i, x, fu, fd, b, up, down, padding, gain, slope, clamp, flip) for i in ("sim", "ref")]
    assert_close(ys[0], ys[1], 1e-5, "forward")
    dy = torch.randn_like(ys[1]).requires_grad_(True)
    inputs = [x] + ([b] if has_b else [])
    gs = [torch.autograd.grad(y, inputs, dy, create_graph=True) for y in ys]
    for g0, g1 in zip(*gs):
        assert_close(g0, g1, 1e-5, "backward")
    # second order, as path length regularisation takes it: d/d(dy) of <dx, v> (+ <db, vb>); the
    # op is piecewise linear in x, so that is the whole double backward (d/dx is 0 almost everywhere)
    v, vb = torch.randn_like(x), torch.randn(3)
    hh = [torch.autograd.grad((g[0] * v).sum() + ((g[1] * vb).sum() if has_b else 0), dy) for g in gs]
    assert_close(hh[0][0], hh[1][0], 1e-5, "double backward")


def test_simulated_filtered_lrelu_negative_clamp_is_none(simulated):
    """A negative clamp means none, as in bias_act, on every path: the fused kernel read it so (its
    sentinel), while the unfused passes and the reference clamped to an empty range."""
    torch.manual_seed(6)
    x, f = torch.randn(1, 2, 6, 7), torch.tensor([1.0, 3.0, 3.0, 1.0]) / 8
    want = _call_flrelu("ref", x, f, f, None, 2, 2, 3, math.sqrt(2), 0.2, None, False)
    assert_close(_call_flrelu("ref", x, f, f, None, 2, 2, 3, math.sqrt(2), 0.2, -1.0, False), want, 1e-6, "ref")
    for unfused in (False, True):
        simulated.force_unfused = unfused
        got = _call_flrelu("sim", x, f, f, None, 2, 2, 3, math.sqrt(2), 0.2, -1.0, False)
        assert_close(got, want, 1e-5, "unfused" if unfused else "fused")


def test_simulated_filtered_lrelu_refuses_factors_below_one(simulated):
    """up or down below 1 is refused with the reference's ValueError, not a ZeroDivisionError from the
    geometry (down 0) or the binding's RuntimeError (up 0)."""
    x, f = torch.randn(1, 2, 6, 7), torch.tensor([1.0, 3.0, 3.0, 1.0]) / 8
    for up, down, name in ((2, 0, "down"), (0, 2, "up"), (-1, 1, "up")):
        for impl in ("ref", "sim"):
            with pytest.raises(ValueError, match=f"{name} factors must be >= 1"):
                _call_flrelu(impl, x, f, f, None, up, down, 12, math.sqrt(2), 0.2, None, False)


def test_mask_packing_round_trips():
    codes = torch.randint(0, 3, (2, 3, 5, 11), dtype=torch.uint8)
    packed = _cuda._pack_codes(codes)
    assert packed.dtype == torch.uint8 and tuple(packed.shape) == (2, 3, 5, 3)
    assert int(packed[0, 0, 0, 0]) == sum(int(codes[0, 0, 0, k]) << (2 * k) for k in range(4))
    assert torch.equal(_cuda._unpack_codes(packed, 11), codes)


# Several tiles along x (the kernel's tiles are up to 32 outputs wide), so mask bytes straddle tiles.
# (size hw, fu, fd, up, down, padding): SG3-style 12-tap filters with ow = 64 = two full tiles and
# tw = 139 (the last intermediate sample reaches no output, and shares a byte with two that do);
# and a ToRGB-style layer without filters (tiles abut, no overlap).
MASK_TILE_CASES = [((8, 70), (12,), (12,), 2, 2, [5, 5, 5, 5]),
                   ((3, 75), None, None, 1, 1, [0, 0, 0, 0])]


@pytest.mark.parametrize("case", MASK_TILE_CASES, ids=["sg3", "torgb"])
def test_simulated_mask_bytes_across_tiles(simulated, case):
    """The fused forward writes the 2-bit mask a byte (4 samples) at a time, only from a tile holding
    all of the byte's samples that reach an output: the gradient must match the reference, and the
    mask must equal the unfused path's on every sample that reaches an output."""
    (h, w), fus, fds, up, down, padding = case
    torch.manual_seed(3)
    x = (torch.randn(1, 2, h, w) * 2).requires_grad_(True)
    fu = torch.rand(fus) + 0.1 if fus else None
    fd = torch.rand(fds) + 0.1 if fds else None
    args = (up, down, padding, 1.4, 0.2, 1.0, False)
    ys = [_call_flrelu(i, x, fu, fd, None, *args) for i in ("sim", "ref")]
    assert ys[0].shape[3] > 32, "the case must span several tiles"
    assert_close(ys[0], ys[1], 1e-5, "forward")
    dy = torch.randn_like(ys[1])
    assert_close(torch.autograd.grad(ys[0], x, dy)[0], torch.autograd.grad(ys[1], x, dy)[0], 1e-5, "backward")

    pad = parse_padding(padding)
    w1, f1h, f1w, sep1 = _cuda._fused_taps(fu, up ** 2, True, x.device)
    w2, f2h, f2w, sep2 = _cuda._fused_taps(fd, 1.0, True, x.device)
    th, tw = h * up + pad[2] + pad[3] - f1h + 1, w * up + pad[0] + pad[1] - f1w + 1
    oh, ow = (th - f2h) // down + 1, (tw - f2w) // down + 1
    call = (x.detach(), w1, w2, torch.empty(0), torch.empty(0, dtype=torch.uint8), f1h, f1w, sep1, f2h, f2w, sep2,
            up, down, pad[0], pad[2], 0, 0, th, tw, oh, ow, *args[3:6], False, True)
    _, fused = simulated.filtered_lrelu(*call)
    # Blocks in the other order: tiles that overlap write equal bytes, so the whole mask is the same,
    # even the codes of samples that reach no output (which the backward multiplies by a zero anyway).
    _, fused_other_order = _simulator().SimulatedExt(reverse=not simulated.reverse).filtered_lrelu(*call)
    assert torch.equal(fused, fused_other_order)
    _, unfused = _cuda._filtered_lrelu_unfused(x.detach(), None, fu, fd, up, down, pad, *args[3:])
    reach_y, reach_x = (oh - 1) * down + f2h, (ow - 1) * down + f2w
    codes = [_cuda._unpack_codes(m, tw)[:, :, :reach_y, :reach_x] for m in (fused, unfused)]
    assert torch.equal(codes[0], codes[1])
    assert set(codes[1].unique().tolist()) == {0, 1, 2}  # all three codes exercised


def test_filters_that_take_a_gradient_use_the_reference(simulated):
    """The kernels give no gradient for a filter: one that takes a gradient goes to the reference,
    which gives it (the CUDA path used to drop it, and filtered_lrelu's backward failed on the mask it
    had not kept when only the filters took a gradient)."""
    torch.manual_seed(5)
    x = torch.randn(1, 2, 7, 6)
    for x_grad in (False, True):
        grads = []
        for impl in ("ref", "sim"):
            xi = x.clone().requires_grad_(x_grad)
            f = torch.tensor([1.0, 3.0, 3.0, 1.0], requires_grad=True)
            fd = torch.tensor([[1.0, 2.0], [2.0, 1.0]], requires_grad=True)
            y1 = _call_upfirdn(impl, xi, f, 2, 1, [2, 1], False, 4.0)
            y2 = _call_flrelu(impl, xi, f, fd, None, 2, 2, [3, 2, 3, 2], math.sqrt(2), 0.2, 1.0, False)
            grads.append(torch.autograd.grad(y1.square().sum() + y2.square().sum(), [f, fd] + ([xi] if x_grad else [])))
        for g, r in zip(*grads[::-1]):
            assert_close(g, r, 1e-5, f"filter gradients (x takes one: {x_grad})")
    calls = dict(simulated.calls)
    with torch.no_grad():  # no gradient taken: the kernels again
        _call_upfirdn("sim", x, f, 2, 1, [2, 1], False, 4.0)
    assert simulated.calls != calls


@pytest.mark.parametrize("act", ACTS)
def test_simulated_bias_act_matches_reference(simulated, act):
    torch.manual_seed(2)
    alpha, gain = (0.2 if act == "lrelu" else 0.0), (math.sqrt(2) if act in ("relu", "lrelu", "swish") else 1.0)
    for clamp, dim, shape in ((None, 1, (2, 3, 4, 5)), (0.8, 1, (3, 5)), (None, 2, (2, 3, 6)), (0.8, 0, (7,))):
        x = (torch.randn(shape) * 2).requires_grad_(True)
        b = torch.randn(shape[dim], requires_grad=True)
        ys = [bias_act_ref(x, b, dim, act, alpha, gain, clamp), _cuda.bias_act(x, b, dim, act, alpha, gain, clamp)]
        assert_close(ys[1], ys[0], 1e-5, f"{act} forward")
        dy = torch.randn_like(ys[0], requires_grad=True)
        gs = [torch.autograd.grad(y, [x, b], dy, create_graph=True) for y in ys]
        for g0, g1 in zip(*gs):
            assert_close(g1, g0, 1e-5, f"{act} backward")
        # Second order, as in R1: differentiate <dx, v> w.r.t. x, b and dy.
        v = torch.randn_like(x)
        hs = [torch.autograd.grad((g[0] * v).sum(), [x, b, dy], allow_unused=True) for g in gs]
        for h0, h1, name in zip(*hs, ("x", "b", "dy")):
            if h0 is None and h1 is None:  # e.g. linear: dx does not depend on x
                continue
            h0 = torch.zeros_like(h1) if h0 is None else h0
            h1 = torch.zeros_like(h0) if h1 is None else h1
            assert_close(h1, h0, 1e-4, f"{act} double backward wrt {name}")


def test_simulated_bias_act_dim_as_the_reference(simulated):
    """A 0-d x (no dim to speak of) gives the reference's result, not a ZeroDivisionError; a bias along
    a dim x does not have is refused, not wrapped round onto another dim (6 % 4 = 2: H, here as long as C)."""
    x = torch.tensor(-1.5)
    assert_close(_cuda.bias_act(x, None, 1, "lrelu", 0.2, math.sqrt(2), None),
                 bias_act_ref(x, None, 1, "lrelu", 0.2, math.sqrt(2), None), 1e-6, "0-d")
    x, b = torch.randn(2, 3, 3, 5), torch.randn(3)
    with pytest.raises(ValueError, match="dim 6 is out of range"):
        _cuda.bias_act(x, b, 6, "linear", 0.0, 1.0, None)
    assert_close(_cuda.bias_act(x, b, -3, "linear", 0.0, 1.0, None), bias_act_ref(x, b, -3), 1e-6, "dim -3")


@pytest.mark.parametrize("act", ["linear", "relu", "lrelu"])
def test_simulated_bias_act_keeps_slope_codes_not_x(simulated, act):
    """Piecewise-linear activations keep one uint8 per four elements for the backward (D's activations
    in training: an eighth of float16 x), holding 1 (x + b > 0), 2 (otherwise) or 0 (clamped)."""
    g = torch.Generator().manual_seed(4)
    x = (torch.randn(3, 5, 7, generator=g) * 2).requires_grad_(True)  # 105 elements: a part-filled last byte
    b = torch.randn(5, generator=g, requires_grad=True)
    alpha, gain, clamp = (0.2 if act == "lrelu" else 0.0), 1.5, 1.0
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        y = _cuda.bias_act(x, b, 1, act, alpha, gain, clamp)
    assert [(t.dtype, tuple(t.shape)) for t in saved] == [(torch.uint8, (27,))]
    s = (x + b.reshape(1, -1, 1)).detach()
    pre = bias_act_ref(s, None, 1, act, alpha, gain, None)
    want = torch.where(pre.abs() > clamp, 0, torch.where(s > 0, 1, 2)).flatten()
    assert torch.equal(_cuda._unpack_codes(saved[0].reshape(1, 1, 1, -1), 105).flatten(), want.to(torch.uint8))
    assert set(want.tolist()) == {0, 1, 2}  # all three codes exercised
    dy = torch.randn(y.shape, generator=g)
    got = torch.autograd.grad(y, [x, b], dy)
    ref = torch.autograd.grad(bias_act_ref(x, b, 1, act, alpha, gain, clamp), [x, b], dy)
    for a, r in zip(got, ref):
        assert_close(a, r, 1e-5, act)


def test_simulated_bias_act_records_codes_only_for_a_backward(simulated):
    """Generation (no autograd) takes the plain forward: no slope codes written; training records them."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Ops(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.names = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.names.append(str(func.overloadpacket))
            return func(*args, **(kwargs or {}))

    x, b = torch.randn(2, 3, 5), torch.randn(3, requires_grad=True)
    for grad, want in ((False, "sg3lib.bias_act"), (True, "sg3lib.bias_act_masked_fwd")):
        with torch.set_grad_enabled(grad), Ops() as ops_seen:
            y = _cuda.bias_act(x, b, 1, "lrelu", 0.2, 1.4, 1.0)
        assert want in ops_seen.names and y.requires_grad == grad
        assert_close(y, bias_act_ref(x, b, 1, "lrelu", 0.2, 1.4, 1.0), 1e-5, f"grad={grad}")


@pytest.mark.parametrize("act", ["relu", "lrelu", "elu", "selu", "softplus", "swish"])
def test_simulated_bias_act_derivatives_at_the_kink(simulated, act):
    """At x + b = 0 exactly (common in bfloat16) the kernel takes torch's side of each derivative:
    elu/selu use the negative side's first derivative and the positive side's second."""
    x = torch.tensor([[-1.0, 0.0, 0.0, 1.0]], requires_grad=True)
    b = torch.zeros(4, requires_grad=True)
    alpha = 0.2 if act == "lrelu" else 0.0
    outs = [f(x, b, 1, act, alpha, 1.0, None) for f in (bias_act_ref, _cuda.bias_act)]
    firsts = [torch.autograd.grad(y.sum(), x, create_graph=True)[0] for y in outs]
    assert torch.allclose(firsts[1], firsts[0]), (firsts[1], firsts[0])
    if act in ("relu", "lrelu"):  # the kernel keeps slope codes, not x: the second derivative is 0 by
        assert not firsts[1].requires_grad  # construction and the graph does not reach back to x
        assert not torch.autograd.grad(firsts[0].sum(), x)[0].any()
        return
    second_derivatives = [torch.autograd.grad(g.sum(), x)[0] for g in firsts]
    assert torch.allclose(second_derivatives[1], second_derivatives[0]), second_derivatives


@pytest.mark.parametrize("act", ACTS)
def test_simulated_bias_act_keeps_nan_and_inf_as_the_reference(simulated, act):
    """A NaN stays NaN, clamped or not, as in the reference (torch.clamp, torch.relu): the kernel's
    fminf/fmaxf clamp turned it into -clamp, and its relu into 0, hiding a diverged layer."""
    x = torch.tensor([[float("nan"), float("inf"), -float("inf"), 0.5, -3.0, 0.0]])
    alpha = 0.2 if act == "lrelu" else 0.0
    for clamp in (None, 1.0):
        for grad in (False, True):  # the plain forward, and the one that records slope codes
            xi = x.clone().requires_grad_(grad)
            got, want = (f(xi, None, 1, act, alpha, 1.5, clamp).detach() for f in (_cuda.bias_act, bias_act_ref))
            torch.testing.assert_close(got, want, equal_nan=True, msg=f"{act} clamp {clamp} grad {grad}")


# =============================================================================================
# 3. The kernels against the reference for every StyleGAN2/3 layer configuration: compiled for the
#    GPU (marked `gpu`), and the same tests in the CPU simulator (`sim`, fewer channels)


def _sg3_layer_cases():
    """Unique filtered_lrelu geometries of the reference SG3-T and SG3-R networks."""
    root = os.environ.get("SG3_FIXTURES") or os.path.join(os.path.dirname(__file__), "..", "..", "shared",
                                                          "fixtures", "reference")
    cases = set()
    for name in ("sg3t_64", "sg3r_64", "sg3t_256_cond"):
        path = os.path.join(root, f"{name}.json")
        if not os.path.isfile(path):
            continue
        with open(path) as fh:
            for ly in json.load(fh)["synthesis_facts"]["layers"]:
                cases.add((ly["in_size"][0], ly["up_factor"], ly["up_taps"], ly["down_factor"], ly["down_taps"],
                           ly["down_radial"], tuple(ly["padding"]), ly["is_torgb"]))
    return sorted(cases)


SG3_CASES = _sg3_layer_cases() or [(36, 2, 12, 2, 12, False, (9, 8, 9, 8), False)]


class Backend:
    def __init__(self, name, device, n, c):
        self.name, self.device, self.n, self.c = name, torch.device(device), n, c


@pytest.fixture(params=[pytest.param("gpu", marks=pytest.mark.gpu), "sim"])
def dev(request, monkeypatch):
    """Where impl='cuda' runs: the GPU, or the CPU simulator (ops dispatch patched to reach it)."""
    if request.param == "gpu":
        yield Backend("gpu", "cuda", 2, 7)
        return
    from sg3lib import ops
    ext = _install(monkeypatch, _simulator().SimulatedExt())
    monkeypatch.setattr(ops, "_use_cuda", lambda x, impl: None if impl == "ref" else _cuda)
    yield Backend("sim", "cpu", 1, 2)
    assert ext.calls, "the simulated kernels were never called"
    _cuda._reset()


def _gpu():
    return torch.device("cuda")


def _tol(dtype):
    return {torch.float32: 1e-4, torch.float16: 2e-2, torch.bfloat16: 2e-2}[dtype]


@pytest.mark.gpu
def test_gpu_impl_none_picks_cuda():
    from sg3lib import ops
    ok, reason = _cuda.available()
    assert ok, f"CUDA kernels failed to build on a GPU machine: {reason}\n{_cuda.report()}"
    assert "cuda kernel" in ops.report()
    x = torch.randn(1, 2, 8, 8, device=_gpu(), requires_grad=True)
    f = torch.tensor([1.0, 3.0, 3.0, 1.0], device=_gpu()) / 8
    assert "Upfirdn2d" in ops.upfirdn2d(x, f, up=2, padding=[2, 1], gain=4).grad_fn.name()
    assert "FilteredLrelu" in ops.filtered_lrelu(x, f, f, up=2, down=2, padding=3).grad_fn.name()
    assert "BiasAct" in ops.bias_act(x, act="lrelu").grad_fn.name()
    assert "BiasAct" not in ops.bias_act(x.cpu(), act="lrelu").grad_fn.name()  # CPU: reference


def _gpu_upfirdn_cases():
    sg2 = [  # StyleGAN2 resampling: [1,3,3,1] filters around strided / transposed convolutions
        ((4,), 2, 1, [2, 1], 4.0), ((4,), 1, 2, [1, 1], 1.0), ((4,), 1, 1, [1, 1], 4.0),
        ((4,), 1, 1, [2, 2], 1.0), ((4,), 1, 2, [2, 2], 1.0), ((4,), 2, 1, [1, 1], 4.0),
    ]
    sg3 = [((12,), 2, 1, [9, 8], 4.0), ((12,), 1, 2, [0, 0], 1.0), ((24,), 4, 1, [-6, -9], 16.0),
           ((12, 12), 1, 2, [0, 0], 1.0)]
    misc = [((3, 5), [2, 1], [1, 3], [1, 2, 0, -1], 2.0), (None, 3, 1, 2, 9.0), ((5,), 1, 1, [-1, 2], 1.0)]
    return sg2 + sg3 + misc


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("flip", [False, True], ids=["conv", "corr"])
@pytest.mark.parametrize("case", _gpu_upfirdn_cases(), ids=lambda c: f"f{c[0]}-u{c[1]}-d{c[2]}-p{c[3]}")
def test_kernel_upfirdn2d(dev, case, flip, dtype):
    from sg3lib import ops
    fshape, up, down, padding, gain = case
    torch.manual_seed(3)
    x = torch.randn(dev.n, dev.c, 37, 29, device=dev.device, dtype=dtype, requires_grad=True)  # odd sizes
    f = (torch.rand(fshape, device=dev.device) + 0.1) if fshape else None
    y_ref = ops.upfirdn2d(x.float(), f, up, down, padding, flip, gain, impl="ref")
    y = ops.upfirdn2d(x, f, up, down, padding, flip, gain, impl="cuda")
    assert y.dtype == dtype
    assert_close(y, y_ref, _tol(dtype), "forward")
    dy = torch.randn_like(y_ref).to(dtype).requires_grad_(True)
    g_ref = torch.autograd.grad(y_ref, x, dy.float(), create_graph=True)[0]
    g = torch.autograd.grad(y, x, dy, create_graph=True)[0]
    assert_close(g, g_ref, _tol(dtype), "backward")
    v = torch.randn_like(g_ref)
    h_ref = torch.autograd.grad((g_ref * v).sum(), dy)[0]
    h = torch.autograd.grad((g.float() * v).sum(), dy)[0]
    assert_close(h, h_ref, _tol(dtype), "double backward")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("case", SG3_CASES, ids=lambda c: f"s{c[0]}-u{c[1]}x{c[2]}-d{c[3]}x{c[4]}"
                         f"{'r' if c[5] else ''}-p{list(c[6])}{'-rgb' if c[7] else ''}")
def test_kernel_filtered_lrelu_sg3_layers(dev, case, dtype):
    from sg3lib import ops
    size, up, up_taps, down, down_taps, radial, padding, torgb = case
    torch.manual_seed(4)
    x = (torch.randn(dev.n, dev.c, size, size, device=dev.device, dtype=dtype) * 3).requires_grad_(True)
    b = torch.randn(dev.c, device=dev.device, requires_grad=True)
    fu = (torch.rand(up_taps, device=dev.device) + 0.1) / up_taps if up_taps > 1 else None
    if down_taps <= 1:
        fd = None
    else:
        fd = torch.rand([down_taps, down_taps] if radial else [down_taps], device=dev.device) + 0.1
        fd = fd / fd.sum()
    gain, slope, clamp = (1.0, 1.0, 256.0) if torgb else (math.sqrt(2), 0.2, 4.0)
    kw = dict(fu=fu, fd=fd, b=b, up=up, down=down, padding=list(padding), gain=gain, slope=slope, clamp=clamp)
    y_ref = ops.filtered_lrelu(x.float(), impl="ref", **kw)
    y = ops.filtered_lrelu(x, impl="cuda", **kw)
    assert y.dtype == dtype
    assert_close(y, y_ref, _tol(dtype), "forward")
    dy = torch.randn_like(y_ref).requires_grad_(True)
    g_ref = torch.autograd.grad(y_ref, [x, b], dy, create_graph=True)
    g = torch.autograd.grad(y, [x, b], dy.to(dtype), create_graph=True)
    assert_close(g[0], g_ref[0], _tol(dtype), "dx")
    assert_close(g[1], g_ref[1], _tol(dtype) * 10, "db")  # a sum over many samples
    v = torch.randn_like(g_ref[0])  # second order (path length regularisation): d/d(dy) of <dx, v>
    h_ref = torch.autograd.grad((g_ref[0] * v).sum(), dy)[0]
    h = torch.autograd.grad((g[0].float() * v).sum(), dy)[0]
    assert_close(h, h_ref, _tol(dtype), "double backward")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=["fp32", "fp16", "bf16"])
def test_kernel_filtered_lrelu_misc(dev, dtype):
    """Odd sizes, 2-D fu, flip_filter, no bias, clamp None, large filters (unfused path)."""
    from sg3lib import ops
    torch.manual_seed(5)
    cases = [
        dict(fu=torch.rand(5, 7), fd=torch.rand(3, 4), up=2, down=1, padding=[1, 2, 3, 0], flip_filter=True),
        dict(fu=torch.rand(6), fd=torch.rand(6), up=2, down=2, padding=[5, 4, 3, 5], clamp=None),
        dict(fu=torch.rand(8), fd=None, up=4, down=1, padding=[-2, -3, 1, 2], clamp=1.0),
        dict(fu=torch.rand(120), fd=torch.rand(120), up=2, down=2, padding=120),  # too big: unfused
    ]
    for kw in cases:
        kw = {k: (v.to(dev.device) / v.sum() if torch.is_tensor(v) else v) for k, v in kw.items()}
        x = torch.randn(dev.n, 3, 23, 17, device=dev.device, dtype=dtype, requires_grad=True)
        y_ref = ops.filtered_lrelu(x.float(), impl="ref", **kw)
        y = ops.filtered_lrelu(x, impl="cuda", **kw)
        assert_close(y, y_ref, _tol(dtype), f"forward {kw.get('padding')}")
        dy = torch.randn_like(y_ref)
        assert_close(torch.autograd.grad(y, x, dy.to(dtype))[0], torch.autograd.grad(y_ref, x, dy)[0],
                     _tol(dtype), f"backward {kw.get('padding')}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("act", ACTS)
def test_kernel_bias_act(dev, act, dtype):
    from sg3lib import ops
    torch.manual_seed(6)
    for clamp, dim, shape in ((None, 1, (3, 17, 9, 7)), (1.5, 1, (5, 33)), (256.0, 2, (2, 3, 11))):
        x = (torch.randn(shape, device=dev.device, dtype=dtype) * 2).requires_grad_(True)
        b = torch.randn(shape[dim], device=dev.device, requires_grad=True)
        # the kernel adds the bias in x's dtype: so does the reference (a kink at x + b = 0 would
        # otherwise flip for rounding's sake)
        y_ref = ops.bias_act(x.float(), b.to(dtype).float(), dim, act, clamp=clamp, impl="ref")
        y = ops.bias_act(x, b, dim, act, clamp=clamp, impl="cuda")
        assert y.dtype == dtype
        assert_close(y, y_ref, _tol(dtype), f"{act} forward")
        dy = torch.randn_like(y_ref).requires_grad_(True)
        g_ref = torch.autograd.grad(y_ref, [x, b], dy, create_graph=True)
        g = torch.autograd.grad(y, [x, b], dy.to(dtype), create_graph=True)
        assert_close(g[0], g_ref[0], _tol(dtype), f"{act} dx")
        assert_close(g[1], g_ref[1], _tol(dtype) * 10, f"{act} db")
        v = torch.randn_like(y_ref)
        h_ref = torch.autograd.grad((g_ref[0] * v).sum(), [x, b, dy], allow_unused=True)
        h = torch.autograd.grad((g[0].float() * v).sum(), [x, b, dy], allow_unused=True)
        for a, r, name in zip(h, h_ref, ("x", "b", "dy")):
            if a is None and r is None:
                continue
            r = torch.zeros_like(a) if r is None else r
            a = torch.zeros_like(r) if a is None else a
            assert_close(a, r, _tol(dtype) * 10, f"{act} double backward wrt {name}")


def test_kernel_r1_style_double_backward(dev):
    """R1 = |dD/dx|^2 through upfirdn2d + bias_act; its gradient w.r.t. the bias matches the reference."""
    from sg3lib import ops
    torch.manual_seed(7)
    f = torch.tensor([1.0, 3.0, 3.0, 1.0], device=dev.device) / 8
    b = torch.randn(4, device=dev.device, requires_grad=True)
    x = torch.randn(2, 4, 16, 16, device=dev.device, requires_grad=True)
    grads = []
    for impl in ("ref", "cuda"):
        y = ops.bias_act(ops.upfirdn2d(x, f, down=2, padding=1, impl=impl), b, act="lrelu", impl=impl)
        (gx,) = torch.autograd.grad(y.square().sum(), x, create_graph=True)
        grads.append(torch.autograd.grad(gx.square().sum(), b)[0])
    assert_close(grads[1], grads[0], 1e-4, "R1 gradient wrt bias")


@pytest.mark.gpu
def test_gpu_offsets_past_2_31_and_planes_past_65535():
    """Sizes the simulator cannot run: element offsets past 2**31 (a 1024 px batch of 32 has
    filtered_lrelu masks and upsampled maps that large) and more planes than grid.y's 65535, where
    the fused kernel loops. The last sample, where 32-bit offsets would wrap, must match the
    reference computed on it alone. About 25 GiB of GPU memory, a few seconds on an H100."""
    if torch.cuda.get_device_properties(0).total_memory < 48 * 2 ** 30:
        pytest.skip("needs 48 GiB of GPU memory")
    from sg3lib import ops
    torch.manual_seed(10)
    dev, half = _gpu(), torch.float16
    # bias_act over 2**31 + 4 elements, the bias along dim 0 (stride 2**30 + 2), forward and backward
    x = torch.randn(2, 2 ** 30 + 2, device=dev, dtype=half).requires_grad_(True)
    b = torch.randn(2, device=dev)
    y = ops.bias_act(x, b, 0, "lrelu", clamp=2.0, impl="cuda")
    (dx,) = torch.autograd.grad(y, x, y)
    tail = x[1:, -999:].detach().float().requires_grad_(True)
    want = ops.bias_act(tail, b[1:], 0, "lrelu", clamp=2.0, impl="ref")
    assert_close(y[1:, -999:], want, _tol(half), "bias_act forward")
    assert_close(dx[1:, -999:], torch.autograd.grad(want, tail, y[1:, -999:].float())[0], _tol(half), "bias_act dx")
    del x, y, dx
    # upfirdn2d (separable, up 2) to an output of 2.5e9 elements
    x = torch.randn(1, 600, 1024, 1024, device=dev, dtype=half)
    f = torch.tensor([1.0, 3.0, 3.0, 1.0], device=dev) / 8
    y = ops.upfirdn2d(x, f, up=2, padding=[2, 1], gain=4, impl="cuda")
    assert y.numel() > 2 ** 31
    assert_close(y[:, -1:], ops.upfirdn2d(x[:, -1:].float(), f, up=2, padding=[2, 1], gain=4, impl="ref"),
                 _tol(half), "upfirdn2d")
    del x, y
    # filtered_lrelu (an SG3 layer): 600000 planes, x of 2.2e9 elements, a mask of 2.4e9 bytes
    x = torch.randn(1000, 600, 60, 60, device=dev, dtype=half).requires_grad_(True)
    b = torch.randn(600, device=dev)
    fu = torch.rand(12, device=dev) + 0.1
    fd = torch.rand(12, device=dev) + 0.1
    kw = dict(fu=fu / fu.sum(), fd=fd / fd.sum(), b=b, up=2, down=2, padding=[9, 8, 9, 8], clamp=4.0)
    y = ops.filtered_lrelu(x, impl="cuda", **kw)
    dy = torch.randn_like(y)
    (dx,) = torch.autograd.grad(y, x, dy)
    last = x[-1:].detach().float().requires_grad_(True)
    want = ops.filtered_lrelu(last, impl="ref", **kw)
    assert_close(y[-1:], want, _tol(half), "filtered_lrelu forward")
    assert_close(dx[-1:], torch.autograd.grad(want, last, dy[-1:].float())[0], _tol(half), "filtered_lrelu dx")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_simulated_unfused_filtered_lrelu_adds_the_bias_in_float32(simulated, dtype):
    """The unfused passes added the bias in x's half dtype before the float32 passes, where the fused
    kernel and the reference add it in float32: bfloat16 results moved by 5e-3 (relative) on that path only."""
    torch.manual_seed(0)
    x = (torch.randn(1, 4, 8, 8) * 3).to(dtype)
    b = (torch.randn(4) * 5 + 0.37).to(dtype)
    fu = torch.rand(6) + 0.1
    fu = fu / fu.sum()
    want = filtered_lrelu_ref(x, fu, fu, b, 2, 2, [3, 2, 3, 2], math.sqrt(2), 0.2, None, False).float()
    for unfused in (False, True):
        simulated.force_unfused = unfused
        got = _call_flrelu("sim", x, fu, fu, b, 2, 2, [3, 2, 3, 2], math.sqrt(2), 0.2, None, False).float()
        assert (got - want).abs().max() / want.abs().max() < 1e-4, ("unfused" if unfused else "fused")


def test_a_cpu_only_torch_is_named_as_such(fresh_loader, monkeypatch):
    """torch.cuda.is_available() was asked first, and a CPU-only torch always says False: a user with
    a GPU but the CPU wheel was told 'no CUDA GPU visible' (drivers) rather than 'a CPU-only build'."""
    monkeypatch.setattr(torch.version, "cuda", None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    ok, reason = _cuda.available(warn=False)
    assert not ok and "is a CPU-only build; install a CUDA build of torch" in reason


@pytest.mark.parametrize("value", ["15m", "0", "-1", "nan"])
def test_a_bad_build_timeout_is_named(fresh_loader, monkeypatch, tmp_path, value):
    _fake_toolchain(monkeypatch, tmp_path)
    monkeypatch.setenv("SG3LIB_BUILD_TIMEOUT", value)
    with pytest.warns(UserWarning, match=f"SG3LIB_BUILD_TIMEOUT='{value}': give the build's time limit in seconds"):
        assert not _cuda.available()[0]


def test_the_ops_say_that_they_take_a_tensor():
    """ops.upfirdn2d and ops.bias_act read x.is_cuda first: a numpy array failed with AttributeError."""
    import numpy as np
    from sg3lib import ops
    a = np.zeros([1, 1, 4, 4], np.float32)
    with pytest.raises(TypeError, match="x must be a torch.Tensor, got ndarray"):
        ops.upfirdn2d(a, torch.ones(2) / 2)
    with pytest.raises(TypeError, match="x must be a torch.Tensor, got ndarray"):
        ops.bias_act(a)
