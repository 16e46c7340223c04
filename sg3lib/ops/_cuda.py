"""CUDA path of sg3lib.ops: builds kernels/ on first use and wraps them in autograd Functions.

Build: torch.utils.cpp_extension + ninja, in a subprocess with a time limit, into a per-user cache
`~/.cache/sg3lib/kernels/<key>` (sg3lib.files.cache_home: $SG3LIB_CACHE or $XDG_CACHE_HOME/sg3lib
moves ~/.cache/sg3lib). The build is for the architectures of all visible GPUs (build_archs), and
the key hashes the kernel sources, the torch and CUDA versions, `nvcc --version`, the Python
version and those architectures, so a change of any of them builds afresh and nothing stale is
ever loaded. A finished build is stamped with its key and later
imported directly (no ninja run), so a cache folder that was copied (file times lost) still loads. A
file lock serialises builds of one key across processes; a lock left by a dead process (judged only
from the same pid namespace: not from another container with the same hostname) or older than the
build time limit (its holder's, if longer) is broken with a warning, and waiting for a live one is
bounded.
Anything that goes wrong (no GPU, CPU build of torch, no nvcc, no ninja, a failed or timed-out
build, a held lock) gives one warning naming the cause, and the ops fall back to the reference path.
`report()` says which path each op takes.

Environment: SG3LIB_CUDA=0 disables the kernels; CUDA_HOME (or CUDA_PATH) picks the toolkit (its
bin/nvcc, bin/nvcc.exe on Windows); SG3LIB_CACHE moves the cache; SG3LIB_BUILD_TIMEOUT (seconds,
default 900) bounds a build.
TORCH_CUDA_ARCH_LIST is not read (see build_archs).

Autograd (Karras et al. 2020/2021 need first derivatives everywhere and second derivatives of
upfirdn2d and bias_act for the R1 penalty):
- upfirdn2d's gradient is an upfirdn2d of the incoming gradient with the flipped filter, up and down
  swapped and adjusted padding, so its backward re-uses the same Function: any order works.
- bias_act's backward is a second Function (x -> dy * act'(x + b)) whose own backward uses act''.
  The piecewise-linear activations (linear, relu, lrelu: all of StyleGAN's) instead keep a 2-bit
  slope code per element, not x; their backward is linear in dy and is its own derivative.
- filtered_lrelu keeps a 2-bit code per intermediate sample (positive / negative / clamped) from
  the fused forward; the backward is the same fused kernel run on the transpose (dy up by `down`
  with fd flipped, times the recorded slope, fu flipped and down by `up`). That backward is linear
  in dy (the slopes are piecewise constant in x), and its derivative is the forward's linear map
  with the recorded slopes (the fused kernel in the forward geometry, reading the mask): the two
  are each other's backward, so any order works (path length regularisation on StyleGAN3).

The kernels are torch custom ops (sg3lib::upfirdn2d_pass, ::filtered_lrelu_fwd, ::filtered_lrelu_bwd,
::filtered_lrelu_linear, ::bias_act, ::bias_act_masked_fwd, ::bias_act_masked_bwd), each with a fake implementation that gives
its outputs' shapes: torch.compile keeps each as one opaque node (and CUDA graphs can capture it), and on the meta device the fakes run
(benchmarks/bench_memory.py). Only these ops call the compiled extension.
"""
import hashlib
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import torch

try:
    import fcntl
except ImportError:  # not POSIX
    fcntl = None

from ..files import cache_home
from .bias_act import bias_act_ref
from .filtered_lrelu import filtered_lrelu_ref
from .upfirdn2d import filter_size, upfirdn2d_ref

OPS = ("upfirdn2d", "filtered_lrelu", "bias_act")
ACTS = {"linear": 0, "relu": 1, "lrelu": 2, "tanh": 3, "sigmoid": 4, "elu": 5, "selu": 6,
        "softplus": 7, "swish": 8}
_KERNEL_SOURCES = ("upfirdn2d.cu", "filtered_lrelu.cu", "bias_act.cu", "sg3_binding.cpp")
_KERNEL_HEADERS = ("sg3_kernels.h", "sg3_common.cuh")
_F32 = 0
_DTYPE_CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}  # kernels/sg3_kernels.h
_KERNEL_DTYPES = tuple(_DTYPE_CODES)

# ---------------------------------------------------------------------------------------------
# Finding, building and loading the extension.


def kernel_dir():
    """The folder with the CUDA sources: sg3lib/kernels when installed as a package data folder,
    else the repository's kernels/ next to sg3lib/."""
    here = Path(__file__).resolve().parent
    for d in (here.parent / "kernels", here.parents[1] / "kernels"):
        if all((d / n).is_file() for n in _KERNEL_SOURCES):
            return d
    return None


def cache_root():
    """The kernel builds' folder: kernels/ in sg3lib's cache folder (sg3lib.files.cache_home)."""
    return cache_home() / "kernels"


def cuda_include_dir(home):
    """The folder with cuda_runtime.h under toolkit root `home`: include/, or targets/<arch>/include/
    (conda's CUDA 12+ packages, as environment.yml installs, keep the headers only there), or None."""
    for d in [Path(home) / "include", *sorted(Path(home).glob("targets/*/include"))]:
        if (d / "cuda_runtime.h").is_file():
            return d
    return None


def _nvcc_in(home):
    """Where toolkit root `home` keeps nvcc: bin/nvcc, bin/nvcc.exe on Windows."""
    return Path(home) / "bin" / ("nvcc.exe" if sys.platform == "win32" else "nvcc")


def _toolkit_problem(home):
    """Why `home` is not a usable CUDA toolkit root (nvcc and the runtime headers), or None."""
    if not os.access(_nvcc_in(home), os.X_OK):
        return f"nvcc not found at {_nvcc_in(home)}"
    if cuda_include_dir(home) is None:
        return f"{home} has nvcc but no include/cuda_runtime.h"
    return None


def find_nvcc():
    """(path to nvcc or None, explanation). CUDA_HOME or CUDA_PATH, when set, decides; otherwise the
    first toolkit with nvcc and its headers among torch's guess, the nvcc on PATH and /usr/local/cuda
    (torch guesses /usr/local, which has no headers, when nvcc is a wrapper script in /usr/local/bin)."""
    from torch.utils import cpp_extension
    chosen = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    on_path = shutil.which("nvcc")
    guesses = [cpp_extension.CUDA_HOME, on_path and str(Path(on_path).resolve().parents[1]), "/usr/local/cuda"]
    for home in [chosen] if chosen else filter(None, guesses):
        problem = _toolkit_problem(home)
        if problem is None:
            nvcc = _nvcc_in(home)
            return str(nvcc), f"nvcc at {nvcc}"
        if chosen:
            return None, f"{problem} (CUDA_HOME={chosen})"
    return None, "nvcc not found (no CUDA toolkit with nvcc and headers on PATH or in /usr/local/cuda)"


