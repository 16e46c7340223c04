"""The CPU simulator for the CUDA kernels (tests/cudasim) catches the bugs it claims to catch.

A toy kernel with a switch for each bug: a missing __syncthreads (race), an out-of-bounds shared
memory write, a barrier only some threads reach, an out-of-bounds global read and write, an
output left unwritten, and blocks writing different values to one output. The simulated kernels/*.cu are tested against the reference in
test_ops_cuda.py; this file makes sure a clean result there means something.
"""
import os

import pytest
import torch

import cudasim

HEADER = """#pragma once
#include <cstdint>
#include <cuda_runtime_api.h>
namespace sg3 {
struct ToyArgs { const float* x; float* y; int n, bug; };
cudaError_t toy_launch(const ToyArgs& a, cudaStream_t stream);
}
"""

# y[i] = x[i + 1 within the block, wrapping], through shared memory.
KERNEL = """#include "toy.h"
namespace sg3 {
__global__ void toy_kernel(ToyArgs a) {
    extern __shared__ float s[];
    const int t = threadIdx.x, i = blockIdx.x * blockDim.x + t;
    if (a.bug == 3 && t == 5) return;                                // skips the barrier
    s[t] = i < a.n ? a.x[a.bug == 4 ? i + 1 : i] : 0.f;              // 4: reads x[n]
    if (a.bug != 1) __syncthreads();                                 // 1: race
    if (a.bug == 2 && t == 0) s[blockDim.x] = 1.f;                   // 2: past the end of s
    const float v = s[(t + 1) % blockDim.x];
    if (i < a.n && !(a.bug == 5 && i == a.n - 1)) a.y[a.bug == 6 ? i + 1 : i] = v;  // 5, 6
    if (a.bug == 7 && t == 0) a.y[0] = (float)blockIdx.x;            // 7: blocks race on y[0]
}
cudaError_t toy_launch(const ToyArgs& a, cudaStream_t stream) {
    const int threads = 64;
    toy_kernel<<<(a.n + threads - 1) / threads, threads, threads * sizeof(float), stream>>>(a);
    return cudaGetLastError();
}
}
"""


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    if cudasim.compiler() is None:
        if os.environ.get("CI") == "true":
            pytest.fail("no C++ compiler: CI must test the CUDA simulator (install g++)")
        pytest.skip("no C++ compiler")
    d = tmp_path_factory.mktemp("toy")
    (d / "toy.h").write_text(HEADER)
    (d / "toy.cu").write_text(KERNEL)
    kernels = cudasim.load(sources=[d / "toy.cu"], header=d / "toy.h", cache=d / "cache")
    n = 150  # three blocks, the last one partial

    def run(bug, reverse=False):
        x = cudasim.Guarded.copy_of(torch.arange(n, dtype=torch.float32))
        y = cudasim.Guarded([n], torch.float32, float("nan"), -12345.0)
        err, msg = kernels("toy_launch", reverse=reverse, x=x.ptr(), y=y.ptr(), n=n, bug=bug)
        return err, msg, y

    return run


def expected(n=150, block=64):
    i = torch.arange(n)
    nxt = (i % block + 1) % block + i // block * block
    return torch.where(nxt < n, nxt, torch.zeros_like(nxt)).float()


@pytest.mark.parametrize("reverse", [False, True])
def test_correct_kernel_is_clean(toy, reverse):
    err, msg, y = toy(0, reverse)
    assert err == 0 and msg == ""
    y.check("y")
    assert torch.equal(y.t, expected())


def test_missing_barrier_is_a_race(toy):
    ys = [toy(1, reverse)[2].t for reverse in (False, True)]
    assert not torch.equal(ys[0].nan_to_num(-1), ys[1].nan_to_num(-1))  # what the race test compares
    assert ys[0].isnan().any()  # ascending order: neighbours read poisoned (unwritten) shared memory


def test_blocks_writing_one_word_is_a_race(toy):
    ys = [toy(7, reverse)[2].t for reverse in (False, True)]
    assert ys[0][0] != ys[1][0] and torch.equal(ys[0][1:], ys[1][1:])  # blocks run in both orders


def test_shared_out_of_bounds_write(toy):
    err, msg, _ = toy(2)
    assert err != 0 and "shared memory written out of bounds" in msg


def test_barrier_divergence(toy):
    err, msg, _ = toy(3)
    assert err != 0 and "barrier divergence" in msg


def test_global_out_of_bounds_read_poisons_the_output(toy):
    err, _, y = toy(4)
    assert err == 0 and y.t.isnan().any()


def test_unwritten_output_stays_nan(toy):
    _, _, y = toy(5)
    assert y.t[-1].isnan() and not y.t[:-1].isnan().any()


def test_global_out_of_bounds_write(toy):
    _, _, y = toy(6)
    with pytest.raises(RuntimeError, match="written out of bounds"):
        y.check("y")


def test_launch_limits(tmp_path):
    """The simulator refuses what a GPU refuses: too many threads, too much shared memory."""
    if cudasim.compiler() is None:
        pytest.skip("no C++ compiler")
    (tmp_path / "toy.h").write_text(HEADER)
    (tmp_path / "toy.cu").write_text(KERNEL.replace("const int threads = 64;", "const int threads = a.bug;")
                                     .replace("threads * sizeof(float)", "(size_t)a.n * sizeof(float)"))
    kernels = cudasim.load(sources=[tmp_path / "toy.cu"], header=tmp_path / "toy.h", cache=tmp_path / "c")
    x = cudasim.Guarded.copy_of(torch.zeros(13000))
    y = cudasim.Guarded([13000], torch.float32, 0.0, -1.0)
    assert kernels("toy_launch", x=x.ptr(), y=y.ptr(), n=64, bug=2048)[0] == 9  # > 1024 threads
    assert kernels("toy_launch", x=x.ptr(), y=y.ptr(), n=13000, bug=1024)[0] == 1  # > 48 KB shared


def test_unsupported_syntax_is_refused():
    with pytest.raises(NotImplementedError, match="dynamic shared memory"):
        cudasim._rewrite("__global__ void k() { __shared__ float s[64]; }", "k.cu")
    with pytest.raises(NotImplementedError, match="__shfl"):
        cudasim._rewrite("__global__ void k() { float v = __shfl_xor_sync(~0u, 1.f, 1); }", "k.cu")
