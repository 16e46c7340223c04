"""benchmarks/results.py's profile summary and bench_train's tick profiler (CPU; the GPU session
runs them on kernels)."""
import sys
import time
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_train  # noqa: E402
import results  # noqa: E402


def _tables(md):
    """The rows of the markdown tables in top_costs' text, as lists of cells (header rows dropped)."""
    rows = [[c.strip() for c in ln.strip("|").split("|")] for ln in md.splitlines() if ln.startswith("| ")]
    kinds = [r for r in rows if r[0] != "kind of work" and len(r) == 3]
    entries = [r for r in rows if r[0] != "operator" and len(r) == 4]
    return kinds, entries


def test_top_costs_ranks_the_costliest_operator_first():
    a = torch.randn(384, 384)
    with results.profiler("cpu") as prof:
        for _ in range(10):
            a @ a
            a + 1.0
    md = results.top_costs(prof, "cpu", wall_s=1.0)
    kinds, entries = _tables(md)
    assert entries[0][0] == "`aten::mm`" and entries[0][1] == "10"
    assert kinds[0][0] == "convolution / matmul"
    assert sum(float(k[2].rstrip("%")) for k in kinds) == pytest.approx(100, abs=0.5)
    shares = [float(e[3].rstrip("%")) for e in entries]
    assert shares == sorted(shares, reverse=True) and sum(shares) <= 100.5


@pytest.mark.parametrize("name, kind", [
    ("void sg3::filtered_lrelu_kernel<c10::Half>(sg3::FilteredLreluArgs, int, int)", "sg3lib kernels"),
    ("sm90_xmma_fprop_implicit_gemm_f16f16_f16f32_f32_nhwckrsc_nhwc_tilesize128x128x64", "convolution / GEMM"),
    ("void cudnn::engines_precompiled::nchwToNhwcKernel<__half, __half, float, false>", "convolution / GEMM"),
    ("Memcpy HtoD (Pinned -> Device)", "memory copy / set"),
    ("void at::native::vectorized_elementwise_kernel<4, at::native::CUDAFunctor_add<float>>", "elementwise"),
    ("void at::native::unrolled_elementwise_kernel<at::native::convert_kernel>", "elementwise"),
    ("void at::native::reduce_kernel<512, 1, at::native::ReduceOp<float, at::native::MeanOps>>", "reduction"),
    ("void at::native::(anonymous namespace)::cat_batched_copy<float, 4>", "other"),
])
def test_gpu_kernels_are_sorted_into_kinds_of_work(name, kind):
    assert results._kind(name, results._GPU_KINDS) == kind


@pytest.mark.parametrize("name, kind", [
    ("sg3lib::filtered_lrelu_fwd", "sg3lib ops"), ("aten::mkldnn_convolution", "convolution / matmul"),
    ("aten::bmm", "convolution / matmul"), ("aten::copy_", "copies / layout"),
    ("aten::as_strided", "views / allocation"), ("aten::mul", "elementwise"),
    ("aten::leaky_relu_backward", "elementwise"), ("aten::addcmul_", "other"), ("aten::sum", "reduction"),
])
def test_cpu_operators_are_sorted_into_kinds_of_work(name, kind):
    assert results._kind(name, results._CPU_KINDS) == kind


def test_tick_profiler_covers_the_second_tick_only():
    """bench_train --profile: the profiler starts when the warm-up tick ends and stops at the end of
    the measured tick; work before and after is not in it."""
    x = torch.randn(64, 64)
    tp = bench_train.TickProfiler("cpu")
    stop = tp.prof.stop  # gathering the events takes seconds at 1e5 kernels: not the tick's time
    tp.prof.stop = lambda: (time.sleep(0.5), stop())
    torch.cumsum(x, 0)                       # warm-up tick's work
    tp("snapshot", {})                       # other events change nothing
    tp("tick", {})
    torch.mm(x, x)                           # the measured tick
    tp("tick", {})
    torch.fft.fft(x)                         # after it
    tp("tick", {})
    names = {e.key for e in tp.prof.key_averages()}
    assert "aten::mm" in names
    assert not {"aten::cumsum", "aten::_fft_r2c", "aten::fft_fft"} & names
    assert 0 < tp.wall_s < 0.4, tp.wall_s