def _toolchain_problem():
    """Why the kernels cannot be built on this machine, or None. Cheap: runs no compiler."""
    if os.environ.get("SG3LIB_CUDA", "1") == "0":
        return "disabled by SG3LIB_CUDA=0"
    if not torch.version.cuda:  # first: a CPU-only torch sees no GPU either, but the fix is another torch
        return (f"torch {torch.__version__} is a CPU-only build; install a CUDA build of torch (see "
                "environment.yml)")
    if not torch.cuda.is_available():
        return "no CUDA GPU visible to torch"
    if kernel_dir() is None:
        return "kernel sources (kernels/*.cu) not found next to the sg3lib package"
    nvcc, why = find_nvcc()
    if nvcc is None:
        return why + f"; install the CUDA toolkit {torch.version.cuda} or set CUDA_HOME"
    return None  # (ninja is needed to build, not to load a finished build: _build_and_load checks it)


def build_archs():
    """The GPU architectures to build for, as TORCH_CUDA_ARCH_LIST entries ("7.5", "8.0+PTX"): those
    of every visible GPU, not only the current one (a process may use any of them, and a build has no
    code for an architecture it was not built for: "no kernel image is available"). As torch does, a
    GPU newer than torch's own build is built for torch's newest and the highest entry adds PTX, which
    the driver compiles for newer GPUs. TORCH_CUDA_ARCH_LIST itself is not read (the build message
    says so when it is set): images that build torch set it for every process to long lists, which
    would make a build of minutes one past SG3LIB_BUILD_TIMEOUT or name archs the installed nvcc
    rejects, and a list that misses a visible GPU would fail at the first op ("no kernel image").
    What it is set for elsewhere, a build for the GPUs of this machine, is what this does anyway."""
    newest = max((_arch_tuple(a) for a in torch.cuda.get_arch_list() if a.startswith("sm_")), default=None)
    caps = set()
    for i in range(torch.cuda.device_count()):
        cap = tuple(torch.cuda.get_device_capability(i))
        caps.add(min(cap, newest) if newest else cap)
    if not caps:
        raise RuntimeError("torch.cuda reports no GPU to build the kernels for")
    archs = [f"{major}.{minor}" for major, minor in sorted(caps)]
    archs[-1] += "+PTX"
    return archs


def _arch_list_note(archs):
    """What the build message adds when TORCH_CUDA_ARCH_LIST asks for other architectures: that it is
    not used (someone who set it for this build would otherwise wonder which list was built)."""
    theirs = os.environ.get("TORCH_CUDA_ARCH_LIST", "").strip()
    if not theirs or theirs == ";".join(archs):
        return ""
    return (f"; TORCH_CUDA_ARCH_LIST={theirs!r} is not used: sg3lib builds for the GPUs it sees, "
            "and each set of GPU types gets its own cached build")


def _arch_tuple(name):
    """'sm_86' or 'sm_90a' -> (8, 6), (9, 0)."""
    digits = re.sub(r"\D", "", name)
    return int(digits[:-1]), int(digits[-1])


def _arch_names(archs):
    """'sm_75, sm_80' for messages."""
    return ", ".join("sm_" + a.split("+")[0].replace(".", "") for a in archs)


_NVCC_VERSIONS = {}  # (real path, inode, size, mtime) -> `nvcc --version` output, per process


def nvcc_version(nvcc):
    """`nvcc --version`'s output (run once per process for each nvcc file): a toolkit upgraded in
    place keeps nvcc's path, and its builds must not be taken for the old toolkit's."""
    try:
        st = os.stat(nvcc)
    except OSError as e:
        return f"cannot stat {nvcc}: {e}"
    ident = (os.path.realpath(nvcc), st.st_ino, st.st_size, st.st_mtime_ns)
    if ident not in _NVCC_VERSIONS:
        try:
            done = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=60)
            _NVCC_VERSIONS[ident] = f"{done.stdout}{done.stderr} (exit {done.returncode})"
        except (OSError, subprocess.SubprocessError) as e:
            _NVCC_VERSIONS[ident] = f"{nvcc} --version failed: {e}"
    return _NVCC_VERSIONS[ident]


def build_key():
    """Hash of everything that makes a build different: sources, versions (torch, nvcc's own),
    the GPU architectures built for."""
    h = hashlib.sha256()
    kdir = kernel_dir()
    for name in sorted(_KERNEL_SOURCES + _KERNEL_HEADERS):
        h.update(name.encode())
        h.update((kdir / name).read_bytes())
    nvcc, _ = find_nvcc()
    for part in (torch.__version__, torch.version.cuda, ";".join(build_archs()), nvcc, nvcc_version(nvcc),
                 f"py{sys.version_info[0]}.{sys.version_info[1]}", " ".join(_flags()["cuda"])):
        h.update(str(part).encode())
    return h.hexdigest()[:16]


def _flags():
    return {"cxx": ["-O3"], "cuda": ["-O3", "--expt-relaxed-constexpr"]}


def _build_timeout():
    text = os.environ.get("SG3LIB_BUILD_TIMEOUT", "900")
    try:
        v = float(text)
    except ValueError:
        v = float("nan")
    if not 0 < v < float("inf"):  # (the reason would have quoted float()'s words, not the variable)
        raise ValueError(f"SG3LIB_BUILD_TIMEOUT={text!r}: give the build's time limit in seconds, e.g. 900")
    return v


