"""What every benchmark records with its figures: the machine line and the append to RESULTS.md."""
import os
import platform
import subprocess
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def machine_line(device):
    """GPU: name, driver, torch/CUDA versions; CPU: model, cores, torch threads, versions."""
    device = torch.device(device)
    torch_line = f"torch {torch.__version__}, CUDA {torch.version.cuda}"
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        try:
            drv = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=20).stdout.strip().splitlines()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            drv = "unknown"
        tf32 = {True: "on", False: "off"}
        return (f"{name}, driver {drv}, {torch_line}, TF32 convolutions {tf32[torch.backends.cudnn.allow_tf32]}"
                f" / matmuls {tf32[torch.backends.cuda.matmul.allow_tf32]}")
    cpu = platform.processor() or "CPU"
    try:
        for ln in Path("/proc/cpuinfo").read_text().splitlines():
            if ln.startswith("model name"):
                cpu = ln.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores visible, {torch.get_num_threads()} torch threads, {torch_line}"


def append_results(text):
    """Append a section to RESULTS.md (written to a temporary name, then renamed into place)."""
    old = RESULTS.read_text() if RESULTS.exists() else "# sg3lib benchmarks\n"
    tmp = RESULTS.with_name(RESULTS.name + ".tmp")
    tmp.write_text(old.rstrip("\n") + "\n\n" + text.lstrip("\n"))
    os.replace(tmp, RESULTS)
    print(f"appended to {RESULTS}")
