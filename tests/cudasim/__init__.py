"""The CUDA kernels in kernels/*.cu, compiled for the CPU and run by a small simulator (sim.cpp).

Tests the real kernel sources, not a port: the same index arithmetic, tiling, shared memory and
barriers, on a machine without a GPU. Each .cu file is compiled with g++ after two textual
rewrites (`kernel<<<grid, block, shmem, stream>>>(args)` becomes a call to the simulator's launch,
`extern __shared__ T s[]` a pointer to the block's simulated shared memory), with stand-ins for
cuda_runtime_api.h and cuda_fp16.h (include/). The launchers declared in kernels/sg3_kernels.h
and their argument structs are read from that header, so the ctypes side follows it by itself.

`SimulatedExt` mirrors kernels/sg3_binding.cpp (shapes, argument checks, output allocation) on CPU
tensors and can stand in for the compiled extension in sg3lib.ops._cuda. On every call it adds
what compute-sanitizer's memcheck would see on a GPU: inputs are copied into buffers with NaN
guard bands (an out-of-bounds read poisons the output), outputs start as NaN (an unwritten output
stays NaN) inside sentinel guard bands (checked after the call: out-of-bounds writes).
`reverse=True` runs the blocks, and each block's threads, in the opposite order (see sim.cpp: races).
"""
import ctypes
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
KERNELS = HERE.parents[1] / "kernels"
_GUARD = 64  # elements of guard band on each side of every buffer

# ---------------------------------------------------------------------------------------------
# Building


def compiler():
    return shutil.which("g++") or shutil.which("c++")


def _rewrite(source, name):
    """CUDA launch and shared-memory syntax -> calls into the simulator (see the module docstring)."""
    launch = re.compile(r"([A-Za-z_]\w*)\s*<<<(.+?)>>>\s*\((.*?)\)\s*;", re.S)
    out = launch.sub(lambda m: f"cudasim::launch([&] {{ {m[1]}({m[3]}); }}, {m[2]});", source)
    out = re.sub(r"extern\s+__shared__\s+(?:__align__\(\d+\)\s+)?([\w:]+)\s+(\w+)\s*\[\s*\]\s*;",
                 r"\1* \2 = static_cast<\1*>(cudasim::dynamic_shared());", out)
    if "__shared__" in out or "<<<" in out:
        raise NotImplementedError(f"{name}: the CPU simulator supports only dynamic shared memory "
                                  "(extern __shared__ T s[]) and <<<...>>> launches on one line")
    for intrinsic in ("__shfl", "__ballot", "__any_sync", "__all_sync", "atomic", "__syncwarp"):
        if intrinsic in out:
            raise NotImplementedError(f"{name}: the CPU simulator does not support {intrinsic}")
    return out


def launchers(header):
    """[(launcher name, argument struct name)] declared in a kernels header."""
    return re.findall(r"cudaError_t\s+(\w+_launch)\s*\(\s*const\s+(\w+)\s*&", header)


def _api_source(header_name, header):
    lines = [f'#include "{header_name}"', "#include <cstddef>"]
    for fn, st in launchers(header):
        lines.append(f'extern "C" int cudasim_{fn}(const sg3::{st}* a) {{ return sg3::{fn}(*a, nullptr); }}')
        lines.append(f'extern "C" size_t cudasim_sizeof_{st}() {{ return sizeof(sg3::{st}); }}')
    return "\n".join(lines) + "\n"


