"""Compile check of the CUDA kernels (build without running): what CI does instead of a GPU test.

Every kernels/*.cu (and benchmarks/sanitizer_canary.cu) goes through `nvcc -c` for sm_86 (RTX 30xx)
and sm_90 (H100), and the torch binding through `g++ -fsyntax-only`, all at once (the binding's torch
headers dominate: ~40 s on 2 cores). Without nvcc the test skips, except under CI=true, where a
kernel that cannot be compiled must not land.

The CPU wheel of torch lacks c10/cuda/impl/cuda_cmake_macros.h, which c10/cuda headers include;
an empty stand-in goes on the include path (the CUDA build of torch ships the real one).
"""
import os
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest

from sg3lib.ops import _cuda

KERNELS = Path(__file__).resolve().parents[1] / "kernels"
ARCHS = ["-gencode", "arch=compute_86,code=sm_86", "-gencode", "arch=compute_90,code=sm_90"]


def _need(tool_path, what):
    if tool_path:
        return tool_path
    msg = f"{what} not found"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{msg}: CI must compile the CUDA kernels (install the CUDA toolkit / a C++ compiler)")
    pytest.skip(msg)


def _cuda_include(nvcc):
    for home in (Path(nvcc).resolve().parents[1], Path(os.environ.get("CUDA_HOME", "/nonexistent")),
                 Path("/usr/local/cuda")):
        if (home / "include" / "cuda_runtime_api.h").is_file():
            return str(home / "include")
    return None


def test_kernels_compile(tmp_path):
    nvcc = _need(_cuda.find_nvcc()[0], "nvcc")
    cxx = _need(shutil.which("g++") or shutil.which("c++"), "g++")
    cuda_inc = _need(_cuda_include(nvcc), "CUDA include folder (cuda_runtime_api.h)")
    py_inc = sysconfig.get_paths()["include"]
    _need(py_inc if os.path.isfile(os.path.join(py_inc, "Python.h")) else None, "Python.h (python3-dev)")
    import torch
    from torch.utils.cpp_extension import include_paths

    shim = tmp_path / "shim" / "c10" / "cuda" / "impl"
    shim.mkdir(parents=True)
    (shim / "cuda_cmake_macros.h").write_text("#pragma once\n")
    incs = [f"-I{p}" for p in include_paths()] + [f"-I{tmp_path / 'shim'}", f"-I{cuda_inc}", f"-I{KERNELS}"]
    abi = f"-D_GLIBCXX_USE_CXX11_ABI={int(torch.compiled_with_cxx11_abi())}"

    cmds = {}
    for cu in sorted(KERNELS.glob("*.cu")):
        cmds[cu.name] = [nvcc, "-c", "-std=c++20", "-O3", "--expt-relaxed-constexpr", *ARCHS, *incs,
                         str(cu), "-o", str(tmp_path / (cu.stem + ".o"))]
    # gpu_session.sh's compute-sanitizer canary: it must build on the GPU machine at first try
    canary = KERNELS.parent / "benchmarks" / "sanitizer_canary.cu"
    cmds[canary.name] = [nvcc, "-c", "-O2", *ARCHS, f"-I{cuda_inc}", str(canary),
                         "-o", str(tmp_path / (canary.stem + ".o"))]
    for cpp in sorted(KERNELS.glob("*.cpp")):
        cmds[cpp.name] = [cxx, "-fsyntax-only", "-std=c++20", abi, "-DTORCH_EXTENSION_NAME=sg3lib_check",
                          "-DTORCH_API_INCLUDE_EXTENSION_H", *incs,
                          f"-I{py_inc}", str(cpp)]
    assert {"upfirdn2d.cu", "filtered_lrelu.cu", "bias_act.cu", "sg3_binding.cpp", "sanitizer_canary.cu"} <= set(cmds)

    start = time.monotonic()
    procs = {name: subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for name, cmd in cmds.items()}
    failures = []
    for name, proc in procs.items():
        try:
            out, _ = proc.communicate(timeout=900)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
            failures.append(f"{name}: compiler timed out\n{out}")
            continue
        if proc.returncode != 0:
            failures.append(f"{name} failed (exit {proc.returncode}):\n  {' '.join(cmds[name])}\n{out}")
    print(f"compiled {len(cmds)} translation units in {time.monotonic() - start:.1f} s", file=sys.stderr)
    assert not failures, "\n\n".join(failures)
    for cu in (n for n in cmds if n.endswith(".cu")):
        assert (tmp_path / (Path(cu).stem + ".o")).stat().st_size > 0


def test_missing_compiler_fails_under_ci(monkeypatch):
    """Without nvcc the compile check skips on a laptop but fails in CI (CI=true)."""
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI must compile"):
        _need(None, "nvcc")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception):
        _need(None, "nvcc")
    assert _need("/usr/bin/nvcc", "nvcc") == "/usr/bin/nvcc"