def process_namespace():
    """Where a pid names the same process as here: this boot of this machine (its boot id, which its
    containers share) and this pid namespace (one per container), or None where /proc does not say
    (not Linux). Containers can share a hostname (host networking, pods) but not their pids."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        ns = os.stat("/proc/self/ns/pid")
    except OSError:
        return None
    return f"{boot}/{ns.st_dev}:{ns.st_ino}"


class FileLock:
    """Exclusive lock file holding {pid, host, ns, time, stale_s}, with bounded waiting.

    A lock whose process is gone (judged only from the same pid namespace, see process_namespace) or
    that is older than `stale_s` (or than its holder's own, if longer) is broken with a warning;
    waiting for a live lock longer than `timeout_s` raises TimeoutError (never hangs).
    """

    def __init__(self, path, timeout_s, stale_s, poll_s=0.5):
        self.path, self.timeout_s, self.stale_s, self.poll_s = Path(path), timeout_s, stale_s, poll_s
        self._mine = None

    def _holder(self):
        """(holder info, age in s, identity of the lock file: inode and mtime, None if gone)."""
        try:
            info = json.loads(self.path.read_text())
        except (OSError, ValueError):
            info = {}
        if not isinstance(info, dict):
            info = {}
        try:
            st = self.path.stat()
            age, ident = time.time() - st.st_mtime, (st.st_ino, st.st_mtime_ns)
        except OSError:
            age, ident = 0.0, None
        return info, age, ident

    def _is_dead(self, info):
        """Whether the holder's process is gone. Only a pid from this pid namespace on this boot is
        looked up: another container's pid means nothing here (its live holder would look dead), and
        where there is no namespace to compare (not Linux; on Windows os.kill(pid, 0) would even end
        the process) only the lock's age counts. A reused pid looks alive: the age breaks it later."""
        ns = process_namespace()
        if ns is None or info.get("ns") != ns or not isinstance(info.get("pid"), int):
            return False
        try:
            os.kill(info["pid"], 0)
        except ProcessLookupError:
            return True
        except OSError:
            return False
        return False

    def _stale_after(self, info):
        """Age past which the lock is broken: ours, or the holder's if longer (a process with a longer
        SG3LIB_BUILD_TIMEOUT may build for longer than ours allows)."""
        theirs = info.get("stale_s")
        if isinstance(theirs, (int, float)) and not isinstance(theirs, bool) and math.isfinite(theirs):
            return max(self.stale_s, theirs)
        return self.stale_s

    def _break(self, info, ident):
        """Remove the lock file judged stale if it is still the one judged (`info`, `ident`). Breakers
        take turns (an flock on a side file, which the kernel drops if a breaker dies) and look again
        first: one that judged the old lock stale must not remove the fresh lock that another breaker
        has taken meanwhile. False when the lock changed or another process is breaking it."""
        try:
            side = os.open(self.path.with_name(self.path.name + ".break"), os.O_RDONLY | os.O_CREAT, 0o644)
        except OSError:  # say, another user's side file in a shared cache: the second look alone
            side = None
        try:
            if side is not None and fcntl is not None:
                try:
                    fcntl.flock(side, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return False
                except OSError:  # no flock on this file system: the second look alone
                    pass
            if ident is None or self._holder()[::2] != (info, ident):
                return False
            try:
                os.remove(self.path)
            except OSError:
                return False
            return True
        finally:
            if side is not None:
                os.close(side)

    def acquire(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                info, age, ident = self._holder()
                dead = self._is_dead(info)
                if (dead or age > self._stale_after(info)) and self._break(info, ident):
                    why = "its process is gone" if dead else f"it is {age:.0f} s old"
                    warnings.warn(f"sg3lib: broke stale kernel build lock {self.path} ({why}; "
                                  f"holder {info or 'unknown'})", stacklevel=3)
                    continue
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"kernel build lock {self.path} held by {info or 'unknown'} for "
                                       f"{age:.0f} s; delete it if no build is running")
                time.sleep(self.poll_s)
                continue
            self._mine = {"pid": os.getpid(), "host": socket.gethostname(), "ns": process_namespace(),
                          "time": time.time(), "stale_s": self.stale_s}
            with os.fdopen(fd, "w") as fh:
                json.dump(self._mine, fh)
            return self

    def release(self):
        """Remove the lock file if it is still ours (one broken as stale may have a new holder)."""
        try:
            if json.loads(self.path.read_text()) == self._mine:
                os.remove(self.path)
        except (OSError, ValueError):
            pass

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def _first_error_line(text):
    """The line of a build log that says what went wrong: the first compiler error, else the
    Python exception that ended the build, else the last line."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in lines:
        if re.search(r"(^|[\s:)])(fatal )?error( [A-Z]*\d+)?\s?:|nvcc fatal", ln, re.IGNORECASE):
            return ln[:300]
    for ln in reversed(lines):
        if re.match(r"^[A-Za-z_.]*(Error|Exception)\b", ln):
            return ln[:300]
    return lines[-1][:300] if lines else "no output"


def _load_kwargs(name, build_dir, home=None):
    """cpp_extension.load's arguments; home: the toolkit root (default: find_nvcc's)."""
    kdir = kernel_dir()
    home = Path(home or Path(find_nvcc()[0]).parents[1])
    inc = cuda_include_dir(home)  # torch adds home/include itself, not conda's targets/<arch>/include
    includes = [str(kdir)] + ([str(inc)] if inc != home / "include" else [])
    return dict(name=name, sources=[str(kdir / n) for n in _KERNEL_SOURCES],
                extra_include_paths=includes, build_directory=str(build_dir),
                extra_cflags=_flags()["cxx"], extra_cuda_cflags=_flags()["cuda"])


def _library_path(name, build_dir):
    from torch.utils import cpp_extension
    return build_dir / f"{name}{cpp_extension.LIB_EXT}"


def _import_built(name, build_dir):
    """Import the extension module `name` that a finished build left in build_dir."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(name, _library_path(name, build_dir))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run_build(cmd, env, timeout):
    """(exit status, stdout + stderr) of the build command, run in a process group of its own. Past
    `timeout` (TimeoutExpired), or on an interrupt, the whole group is killed: killing only the Python
    that drives the build would leave its ninja and nvcc writing into the build folder after the lock
    is released, while the next process builds there."""
    with subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          start_new_session=True) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except BaseException:
            _kill_build(proc)
            raise
    return proc.returncode, out + err