def build(sources=None, header=None, cache=None):
    """Compile kernel sources (default kernels/*.cu) with the simulator into a shared library; returns
    its path. Cached by content hash; concurrent builders (xdist workers) rename atomically."""
    sources = sorted(KERNELS.glob("*.cu")) if sources is None else [Path(s) for s in sources]
    header = Path(header or KERNELS / "sg3_kernels.h")
    cxx = compiler()
    if cxx is None:
        raise FileNotFoundError("no C++ compiler (g++) for the CUDA simulator")
    inc_dirs = [HERE / "include", header.parent, KERNELS]
    h = hashlib.sha256(cxx.encode())
    for p in [*sources, header, HERE / "sim.cpp", Path(__file__), *sorted((HERE / "include").iterdir()),
              *sorted(KERNELS.glob("*.h")), *sorted(KERNELS.glob("*.cuh"))]:
        h.update(p.name.encode() + p.read_bytes())
    cache = Path(cache or os.environ.get("SG3LIB_CACHE") or Path(tempfile.gettempdir()) / "sg3lib-cudasim")
    lib = cache / f"cudasim-{h.hexdigest()[:16]}.so"
    if lib.exists():
        return lib
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        tmp = Path(tmp)
        units = [HERE / "sim.cpp"]
        for src in sources:
            unit = tmp / (src.stem + ".cpp")
            unit.write_text(_rewrite(src.read_text(), src.name))
            units.append(unit)
        (tmp / "api.cpp").write_text(_api_source(header.name, header.read_text()))
        units.append(tmp / "api.cpp")
        out = tmp / "lib.so"
        cmd = [cxx, "-std=c++20", "-O2", "-g", "-shared", "-fPIC", "-include", "cudasim.h",
               *[f"-I{d}" for d in inc_dirs], *map(str, units), "-o", str(out)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            raise RuntimeError(f"building the CUDA simulator failed:\n{' '.join(cmd)}\n{proc.stderr[-4000:]}")
        os.replace(out, lib)
    return lib


# ---------------------------------------------------------------------------------------------
# Argument structs, read from the header

_CTYPES = {"int": ctypes.c_int, "int64_t": ctypes.c_int64, "float": ctypes.c_float, "double": ctypes.c_double,
           "bool": ctypes.c_bool, "size_t": ctypes.c_size_t}


def struct_fields(header, name):
    """ctypes fields of `struct name { ... };` in the header: scalars of _CTYPES and pointers."""
    text = re.sub(r"//[^\n]*", "", header)
    m = re.search(r"struct\s+" + name + r"\s*\{(.*?)\};", text, re.S)
    if m is None:
        raise ValueError(f"struct {name} not found in the kernels header")
    fields = []
    for decl in filter(None, (d.strip() for d in m[1].split(";"))):
        dm = re.fullmatch(r"((?:const\s+)?\w+)\s*(\*?)\s*(.*)", decl, re.S)
        base, star, names = dm[1], dm[2], dm[3]
        for nm in (n.strip() for n in names.split(",")):
            ptr = star or nm.startswith("*")
            nm = nm.lstrip("*").strip()
            if ptr:
                fields.append((nm, ctypes.c_void_p))
            elif base in _CTYPES:
                fields.append((nm, _CTYPES[base]))
            else:
                raise ValueError(f"struct {name}: field type {base!r} of {nm} is not supported")
    return fields


class Kernels:
    """The compiled launchers: kernels.<launcher>(**fields) fills the struct and launches."""

    def __init__(self, lib_path, header=None):
        self.lib = ctypes.CDLL(str(lib_path))
        text = Path(header or KERNELS / "sg3_kernels.h").read_text()
        self.structs = {}
        for fn, st in launchers(text):
            cls = type(st, (ctypes.Structure,), {"_fields_": struct_fields(text, st)})
            size = getattr(self.lib, f"cudasim_sizeof_{st}")
            size.restype = ctypes.c_size_t
            if size() != ctypes.sizeof(cls):
                raise RuntimeError(f"struct {st}: ctypes layout {ctypes.sizeof(cls)} B != C++ {size()} B")
            self.structs[fn] = cls
        self.lib.cudasim_message.restype = ctypes.c_char_p

    def __call__(self, launcher, reverse=False, **fields):
        args = self.structs[launcher](**fields)
        self.lib.cudasim_clear()
        self.lib.cudasim_set_reverse(int(reverse))
        err = getattr(self.lib, f"cudasim_{launcher}")(ctypes.byref(args))
        return err, self.lib.cudasim_message().decode()


_LOADED = {}


def load(**build_kw):
    """The compiled kernels, built (or found in the cache) once per process and set of sources."""
    key = tuple(sorted((k, str(v)) for k, v in build_kw.items()))
    if key not in _LOADED:
        _LOADED[key] = Kernels(build(**build_kw), build_kw.get("header"))
    return _LOADED[key]


# ---------------------------------------------------------------------------------------------
# Guarded buffers


class Guarded:
    """A flat CPU buffer with guard bands; .t is the tensor view the kernel sees."""

    def __init__(self, shape, dtype, fill, guard_value):
        n = 1
        for s in shape:
            n *= s
        self.buf = torch.full([n + 2 * _GUARD], guard_value, dtype=dtype)
        self.guard_value = guard_value
        self.t = self.buf[_GUARD:_GUARD + n].view(shape)
        if fill is not None:
            self.t.fill_(fill)

    @classmethod
    def copy_of(cls, x):
        """Input with NaN guards: an out-of-bounds read shows in the result."""
        g = cls(x.shape, x.dtype, None, float("nan"))
        g.t.copy_(x)
        return g

    def ptr(self):
        return self.t.data_ptr() if self.t.numel() else None

    def check(self, what):
        lo, hi = self.buf[:_GUARD], self.buf[-_GUARD:]
        if not bool((lo == self.guard_value).all() and (hi == self.guard_value).all()):
            raise RuntimeError(f"CUDA simulator: {what} written out of bounds")


_SENTINEL = -12345.0  # output guards: a value a kernel is unlikely to write


class SimulatedExt:
    """kernels/sg3_binding.cpp on CPU tensors, running the simulated kernels. `calls` counts launches."""

    def __init__(self, kernels=None, reverse=False):
        self.k = kernels or load()
        self.reverse = reverse
        self.force_unfused = False  # answer filtered_lrelu as the binding does when the filters are too large
        self.calls = {}

    def _launch(self, launcher, outputs, **fields):
        self.calls[launcher] = self.calls.get(launcher, 0) + 1
        err, msg = self.k(launcher, reverse=self.reverse, **fields)
        for name, g in outputs.items():
            g.check(f"{launcher} output {name}")
        return err, msg

    _DTYPES = [torch.float32, torch.float16, torch.bfloat16]  # the kernels' dtype codes 0, 1, 2

    @classmethod
    def _code(cls, t):
        if t.dtype not in cls._DTYPES:
            raise RuntimeError(f"sg3lib CUDA kernels support float32, float16 and bfloat16, got {t.dtype}")
        return cls._DTYPES.index(t.dtype)

    def upfirdn2d(self, x, w, upx, upy, downx, downy, px0, px1, py0, py1, out_dtype):
        assert x.dim() == 4 and w.dtype == torch.float32 and w.dim() == 2
        fh, fw = w.shape
        oh = (x.shape[2] * upy + py0 + py1 - fh) // downy + 1
        ow = (x.shape[3] * upx + px0 + px1 - fw) // downx + 1
        gx, gw = Guarded.copy_of(x.contiguous()), Guarded.copy_of(w.contiguous())
        y = Guarded([x.shape[0], x.shape[1], oh, ow], self._DTYPES[out_dtype],
                    float("nan"), _SENTINEL)
        err, msg = self._launch("upfirdn2d_launch", {"y": y}, x=gx.ptr(), y=y.ptr(), w=gw.ptr(),
                                in_dtype=self._code(x), out_dtype=out_dtype, planes=x.shape[0] * x.shape[1],
                                h=x.shape[2], w_in=x.shape[3], oh=oh, ow=ow, fh=fh, fw=fw, upx=upx, upy=upy,
                                downx=downx, downy=downy, px0=px0, py0=py0)
        if err:
            raise RuntimeError(f"sg3lib upfirdn2d kernel launch failed: {msg}")
        return y.t.clone()

    def filtered_lrelu(self, x, w1, w2, b, mask, f1h, f1w, sep1, f2h, f2w, sep2, up, down, p1x, p1y, p2x, p2y,
                       th, tw, oh, ow, gain, slope, clamp, backward, want_mask):
        if self.force_unfused:
            return [None, None]
        n, c, h, w = x.shape
        tw4 = (tw + 3) // 4  # the mask: 2 bits per sample, 4 samples per byte
        for t, fh, fw, sep in ((w1, f1h, f1w, sep1), (w2, f2h, f2w, sep2)):
            assert t.dtype == torch.float32 and (not sep or fh == fw) and t.numel() == (fw if sep else fh * fw)
        assert up >= 1 and down >= 1 and th >= 1 and tw >= 1 and oh >= 1 and ow >= 1
        if backward:
            assert not b.numel() and mask.dtype == torch.uint8 and tuple(mask.shape) == (n, c, th, tw4)
        gx, gw1, gw2 = (Guarded.copy_of(t.contiguous()) for t in (x, w1, w2))
        gb = Guarded.copy_of(b.contiguous()) if b.numel() else None
        y = Guarded([n, c, oh, ow], x.dtype, float("nan"), _SENTINEL)
        if backward:
            # A byte has no NaN: an out-of-bounds read of the mask (guard 0xff, code 3, read as slope 0)
            # would not show in dx; only writes to it are caught. The kernel gates reads by [0, th) x [0, tw).
            code = Guarded([n, c, th, tw4], torch.uint8, None, 0xff)
            code.t.copy_(mask)
        else:  # guard 0xff: four codes 3, which the kernel never writes
            code = Guarded([n, c, th, tw4], torch.uint8, 0, 0xff) if want_mask else None
        outputs = {"y": y, **({"mask": code} if code is not None else {})}  # the backward only reads it
        err, msg = self._launch("filtered_lrelu_launch", outputs, x=gx.ptr(), b=gb.ptr() if gb else None,
                                y=y.ptr(), mask=code.ptr() if code is not None else None, w1=gw1.ptr(),
                                w2=gw2.ptr(), in_dtype=self._code(x), out_dtype=self._code(y.t),
                                backward=int(backward), n=n, c=c, h=h, w=w, th=th, tw=tw, oh=oh, ow=ow, f1h=f1h,
                                f1w=f1w, f2h=f2h, f2w=f2w, sep1=int(sep1), sep2=int(sep2), up=up, down=down,
                                p1x=p1x, p1y=p1y, p2x=p2x, p2y=p2y, gain=gain, slope=slope, clamp=clamp)
        if err == 9:  # cudaErrorInvalidConfiguration: too large for the fused kernel
            return [None, None]
        if err:
            raise RuntimeError(f"sg3lib filtered_lrelu kernel launch failed: {msg}")
        if backward:
            return [y.t.clone(), torch.empty(0, dtype=torch.uint8)]
        return [y.t.clone(), code.t.clone() if code is not None else torch.empty(0, dtype=torch.uint8)]

    def _bias_act_inputs(self, x, b, dim, act, mode, alpha, gain, clamp):
        """(guarded buffers kept alive, launch fields) for x + b along dim, as the binding's bias_act_args."""
        stride = 1
        for d in range(dim + 1, x.dim()):
            stride *= x.shape[d]
        gx = Guarded.copy_of(x.contiguous())
        gb = Guarded.copy_of(b.contiguous()) if b.numel() else None
        fields = dict(x=gx.ptr(), b=gb.ptr() if gb else None, dtype=self._code(x), act=act, mode=mode,
                      numel=x.numel(), b_stride=stride, b_size=b.shape[0] if b.numel() else 1, alpha=alpha,
                      gain=gain, clamp=clamp)
        return (gx, gb), fields

    def bias_act(self, x, b, dy, ddx, dim, act, mode, alpha, gain, clamp):
        alive, fields = self._bias_act_inputs(x, b, dim, act, mode, alpha, gain, clamp)
        gdy = Guarded.copy_of(dy.contiguous()) if mode >= 1 else None
        gddx = Guarded.copy_of(ddx.contiguous()) if mode == 2 else None
        y = Guarded(list(x.shape), x.dtype, float("nan"), _SENTINEL)
        err, msg = self._launch("bias_act_launch", {"y": y}, dy=gdy.ptr() if gdy else None,
                                ddx=gddx.ptr() if gddx else None, y=y.ptr(), **fields)
        if err:
            raise RuntimeError(f"sg3lib bias_act kernel launch failed: {msg}")
        return y.t.clone()

    def bias_act_masked_fwd(self, x, b, dim, act, alpha, gain, clamp):
        assert act in (0, 1, 2), "linear, relu or lrelu only"
        alive, fields = self._bias_act_inputs(x, b, dim, act, 3, alpha, gain, clamp)
        y = Guarded(list(x.shape), x.dtype, float("nan"), _SENTINEL)
        # starts as 0xff (four codes 3, which the kernel never writes): every byte must be overwritten
        mask = Guarded([(x.numel() + 3) // 4], torch.uint8, 0xff, 0xff)
        err, msg = self._launch("bias_act_launch", {"y": y, "mask": mask}, y=y.ptr(), mask=mask.ptr(), **fields)
        if err:
            raise RuntimeError(f"sg3lib bias_act_masked_fwd kernel launch failed: {msg}")
        codes = torch.stack([(mask.t >> (2 * k)) & 3 for k in range(4)], 1)
        if bool((codes == 3).any()):
            raise RuntimeError("CUDA simulator: bias_act_masked_fwd left mask bytes unwritten")
        return [y.t.clone(), mask.t.clone()]

    def bias_act_masked_bwd(self, dy, mask, slope, gain):
        assert mask.dtype == torch.uint8 and tuple(mask.shape) == ((dy.numel() + 3) // 4,)
        gdy = Guarded.copy_of(dy.contiguous())
        gmask = Guarded(list(mask.shape), torch.uint8, None, 0xff)
        gmask.t.copy_(mask)
        dx = Guarded(list(dy.shape), dy.dtype, float("nan"), _SENTINEL)
        err, msg = self._launch("bias_act_launch", {"y": dx}, dy=gdy.ptr(), mask=gmask.ptr(), y=dx.ptr(),
                                dtype=self._code(dy), mode=4, numel=dy.numel(), b_stride=1, b_size=1,
                                alpha=slope, gain=gain, clamp=-1.0)
        if err:
            raise RuntimeError(f"sg3lib bias_act_masked_bwd kernel launch failed: {msg}")
        return dx.t.clone()
