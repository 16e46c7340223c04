"""What every benchmark records with its figures: the machine line, the append to RESULTS.md, and
where a profiled run spent its time."""
import contextlib
import os
import platform
import re
import signal
import subprocess
import sys
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def machine_line(device, tf32=None):
    """GPU: name, driver, torch/CUDA versions; CPU: model, cores, torch threads, versions. tf32: what the
    measured runs used, where they set it themselves (train() does, and restores torch's flags after);
    None: torch's flags now."""
    device = torch.device(device)
    torch_line = f"torch {torch.__version__}, CUDA {torch.version.cuda}"
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        try:
            drv = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=20).stdout.strip().splitlines()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            drv = "unknown"
        conv, mm = ((torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) if tf32 is None
                    else (tf32, tf32))
        word = {True: "on", False: "off"}
        return f"{name}, driver {drv}, {torch_line}, TF32 convolutions {word[bool(conv)]} / matmuls {word[bool(mm)]}"
    cpu = platform.processor() or "CPU"
    try:
        for ln in Path("/proc/cpuinfo").read_text().splitlines():
            if ln.startswith("model name"):
                cpu = ln.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores visible, {torch.get_num_threads()} torch threads, {torch_line}"


class _Stop:
    signum = None

    def note(self, done, total):
        """The results' line saying that the stage budget ended the run early, or ''."""
        return (f"- stopped by signal {self.signum} (gpu_session.sh's stage budget) after {done} of {total} "
                "cases\n" if self.signum else "")

    def exit_if_stopped(self):
        """Exit 128 + the signal once the written results are out (the stage's log shows the stop)."""
        if self.signum:
            sys.exit(128 + self.signum)


@contextlib.contextmanager
def stop_on_sigterm():
    """A block of benchmark cases that SIGTERM ends early: gpu_session.sh's stage deadline (`timeout`)
    sends it, and the cases finished so far are then still written. Yields an object whose `signum` is
    set once the signal came; whatever the signal broke off inside the block (a KeyboardInterrupt, or the
    DataLoader's error for its terminated workers) ends the block quietly."""
    stop = _Stop()

    def on_term(signum, frame):
        stop.signum = signum
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one is enough: let the results be written
        if hasattr(signal, "SIGCHLD"):  # the DataLoader's handler would raise for its killed workers
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        raise KeyboardInterrupt(f"signal {signum}")

    old = signal.signal(signal.SIGTERM, on_term)
    try:
        yield stop
    except BaseException:
        if stop.signum is None:
            raise
    finally:
        signal.signal(signal.SIGTERM, old)


def append_results(text):
    """Append a section to RESULTS.md (written to a temporary name, then renamed into place)."""
    old = RESULTS.read_text() if RESULTS.exists() else "# sg3lib benchmarks\n"
    tmp = RESULTS.with_name(RESULTS.name + ".tmp")
    tmp.write_text(old.rstrip("\n") + "\n\n" + text.lstrip("\n"))
    os.replace(tmp, RESULTS)
    print(f"appended to {RESULTS}")


# Where the time goes, by kind of work: GPU kernels by name, CPU operators by name (first match wins).
_GPU_KINDS = [("sg3lib kernels", r"sg3"), ("memory copy / set", r"^memcpy|^memset"),
              ("convolution / GEMM", r"gemm|conv(?!ert)|xmma|cutlass|cudnn|fprop|dgrad|wgrad|^sm\d+_"),
              ("reduction", r"reduce"), ("elementwise", r"elementwise|vectorized")]
_CPU_KINDS = [("sg3lib ops", r"sg3lib::"), ("convolution / matmul", r"conv|mm$|matmul|linear|einsum|winograd"),
              ("copies / layout", r"copy|cat$|stack|clone|pad|index|gather|permute|contiguous"),
              ("views / allocation", r"view|slice|as_strided|empty|reshape|expand|squeeze|select|transpose|"
                                     r"detach|alias|^aten::t$"),
              ("elementwise", r"^aten::(mul|add|sub|div|where|leaky_relu|clamp|exp|sqrt|rsqrt|pow|neg|abs|sign|"
                              r"lerp|fill|zero|square|reciprocal|lt|gt|ge|le|eq|ne)(_|$)"),
              ("reduction", r"sum|mean|norm|max|min")]


def profiler(device):
    """A torch.profiler session: on a GPU its kernels only (all that top_costs reads there: a training
    tick launches some 10^5, and sorting out the events took the profiler 13 s per 10^5 on the 2-core
    CPU machine); on the CPU the operators."""
    gpu = torch.device(device).type == "cuda"
    return torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA if gpu
                                              else torch.profiler.ProfilerActivity.CPU])


def _kind(name, kinds):
    for kind, pattern in kinds:
        if re.search(pattern, name, re.IGNORECASE):
            return kind
    return "other"


def top_costs(prof, device, wall_s, top=15):
    """Markdown: where a profiled window's time went. GPU: kernels by their time on the device (the
    busy fraction of the window shows how far the host keeps the GPU fed); CPU: operators by their
    self time. Time by kind of work, then the `top` costliest entries."""
    gpu = torch.device(device).type == "cuda"
    if gpu:
        events = [(e.key, e.count, e.self_device_time_total) for e in prof.key_averages()
                  if e.device_type == torch.autograd.DeviceType.CUDA and e.self_device_time_total > 0]
    else:
        events = [(e.key, e.count, e.self_cpu_time_total) for e in prof.key_averages()
                  if e.self_cpu_time_total > 0]
    events.sort(key=lambda e: -e[2])
    busy_us = sum(e[2] for e in events) or 1
    what = "GPU kernel time" if gpu else "operator self time (CPU)"
    lines = [f"- profiled window: {wall_s:.2f} s wall, {what} {busy_us / 1e6:.2f} s"
             + (f" (GPU busy {100 * busy_us / 1e6 / wall_s:.0f}% of the window)" if gpu else ""), "",
             "| kind of work | s | share |", "|---|---|---|"]
    kinds = {}
    for name, _, us in events:
        kind = _kind(name, _GPU_KINDS if gpu else _CPU_KINDS)
        kinds[kind] = kinds.get(kind, 0) + us
    lines += [f"| {k} | {us / 1e6:.3f} | {100 * us / busy_us:.1f}% |"
              for k, us in sorted(kinds.items(), key=lambda kv: -kv[1])]
    lines += ["", f"| {'kernel' if gpu else 'operator'} | calls | s | share |", "|---|---|---|---|"]
    for name, count, us in events[:top]:
        name = name.replace("|", "/")
        name = name if len(name) <= 100 else name[:97] + "..."
        lines.append(f"| `{name}` | {count} | {us / 1e6:.3f} | {100 * us / busy_us:.1f}% |")
    return "\n".join(lines) + "\n"