def _kill_build(proc):
    """End the build and all it started: its process group; on Windows, which has none (and ignores
    start_new_session), its process tree, taken while the build's Python still links it to ninja, nvcc, cl."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
        return
    except (AttributeError, OSError):  # no process groups here (not POSIX)
        pass
    if sys.platform == "win32":
        try:
            subprocess.run(["taskkill", "/F", "/T", "/PID", str(proc.pid)], capture_output=True, timeout=60)
        except (OSError, subprocess.SubprocessError):
            pass
    proc.kill()


def _build_and_load():
    """Import the extension, building it first (in a subprocess, time-limited) unless a finished
    build of this key is in the cache. Raises on failure."""
    key = build_key()
    build_dir = cache_root() / key
    build_dir.mkdir(parents=True, exist_ok=True)
    name = f"sg3lib_kernels_{key}"
    archs = build_archs()
    timeout = _build_timeout()
    with FileLock(cache_root() / f"{key}.lock", timeout_s=timeout + 120, stale_s=timeout + 60):
        # The stamp is written last, so a build that died half-way is never loaded; a stamped build
        # is imported without ninja, which would rebuild a copied cache whose file times changed.
        stamp = build_dir / "built"
        if stamp.is_file() and stamp.read_text().strip() == key and _library_path(name, build_dir).is_file():
            try:
                return _import_built(name, build_dir), f"{_arch_names(archs)}, {build_dir} (cached build)"
            except ImportError:  # a damaged copy, say: build it again, from an empty folder (ninja
                shutil.rmtree(build_dir, ignore_errors=True)  # takes a library newer than its sources
                build_dir.mkdir(parents=True, exist_ok=True)  # for up to date and would not relink)
        from torch.utils import cpp_extension
        if not cpp_extension.is_ninja_available():  # only a build needs it; a stamped build loaded above
            raise RuntimeError("ninja not found; `pip install ninja`")
        torch_lock = build_dir / "lock"  # torch's own baton: stale whenever we hold our lock
        if torch_lock.exists():
            torch_lock.unlink()
        script = ("import json, sys\nfrom torch.utils import cpp_extension\n"
                  "cpp_extension.load(verbose=True, **json.loads(sys.argv[1]))\n")
        # A minute or two of silence would look like a hang in a notebook: say what is happening.
        print(f"sg3lib: building the CUDA kernels for {_arch_names(archs)} (once per set of GPU types, "
              f"torch and CUDA version; a minute or two) in {build_dir}{_arch_list_note(archs)}",
              file=sys.stderr, flush=True)
        t0 = time.monotonic()
        home = Path(find_nvcc()[0]).parents[1]  # the toolkit: the build's CUDA_HOME and headers
        try:
            returncode, log = _run_build([sys.executable, "-c", script, json.dumps(_load_kwargs(name, build_dir, home))],
                                         dict(os.environ, TORCH_CUDA_ARCH_LIST=";".join(archs), CUDA_HOME=str(home)),
                                         timeout)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"build timed out after {timeout:.0f} s (SG3LIB_BUILD_TIMEOUT); "
                               f"build folder {build_dir}")
        if returncode != 0:
            (build_dir / "build_error.log").write_text(log)
            raise RuntimeError(f"build failed: {_first_error_line(log)} "
                               f"(full log: {build_dir / 'build_error.log'})")
        module = _import_built(name, build_dir)
        print(f"sg3lib: CUDA kernels built in {time.monotonic() - t0:.0f} s", file=sys.stderr, flush=True)
        tmp = stamp.with_suffix(".tmp")
        tmp.write_text(key + "\n")
        os.replace(tmp, stamp)
    return module, f"{_arch_names(archs)}, {build_dir}"


class _State:
    lock = threading.Lock()
    done = False
    ok = False
    reason = "not checked yet"
    module = None
    warned = False


def available(warn=True):
    """(True, detail) when the kernels are built and loaded, else (False, reason). Never raises;
    the first call may build (minutes, bounded by SG3LIB_BUILD_TIMEOUT); later calls are free."""
    if _State.done and (_State.ok or _State.warned or not warn):
        return _State.ok, _State.reason  # decided: no lock, which torch.compile could not trace
    with _State.lock:
        if not _State.done:
            try:
                problem = _toolchain_problem()
                if problem is None:
                    _State.module, _State.reason = _build_and_load()
                    _State.ok = True
                else:
                    _State.reason = problem
            except Exception as e:  # any failure means: use the reference path
                _State.ok, _State.module = False, None
                _State.reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                if isinstance(e, TimeoutError):
                    _State.reason = "lock held: " + _State.reason
            _State.done = True
        if warn and not _State.ok and not _State.warned and _State.reason != "disabled by SG3LIB_CUDA=0":
            _State.warned = True
            warnings.warn(f"sg3lib: CUDA kernels unavailable ({_State.reason}); the ops use the "
                          "pure-PyTorch reference path instead (correct, slower). "
                          "sg3lib.ops.report() shows the details.", stacklevel=3)
        return _State.ok, _State.reason


def _reset():
    """Forget the cached result (tests)."""
    with _State.lock:
        _State.done, _State.ok, _State.reason, _State.module, _State.warned = (
            False, False, "not checked yet", None, False)


def report():
    """One line per op: which path it takes for CUDA tensors here, and why."""
    ok, reason = available(warn=False)
    notes = {
        "upfirdn2d": "polyphase kernel, separable filters as two passes",
        "filtered_lrelu": "fused kernel; unfused CUDA passes when filters exceed shared memory",
        "bias_act": "elementwise kernel with first and second derivatives",
    }
    if ok:
        return "\n".join(f"{op}: cuda kernel ({notes[op]}; {reason}); float64 and CPU tensors"
                         f"{'' if op == 'bias_act' else ', and filters that take a gradient,'} use the "
                         f"reference" for op in OPS)
    return "\n".join(f"{op}: reference ({reason})" for op in OPS)


def _ext():
    ok, reason = available()
    if not ok:
        raise RuntimeError(f"sg3lib CUDA kernels unavailable: {reason}")
    return _State.module


# ---------------------------------------------------------------------------------------------
# The kernels as custom ops (see the module docstring).


# Defined with torch.library.Library for the CPU (the simulator in tests) and CUDA dispatch keys:
# a call costs ~14 us of host time, a quarter of torch.library.custom_op's.
_LIB = torch.library.Library("sg3lib", "DEF")  # kept alive: it owns the registrations


def _define(schema, fn, fake):
    name = schema.split("(")[0]
    _LIB.define(schema)
    for key in ("CPU", "CUDA"):
        _LIB.impl(name, fn, key)
    torch.library.register_fake(f"sg3lib::{name}", fake, lib=_LIB)
    return getattr(torch.ops.sg3lib, name).default


def _upfirdn2d_pass_impl(x, f, upx, upy, downx, downy, px0, px1, py0, py1, out_dtype):
    """One correlation pass with the 2-D float32 kernel f; out_dtype a _DTYPE_CODES value."""
    return _ext().upfirdn2d(x, f, upx, upy, downx, downy, px0, px1, py0, py1, out_dtype)


def _upfirdn2d_pass_fake(x, f, upx, upy, downx, downy, px0, px1, py0, py1, out_dtype):
    fh, fw = f.shape
    oh = (x.shape[2] * upy + py0 + py1 - fh) // downy + 1
    ow = (x.shape[3] * upx + px0 + px1 - fw) // downx + 1
    return x.new_empty([x.shape[0], x.shape[1], oh, ow], dtype=_KERNEL_DTYPES[out_dtype])


def _filtered_lrelu_fwd_impl(x, fu, fd, b, up, down, padding, gain, slope, clamp, flip_filter, want_mask):
    """(y, packed mask or an empty uint8 tensor): the fused kernel, or unfused passes where its
    working set does not fit in shared memory."""
    px0, px1, py0, py1 = padding
    th, tw, oh, ow = _flrelu_geometry(x.shape, fu, fd, up, down, padding)
    w1, f1h, f1w, sep1 = _fused_taps(fu, up ** 2, not flip_filter, x.device)
    w2, f2h, f2w, sep2 = _fused_taps(fd, 1.0, not flip_filter, x.device)
    bb = b.to(x.dtype).contiguous() if b is not None else x.new_empty([0])
    y, mask = _ext().filtered_lrelu(x, w1, w2, bb, x.new_empty([0], dtype=torch.uint8), f1h, f1w, sep1, f2h, f2w,
                                    sep2, up, down, px0, py0, 0, 0, th, tw, oh, ow, gain, slope,
                                    -1.0 if clamp is None else clamp, False, want_mask)
    if y is None:  # filters too large for shared memory (or tiles too small for whole mask bytes)
        y, mask = _filtered_lrelu_unfused(x, b, fu, fd, up, down, padding, gain, slope, clamp, flip_filter)
        mask = mask if want_mask else x.new_empty([0], dtype=torch.uint8)
    return y, mask


def _filtered_lrelu_fwd_fake(x, fu, fd, b, up, down, padding, gain, slope, clamp, flip_filter, want_mask):
    th, tw, oh, ow = _flrelu_geometry(x.shape, fu, fd, up, down, padding)
    mask_shape = [x.shape[0], x.shape[1], th, (tw + 3) // 4] if want_mask else [0]
    return x.new_empty([x.shape[0], x.shape[1], oh, ow]), x.new_empty(mask_shape, dtype=torch.uint8)


def _filtered_lrelu_bwd_impl(dy, mask, fu, fd, up, down, padding, gain, slope, flip_filter, h, w, tw):
    """dx + db's per-sample terms [N, C, h, w] in dy's dtype, from dy and the forward's mask."""
    th = mask.shape[2]
    w1, f1h, f1w, sep1 = _fused_taps(fd, 1.0, flip_filter, dy.device)
    w2, f2h, f2w, sep2 = _fused_taps(fu, up ** 2, flip_filter, dy.device)
    dxb, _ = _ext().filtered_lrelu(dy, w1, w2, dy.new_empty([0]), mask, f1h, f1w, sep1, f2h, f2w, sep2, down, up,
                                   f1w - 1, f1h - 1, f2w - padding[0] - 1, f2h - padding[2] - 1, th, tw, h, w,
                                   gain, slope, -1.0, True, False)
    if dxb is None:
        dxb = _filtered_lrelu_grad_unfused(dy, mask, tw, fu, fd, up, down, padding, gain, slope, flip_filter,
                                           (dy.shape[0], dy.shape[1], h, w)).to(dy.dtype)
    return dxb


def _filtered_lrelu_bwd_fake(dy, mask, fu, fd, up, down, padding, gain, slope, flip_filter, h, w, tw):
    return dy.new_empty([dy.shape[0], dy.shape[1], h, w])


def _filtered_lrelu_linear_impl(v, mask, fu, fd, up, down, padding, gain, slope, flip_filter, tw):
    """The forward's linear map at the point that wrote mask, applied to v [N, C, h, w] (in v's
    dtype): fu up, times gain and the recorded slope (0 where clamped), fd down; no bias."""
    th, _, oh, ow = _flrelu_geometry(v.shape, fu, fd, up, down, padding)
    w1, f1h, f1w, sep1 = _fused_taps(fu, up ** 2, not flip_filter, v.device)
    w2, f2h, f2w, sep2 = _fused_taps(fd, 1.0, not flip_filter, v.device)
    y, _ = _ext().filtered_lrelu(v, w1, w2, v.new_empty([0]), mask, f1h, f1w, sep1, f2h, f2w, sep2, up, down,
                                 padding[0], padding[2], 0, 0, th, tw, oh, ow, gain, slope, -1.0, True, False)
    if y is None:
        t = _upfirdn2d_raw(v, fu, (up, up), (1, 1), padding, flip_filter, up ** 2, out_dtype=torch.float32)
        t = _times_recorded_slope(t, _unpack_codes(mask, tw), gain, slope)
        y = _upfirdn2d_raw(t, fd, (1, 1), (down, down), (0, 0, 0, 0), flip_filter, 1.0, out_dtype=v.dtype)
    return y


def _filtered_lrelu_linear_fake(v, mask, fu, fd, up, down, padding, gain, slope, flip_filter, tw):
    _, _, oh, ow = _flrelu_geometry(v.shape, fu, fd, up, down, padding)
    return v.new_empty([v.shape[0], v.shape[1], oh, ow])


def _bias_act_impl(x, b, dy, ddx, dim, act, mode, alpha, gain, clamp):
    """mode 0: the activation; 1: its first derivative times dy; 2: the second times dy * ddx."""
    return _ext().bias_act(x, b, dy, ddx, dim, act, mode, alpha, gain, clamp)


def _bias_act_fake(x, b, dy, ddx, dim, act, mode, alpha, gain, clamp):
    return torch.empty_like(x)


def _bias_act_masked_fwd_impl(x, b, dim, act, alpha, gain, clamp):
    """(y, 2-bit slope codes): linear, relu and lrelu only."""
    return tuple(_ext().bias_act_masked_fwd(x, b, dim, act, alpha, gain, clamp))


def _bias_act_masked_fwd_fake(x, b, dim, act, alpha, gain, clamp):
    return torch.empty_like(x), x.new_empty([(x.numel() + 3) // 4], dtype=torch.uint8)


def _bias_act_masked_bwd_impl(dy, mask, slope, gain):
    return _ext().bias_act_masked_bwd(dy, mask, slope, gain)


def _bias_act_masked_bwd_fake(dy, mask, slope, gain):
    return torch.empty_like(dy)


_upfirdn2d_pass = _define("upfirdn2d_pass(Tensor x, Tensor f, int upx, int upy, int downx, int downy, int px0, "
                          "int px1, int py0, int py1, int out_dtype) -> Tensor",
                          _upfirdn2d_pass_impl, _upfirdn2d_pass_fake)
_filtered_lrelu_fwd = _define("filtered_lrelu_fwd(Tensor x, Tensor? fu, Tensor? fd, Tensor? b, int up, int down, "
                              "int[] padding, float gain, float slope, float? clamp, bool flip_filter, "
                              "bool want_mask) -> (Tensor, Tensor)", _filtered_lrelu_fwd_impl, _filtered_lrelu_fwd_fake)
_filtered_lrelu_bwd = _define("filtered_lrelu_bwd(Tensor dy, Tensor mask, Tensor? fu, Tensor? fd, int up, int down, "
                              "int[] padding, float gain, float slope, bool flip_filter, int h, int w, int tw) -> Tensor",
                              _filtered_lrelu_bwd_impl, _filtered_lrelu_bwd_fake)
_filtered_lrelu_linear = _define("filtered_lrelu_linear(Tensor v, Tensor mask, Tensor? fu, Tensor? fd, int up, "
                                 "int down, int[] padding, float gain, float slope, bool flip_filter, int tw) -> Tensor",
                                 _filtered_lrelu_linear_impl, _filtered_lrelu_linear_fake)
_bias_act_kernel = _define("bias_act(Tensor x, Tensor b, Tensor dy, Tensor ddx, int dim, int act, int mode, "
                           "float alpha, float gain, float clamp) -> Tensor", _bias_act_impl, _bias_act_fake)
_bias_act_masked_fwd = _define("bias_act_masked_fwd(Tensor x, Tensor b, int dim, int act, float alpha, float gain, "
                               "float clamp) -> (Tensor, Tensor)", _bias_act_masked_fwd_impl, _bias_act_masked_fwd_fake)
_bias_act_masked_bwd = _define("bias_act_masked_bwd(Tensor dy, Tensor mask, float slope, float gain) -> Tensor",
                               _bias_act_masked_bwd_impl, _bias_act_masked_bwd_fake)


# ---------------------------------------------------------------------------------------------
# upfirdn2d


def _corr_passes(f, flip_filter, gain, device):
    """Correlation kernels (float32, 2-D) to run: one for a 2-D filter, [1, k] then [k, 1] for a
    1-D (separable) one. Flipping here makes the kernels plain correlations."""
    if f is None:
        f = torch.ones([1, 1], device=device)
    f = f.to(device=device, dtype=torch.float32)
    if f.ndim not in (1, 2):
        raise ValueError(f"filter must be 1-D (separable) or 2-D, got shape {tuple(f.shape)}")
    if not flip_filter:
        f = f.flip(list(range(f.ndim)))
    if f.ndim == 2:
        return [(f * gain).contiguous()]
    # sqrt(|gain|) on each pass and the sign on one (gain ** 0.5 of a negative gain is complex)
    f = f * abs(gain) ** 0.5
    return [(-f if gain < 0 else f).reshape(1, -1).contiguous(), f.reshape(-1, 1).contiguous()]


def _upfirdn2d_raw(x, f, up, down, padding, flip_filter, gain, out_dtype=None):
    """Forward kernels only (no autograd). up/down (x, y); padding (x0, x1, y0, y1)."""
    (upx, upy), (downx, downy), (px0, px1, py0, py1) = up, down, padding
    out_code = _DTYPE_CODES.get(out_dtype or x.dtype, _F32)
    x = x.contiguous()
    passes = _corr_passes(f, flip_filter, gain, x.device)
    if len(passes) == 1:
        return _upfirdn2d_pass(x, passes[0], upx, upy, downx, downy, px0, px1, py0, py1, out_code)
    t = _upfirdn2d_pass(x, passes[0], upx, 1, downx, 1, px0, px1, 0, 0, _F32)
    return _upfirdn2d_pass(t, passes[1], 1, upy, 1, downy, 0, 0, py0, py1, out_code)


def _transpose_padding(in_size, out_size, fsize, up, down, p0):
    """Padding (p0', p1') of the upfirdn2d that computes the gradient (up and down swapped, filter
    flipped): it must map the out_size gradient back onto exactly in_size samples."""
    return fsize - p0 - 1, in_size * up - out_size * down + p0 - up + 1


class _Upfirdn2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, f, up, down, padding, flip_filter, gain):
        y = _upfirdn2d_raw(x, f, up, down, padding, flip_filter, gain)
        ctx.save_for_backward(f)
        ctx.args = (up, down, padding, flip_filter, gain, x.shape)
        return y

    @staticmethod
    def backward(ctx, dy):
        (f,) = ctx.saved_tensors
        (upx, upy), (downx, downy), (px0, px1, py0, py1), flip_filter, gain, shape = ctx.args
        dx = None
        if ctx.needs_input_grad[0]:
            fw, fh = filter_size(f)
            gx = _transpose_padding(shape[3], dy.shape[3], fw, upx, downx, px0)
            gy = _transpose_padding(shape[2], dy.shape[2], fh, upy, downy, py0)
            dx = _Upfirdn2d.apply(dy, f, (downx, downy), (upx, upy), (gx[0], gx[1], gy[0], gy[1]),
                                  not flip_filter, gain)
        return dx, None, None, None, None, None, None


def _filter_grad(*filters):
    """Whether a filter takes a gradient here: the kernels give none, so such calls use the reference."""
    return torch.is_grad_enabled() and any(f is not None and f.requires_grad for f in filters)


def upfirdn2d(x, f, up, down, padding, flip_filter, gain):
    """CUDA upfirdn2d; see sg3lib/ops/upfirdn2d.py for the definition. A filter that takes a gradient
    goes to the reference (the kernel gives none for f)."""
    if x.dtype not in _KERNEL_DTYPES or _filter_grad(f):
        return upfirdn2d_ref(x, f, up, down, padding, flip_filter, gain)
    if x.ndim != 4:
        raise ValueError(f"upfirdn2d expects x of shape [N, C, H, W], got {tuple(x.shape)}")
    if f is not None and f.ndim not in (1, 2):  # before filter_size, which fails on a 0-D f (IndexError)
        raise ValueError(f"filter must be 1-D (separable) or 2-D, got shape {tuple(f.shape)}")
    fw, fh = filter_size(f)
    if x.shape[2] * up[1] + padding[2] + padding[3] < fh or x.shape[3] * up[0] + padding[0] + padding[1] < fw:
        raise ValueError(f"upfirdn2d output would be empty: input {tuple(x.shape[2:])}, up {up}, "
                         f"down {down}, padding {padding}, filter {fh}x{fw}")
    if f is None:
        f = torch.ones([1, 1], device=x.device)
    return _Upfirdn2d.apply(x, f, tuple(up), tuple(down), tuple(padding), bool(flip_filter), float(gain))


# ---------------------------------------------------------------------------------------------
# filtered_lrelu


def _fused_taps(f, gain, flip, device):
    """A filter as the fused kernel takes it: (taps, fh, fw, separable). Separable (1-D f): its taps,
    applied along x and along y, each time scaled by sqrt(gain); 2-D: [fh, fw] row-major scaled by
    gain. `flip` reverses the taps, which turns the convolution filter into the correlation kernel."""
    if f is None:
        f = torch.ones([1], device=device)  # made there: a copy from the CPU would wait for the GPU
    f = f.to(device=device, dtype=torch.float32)
    if f.ndim == 1:
        t = (f * math.sqrt(gain)).flip(0) if flip else f * math.sqrt(gain)
        return t.contiguous(), f.shape[0], f.shape[0], True
    t = (f * gain).flip([0, 1]) if flip else f * gain
    return t.contiguous().reshape(-1), f.shape[0], f.shape[1], False


def _pack_codes(codes):
    """Mask codes [N, C, th, tw] (0 clamped, 1 positive, 2 negative) -> uint8 [N, C, th, ceil(tw/4)],
    2 bits per sample, sample qx in bits 2*(qx % 4) of byte qx // 4: the fused kernel's layout."""
    c = torch.nn.functional.pad(codes.to(torch.uint8), (0, -codes.shape[3] % 4))
    c = c.reshape(*c.shape[:3], -1, 4)
    return c[..., 0] | (c[..., 1] << 2) | (c[..., 2] << 4) | (c[..., 3] << 6)


def _unpack_codes(mask, tw):
    """The inverse of _pack_codes: uint8 codes [N, C, th, tw]."""
    shifts = torch.tensor([0, 2, 4, 6], dtype=torch.uint8, device=mask.device)
    return ((mask.unsqueeze(-1) >> shifts) & 3).flatten(3)[..., :tw]


def _filtered_lrelu_unfused(x, b, fu, fd, up, down, padding, gain, slope, clamp, flip_filter):
    """Same result from separate CUDA passes (float32 intermediate); for filters too large for the
    fused kernel's shared memory. Returns (y, mask) with the fused kernel's packed mask."""
    # x + b in float32, as the fused kernel and the reference add it (in x's half dtype it was rounded)
    xb = x if b is None else x.float() + b.to(x.dtype).float().reshape(1, -1, 1, 1)
    t = _upfirdn2d_raw(xb, fu, (up, up), (1, 1), padding, flip_filter, up ** 2, out_dtype=torch.float32)
    pos = t > 0
    v = torch.where(pos, t, t * slope) * gain
    codes = torch.where(pos, 1, 2).to(torch.uint8)
    if clamp is not None:
        codes[(v > clamp) | (v < -clamp)] = 0
        v = v.clamp(-clamp, clamp)
    y = _upfirdn2d_raw(v, fd, (1, 1), (down, down), (0, 0, 0, 0), flip_filter, 1.0, out_dtype=x.dtype)
    return y, _pack_codes(codes)


def _times_recorded_slope(t, codes, gain, slope):
    """t times gain, gain * slope or 0 as the codes say (positive, negative, clamped)."""
    return torch.where(codes == 1, t * gain, torch.where(codes == 2, t * (gain * slope), torch.zeros_like(t)))


def _filtered_lrelu_grad_unfused(dy, mask, tw, fu, fd, up, down, padding, gain, slope, flip_filter, shape):
    """dx (float32) from separate CUDA passes, as _filtered_lrelu_unfused computes y."""
    px0, px1, py0, py1 = padding
    th, codes = mask.shape[2], _unpack_codes(mask, tw)
    fdw, fdh = filter_size(fd)
    gx = _transpose_padding(tw, dy.shape[3], fdw, 1, down, 0)
    gy = _transpose_padding(th, dy.shape[2], fdh, 1, down, 0)
    dt = _upfirdn2d_raw(dy.float(), fd, (down, down), (1, 1), (gx[0], gx[1], gy[0], gy[1]),
                        not flip_filter, 1.0, out_dtype=torch.float32)
    dt = _times_recorded_slope(dt, codes, gain, slope)
    fuw, fuh = filter_size(fu)
    gx = _transpose_padding(shape[3], tw, fuw, up, 1, px0)
    gy = _transpose_padding(shape[2], th, fuh, up, 1, py0)
    return _upfirdn2d_raw(dt, fu, (1, 1), (up, up), (gx[0], gx[1], gy[0], gy[1]), not flip_filter,
                          up ** 2, out_dtype=torch.float32)


def _flrelu_geometry(shape, fu, fd, up, down, padding):
    """(th, tw, oh, ow): the upsampled (intermediate) and output sizes for x of `shape`."""
    fuw, fuh = filter_size(fu)
    fdw, fdh = filter_size(fd)
    th = shape[2] * up + padding[2] + padding[3] - fuh + 1
    tw = shape[3] * up + padding[0] + padding[1] - fuw + 1
    return th, tw, (th - fdh) // down + 1, (tw - fdw) // down + 1


class _FilteredLrelu(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, fu, fd, b, up, down, padding, gain, slope, clamp, flip_filter):
        want_mask = ctx.needs_input_grad[0] or ctx.needs_input_grad[3]
        y, mask = _filtered_lrelu_fwd(x.contiguous(), fu, fd, b, up, down, list(padding), gain, slope, clamp,
                                      flip_filter, want_mask)
        ctx.save_for_backward(fu, fd, mask if want_mask else None)
        ctx.args = (up, down, padding, gain, slope, flip_filter, x.shape, x.dtype, None if b is None else b.dtype)
        return y

    @staticmethod
    def backward(ctx, dy):
        fu, fd, mask = ctx.saved_tensors
        up, down, padding, gain, slope, flip_filter, shape, xdtype, bdtype = ctx.args
        if dy.dtype not in _KERNEL_DTYPES:
            dy = dy.float()
        dxb = _FilteredLreluGrad.apply(dy, mask, fu, fd, up, down, padding, gain, slope, flip_filter, shape)
        dx = dxb.to(xdtype) if ctx.needs_input_grad[0] else None
        db = dxb.sum([0, 2, 3], dtype=torch.float32).to(bdtype) if ctx.needs_input_grad[3] else None
        return dx, None, None, db, None, None, None, None, None, None, None


class _FilteredLreluGrad(torch.autograd.Function):
    """dy -> dx (and db's per-sample terms) for the forward that wrote mask: the transpose in one
    fused pass (dy up by `down` with flipped fd, times the recorded slope, flipped fu and down by
    `up`). Linear in dy; its backward is _FilteredLreluLinear."""

    @staticmethod
    def forward(ctx, dy, mask, fu, fd, up, down, padding, gain, slope, flip_filter, shape):
        ctx.save_for_backward(mask, fu, fd)
        ctx.args = (up, down, padding, gain, slope, flip_filter)
        tw = _flrelu_geometry(shape, fu, fd, up, down, padding)[1]
        return _filtered_lrelu_bwd(dy.contiguous(), mask, fu, fd, up, down, list(padding), gain, slope, flip_filter,
                                   shape[2], shape[3], tw)

    @staticmethod
    def backward(ctx, ddx):
        mask, fu, fd = ctx.saved_tensors
        return (_FilteredLreluLinear.apply(ddx, mask, fu, fd, *ctx.args),) + (None,) * 10


class _FilteredLreluLinear(torch.autograd.Function):
    """v -> the forward's linear map at the recorded slopes (filtered_lrelu's derivative, applied
    to v); the transpose of _FilteredLreluGrad, which is its backward."""

    @staticmethod
    def forward(ctx, v, mask, fu, fd, up, down, padding, gain, slope, flip_filter):
        ctx.save_for_backward(mask, fu, fd)
        ctx.args = (up, down, padding, gain, slope, flip_filter)
        ctx.shape = v.shape
        tw = _flrelu_geometry(v.shape, fu, fd, up, down, padding)[1]
        return _filtered_lrelu_linear(v.contiguous(), mask, fu, fd, up, down, list(padding), gain, slope,
                                      flip_filter, tw)

    @staticmethod
    def backward(ctx, dd):
        mask, fu, fd = ctx.saved_tensors
        return (_FilteredLreluGrad.apply(dd, mask, fu, fd, *ctx.args, ctx.shape),) + (None,) * 9


def filtered_lrelu(x, fu, fd, b, up, down, padding, gain, slope, clamp, flip_filter):
    """CUDA filtered_lrelu (fused forward); see sg3lib/ops/filtered_lrelu.py. Differentiable to any
    order in x and b; filters that take a gradient go to the reference."""
    if x.dtype not in _KERNEL_DTYPES or _filter_grad(fu, fd):
        return filtered_lrelu_ref(x, fu, fd, b, up, down, padding, gain, slope, clamp, flip_filter)
    if x.ndim != 4:
        raise ValueError(f"filtered_lrelu expects x of shape [N, C, H, W], got {tuple(x.shape)}")
    for name, factor in (("up", up), ("down", down)):
        if factor < 1:  # as the reference says it (the geometry below would divide by a zero down)
            raise ValueError(f"{name} factors must be >= 1, got {factor!r}")
    if b is not None and (b.ndim != 1 or b.shape[0] != x.shape[1]):
        raise ValueError(f"bias of shape {tuple(b.shape)} does not match the {x.shape[1]} channels of x")
    for name, f in (("fu", fu), ("fd", fd)):
        if f is not None and f.ndim not in (1, 2):
            raise ValueError(f"{name} must be 1-D (separable) or 2-D, got shape {tuple(f.shape)}")
    fuw, fuh = filter_size(fu)
    fdw, fdh = filter_size(fd)
    th, tw, _, _ = _flrelu_geometry(x.shape, fu, fd, up, down, padding)
    if th < fdh or tw < fdw:
        raise ValueError(f"filtered_lrelu output would be empty: input {tuple(x.shape[2:])}, up {up}, "
                         f"down {down}, padding {padding}, fu {fuh}x{fuw}, fd {fdh}x{fdw}")
    return _FilteredLrelu.apply(x, fu, fd, b, int(up), int(down), tuple(padding), float(gain), float(slope),
                                None if clamp is None or clamp < 0 else float(clamp), bool(flip_filter))


# ---------------------------------------------------------------------------------------------
# bias_act


def _empty(x):
    return torch.empty([0], device=x.device, dtype=x.dtype)


def _prep_b(b, x):
    return _empty(x) if b is None else b.to(x.dtype).contiguous()


def _sum_but(t, dim):
    dims = [d for d in range(t.ndim) if d != dim]
    return t.sum(dims) if dims else t  # t.sum([]) would sum over every dim (a 1-D x: db a scalar)


# The bias_act Functions take clamp as the kernel does: a float, negative for none.
def _bias_act_forward(xc, b, dim, act, alpha, gain, clamp):
    """The activation (mode 0) of contiguous xc."""
    return _bias_act_kernel(xc, _prep_b(b, xc), _empty(xc), _empty(xc), dim, ACTS[act], 0, alpha, gain, clamp)


class _BiasAct(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, b, dim, act, alpha, gain, clamp):
        xc = x.contiguous()
        y = _bias_act_forward(xc, b, dim, act, alpha, gain, clamp)
        ctx.save_for_backward(x, b)  # the inputs themselves, so double backward reaches them
        ctx.args = (dim, act, alpha, gain, clamp)
        return y

    @staticmethod
    def backward(ctx, dy):
        x, b = ctx.saved_tensors
        dim = ctx.args[0]
        dx = _BiasActGrad.apply(dy, x, b, *ctx.args)
        db = _sum_but(dx, dim).to(b.dtype) if b is not None and ctx.needs_input_grad[1] else None
        return (dx if ctx.needs_input_grad[0] else None), db, None, None, None, None, None


class _BiasActGrad(torch.autograd.Function):
    """dx = dy * gain * act'(x + b) (0 where clamped); differentiable once more (R1)."""

    @staticmethod
    def forward(ctx, dy, x, b, dim, act, alpha, gain, clamp):
        xc = x.contiguous()
        dx = _bias_act_kernel(xc, _prep_b(b, xc), dy.contiguous().to(xc.dtype), _empty(xc), dim, ACTS[act],
                             1, alpha, gain, clamp)
        ctx.save_for_backward(dy, x, b)
        ctx.args = (dim, act, alpha, gain, clamp)
        return dx

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, ddx):
        dy, x, b = ctx.saved_tensors
        dim, act, alpha, gain, clamp = ctx.args
        xc = x.contiguous()
        ddx = ddx.contiguous().to(xc.dtype)
        d_dy = d_x = d_b = None
        bc = _prep_b(b, xc)
        if ctx.needs_input_grad[0]:  # dx is linear in dy: d(dx)/d(dy) . ddx = ddx * gain * act'
            d_dy = _bias_act_kernel(xc, bc, ddx, _empty(xc), dim, ACTS[act], 1, alpha, gain, clamp).to(dy.dtype)
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:  # dy * ddx * gain * act''
            d_x = _bias_act_kernel(xc, bc, dy.contiguous().to(xc.dtype), ddx, dim, ACTS[act], 2, alpha, gain, clamp)
            if b is not None and ctx.needs_input_grad[2]:
                d_b = _sum_but(d_x, dim).to(b.dtype)
        return (d_dy, d_x if ctx.needs_input_grad[1] else None, d_b, None, None, None, None, None)


# The negative side's slope of the piecewise-linear activations, whose backward needs only a 2-bit
# code per element (positive side, negative side, clamped) instead of x: an eighth of a float16 x.
_PIECEWISE_LINEAR = {"linear": lambda alpha: 1.0, "relu": lambda alpha: 0.0, "lrelu": lambda alpha: alpha}


class _BiasActMasked(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, b, dim, act, alpha, gain, clamp):
        xc = x.contiguous()
        y, mask = _bias_act_masked_fwd(xc, _prep_b(b, xc), dim, ACTS[act], alpha, gain, clamp)
        ctx.save_for_backward(mask)
        ctx.dim, ctx.slope, ctx.gain = dim, _PIECEWISE_LINEAR[act](alpha), gain
        ctx.dtypes = (x.dtype, None if b is None else b.dtype)
        return y

    @staticmethod
    def backward(ctx, dy):
        (mask,) = ctx.saved_tensors
        dx = _MaskedSlope.apply(dy.to(ctx.dtypes[0]), mask, ctx.slope, ctx.gain)
        db = _sum_but(dx, ctx.dim).to(ctx.dtypes[1]) if ctx.needs_input_grad[1] else None
        return (dx if ctx.needs_input_grad[0] else None), db, None, None, None, None, None


class _MaskedSlope(torch.autograd.Function):
    """dx = dy * gain * recorded slope: linear in dy (the slopes are piecewise constant in x, so
    x's second derivative is 0), hence its backward is itself applied to the incoming gradient."""

    @staticmethod
    def forward(ctx, dy, mask, slope, gain):
        ctx.save_for_backward(mask)
        ctx.slope, ctx.gain = slope, gain
        return _bias_act_masked_bwd(dy.contiguous(), mask, slope, gain)

    @staticmethod
    def backward(ctx, ddx):
        (mask,) = ctx.saved_tensors
        return _MaskedSlope.apply(ddx, mask, ctx.slope, ctx.gain), None, None, None


def bias_act(x, b, dim, act, alpha, gain, clamp):
    """CUDA bias_act; alpha, gain resolved floats, clamp float or None. Twice differentiable."""
    if x.dtype not in _KERNEL_DTYPES or x.ndim == 0:  # a scalar: nothing to gain, and no dim
        return bias_act_ref(x, b, dim, act, alpha, gain, clamp)
    if act not in ACTS:
        raise ValueError(f"unknown activation {act!r}; choose one of {', '.join(ACTS)}")
    if b is not None and not -x.ndim <= dim < x.ndim:
        raise ValueError(f"dim {dim} is out of range for x of shape {tuple(x.shape)}")
    dim = dim % x.ndim
    if b is not None and (b.ndim != 1 or b.shape[0] != x.shape[dim]):
        raise ValueError(f"bias of shape {tuple(b.shape)} does not match dim {dim} of x {tuple(x.shape)}")
    alpha, gain, clamp = float(alpha), float(gain), -1.0 if clamp is None else float(clamp)  # < 0: none
    if not (torch.is_grad_enabled() and (x.requires_grad or (b is not None and b.requires_grad))):
        return _bias_act_forward(x.contiguous(), b, dim, act, alpha, gain, clamp)  # generation: nothing kept
    fn = _BiasActMasked if act in _PIECEWISE_LINEAR else _BiasAct
    return fn.apply(x, b, dim, act, alpha, gain, clamp)
