// Torch binding for sg3lib's CUDA kernels: checks arguments, allocates outputs, launches on the
// current CUDA stream. The autograd logic lives in sg3lib/ops/_cuda.py.
#include <torch/extension.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <tuple>

#include "sg3_kernels.h"

namespace {

int dtype_code(const torch::Tensor& t) {
    switch (t.scalar_type()) {
        case torch::kFloat32: return sg3::kFloat32;
        case torch::kFloat16: return sg3::kFloat16;
        case torch::kBFloat16: return sg3::kBFloat16;
        default: TORCH_CHECK(false, "sg3lib CUDA kernels support float32, float16 and bfloat16, got ", t.scalar_type());
    }
    return -1;
}

torch::ScalarType scalar_type(int64_t code) {
    TORCH_CHECK(code >= sg3::kFloat32 && code <= sg3::kBFloat16, "dtype code must be 0, 1 or 2, got ", code);
    return code == sg3::kFloat32 ? torch::kFloat32 : (code == sg3::kFloat16 ? torch::kFloat16 : torch::kBFloat16);
}

void check_cuda(const torch::Tensor& t, const char* name) {
    TORCH_CHECK(t.is_cuda(), name, " must be a CUDA tensor");
    TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
}

// A tensor the kernel reads beside x: on x's GPU (the launch runs there; another GPU's pointer faults).
void check_cuda(const torch::Tensor& t, const torch::Tensor& x, const char* name) {
    check_cuda(t, name);
    TORCH_CHECK(t.device() == x.device(), name, " must be on the input's device (", x.device(), "), got ",
                t.device());
}

void check_filter(const torch::Tensor& f, const torch::Tensor& x, const char* name) {
    check_cuda(f, name);
    TORCH_CHECK(f.scalar_type() == torch::kFloat32 && f.dim() == 2, name, " must be a 2-D float32 tensor");
    TORCH_CHECK(f.device() == x.device(), name, " must be on the same device as x");
}

void check_launch(cudaError_t err, const char* op) {
    TORCH_CHECK(err == cudaSuccess, "sg3lib ", op, " kernel launch failed: ", cudaGetErrorString(err));
}

// x [N, C, H, W]; w [fh, fw] float32 correlation kernel (flipped and scaled by the caller);
// out_dtype 0 = float32, 1 = float16, 2 = bfloat16 (a separable pair of passes keeps float32 in between).
torch::Tensor upfirdn2d(torch::Tensor x, torch::Tensor w, int64_t upx, int64_t upy, int64_t downx,
                        int64_t downy, int64_t px0, int64_t px1, int64_t py0, int64_t py1, int64_t out_dtype) {
    check_cuda(x, "x");
    check_filter(w, x, "filter");
    TORCH_CHECK(x.dim() == 4, "x must be [N, C, H, W]");
    TORCH_CHECK(upx >= 1 && upy >= 1 && downx >= 1 && downy >= 1, "up and down must be >= 1");
    const c10::cuda::CUDAGuard guard(x.device());
    const int64_t fh = w.size(0), fw = w.size(1);
    const int64_t oh = (x.size(2) * upy + py0 + py1 - fh) / downy + 1;
    const int64_t ow = (x.size(3) * upx + px0 + px1 - fw) / downx + 1;
    TORCH_CHECK(x.size(2) * upy + py0 + py1 - fh >= 0 && x.size(3) * upx + px0 + px1 - fw >= 0,
                "upfirdn2d output would be empty");
    auto y = torch::empty({x.size(0), x.size(1), oh, ow}, x.options().dtype(scalar_type(out_dtype)));
    sg3::UpfirdnArgs a{};
    a.x = x.data_ptr(); a.y = y.data_ptr(); a.w = w.data_ptr<float>();
    a.in_dtype = dtype_code(x); a.out_dtype = dtype_code(y);
    a.planes = x.size(0) * x.size(1); a.h = (int)x.size(2); a.w_in = (int)x.size(3);
    a.oh = (int)oh; a.ow = (int)ow; a.fh = (int)fh; a.fw = (int)fw;
    a.upx = (int)upx; a.upy = (int)upy; a.downx = (int)downx; a.downy = (int)downy;
    a.px0 = (int)px0; a.py0 = (int)py0;
    check_launch(sg3::upfirdn2d_launch(a, c10::cuda::getCurrentCUDAStream()), "upfirdn2d");
    return y;
}

// Fused filtered_lrelu, either direction (see sg3_kernels.h; the caller computes the geometry).
// w1/w2: float32, [f_h * f_w] taps (2-D, row-major) or [f_w] (separable, f_h == f_w: along x and y).
// Forward: x [N, C, h, w], b [C] or empty; returns (y [N, C, oh, ow] in x's dtype, mask uint8
// [N, C, th, ceil(tw / 4)], 2 bits per sample, or empty). Backward: x is dy, mask the forward's;
// returns (dx in dy's dtype, empty): float16 layers get float16 gradients, as from the unfused ops.
// An undefined y means the working set is too large for shared memory: the caller runs unfused passes.
std::vector<torch::Tensor> filtered_lrelu(torch::Tensor x, torch::Tensor w1, torch::Tensor w2, torch::Tensor b,
                                          torch::Tensor mask, int64_t f1h, int64_t f1w, bool sep1, int64_t f2h,
                                          int64_t f2w, bool sep2, int64_t up, int64_t down, int64_t p1x,
                                          int64_t p1y, int64_t p2x, int64_t p2y, int64_t th, int64_t tw,
                                          int64_t oh, int64_t ow, double gain, double slope, double clamp,
                                          bool backward, bool want_mask) {
    check_cuda(x, "x");
    TORCH_CHECK(x.dim() == 4, "x must be [N, C, H, W]");
    for (auto [w, fh, fw, sep, name] : {std::tuple{&w1, f1h, f1w, sep1, "w1"}, std::tuple{&w2, f2h, f2w, sep2, "w2"}}) {
        check_cuda(*w, name);
        TORCH_CHECK(w->scalar_type() == torch::kFloat32 && w->device() == x.device(), name,
                    " must be float32 on x's device");
        TORCH_CHECK(fh >= 1 && fw >= 1 && (!sep || fh == fw), name, ": bad filter size ", fh, "x", fw);
        TORCH_CHECK(w->numel() == (sep ? fw : fh * fw), name, " has ", w->numel(), " taps, expected ",
                    sep ? fw : fh * fw);
    }
    TORCH_CHECK(up >= 1 && down >= 1, "up and down must be >= 1");
    TORCH_CHECK(th >= 1 && tw >= 1 && oh >= 1 && ow >= 1, "filtered_lrelu output would be empty");
    const bool has_b = b.defined() && b.numel() > 0;
    if (has_b) {
        TORCH_CHECK(!backward, "the backward pass takes no bias");
        check_cuda(b, x, "b");
        TORCH_CHECK(b.dim() == 1 && b.size(0) == x.size(1) && b.scalar_type() == x.scalar_type(),
                    "b must be [C] with x's dtype");
    }
    if (backward) {
        check_cuda(mask, x, "mask");
        TORCH_CHECK(mask.scalar_type() == torch::kUInt8 && mask.dim() == 4 && mask.size(0) == x.size(0) &&
                    mask.size(1) == x.size(1) && mask.size(2) == th && mask.size(3) == (tw + 3) / 4,
                    "mask must be uint8 [N, C, th, ceil(tw / 4)]");
    }
    const c10::cuda::CUDAGuard guard(x.device());
    auto y = torch::empty({x.size(0), x.size(1), oh, ow}, x.options());
    torch::Tensor code;
    if (!backward && want_mask)
        code = torch::zeros({x.size(0), x.size(1), th, (tw + 3) / 4}, x.options().dtype(torch::kUInt8));
    sg3::FilteredLreluArgs a{};
    a.x = x.data_ptr(); a.b = has_b ? b.data_ptr() : nullptr; a.y = y.data_ptr();
    a.mask = backward ? mask.data_ptr<uint8_t>() : (want_mask ? code.data_ptr<uint8_t>() : nullptr);
    a.w1 = w1.data_ptr<float>(); a.w2 = w2.data_ptr<float>();
    a.in_dtype = dtype_code(x); a.out_dtype = dtype_code(y); a.backward = backward ? 1 : 0;
    a.n = (int)x.size(0); a.c = (int)x.size(1); a.h = (int)x.size(2); a.w = (int)x.size(3);
    a.th = (int)th; a.tw = (int)tw; a.oh = (int)oh; a.ow = (int)ow;
    a.f1h = (int)f1h; a.f1w = (int)f1w; a.f2h = (int)f2h; a.f2w = (int)f2w; a.sep1 = sep1; a.sep2 = sep2;
    a.up = (int)up; a.down = (int)down; a.p1x = (int)p1x; a.p1y = (int)p1y; a.p2x = (int)p2x; a.p2y = (int)p2y;
    a.gain = (float)gain; a.slope = (float)slope; a.clamp = (float)clamp;
    const cudaError_t err = sg3::filtered_lrelu_launch(a, c10::cuda::getCurrentCUDAStream());
    if (err == cudaErrorInvalidConfiguration) return {torch::Tensor(), torch::Tensor()};
    check_launch(err, "filtered_lrelu");
    return {y, code.defined() ? code : torch::empty({0}, x.options().dtype(torch::kUInt8))};
}

// bias_act's arguments from x and b (checked): x + b along dim, act, alpha, gain, clamp; y and the
// rest are the caller's.
sg3::BiasActArgs bias_act_args(const torch::Tensor& x, const torch::Tensor& b, int64_t dim, int64_t act,
                               int64_t mode, double alpha, double gain, double clamp) {
    check_cuda(x, "x");
    const bool has_b = b.defined() && b.numel() > 0;
    TORCH_CHECK(dim >= 0 && dim < x.dim(), "dim out of range");
    if (has_b) {
        check_cuda(b, x, "b");
        TORCH_CHECK(b.dim() == 1 && b.size(0) == x.size(dim) && b.scalar_type() == x.scalar_type(),
                    "b must match x's size along dim and x's dtype");
    }
    int64_t stride = 1;
    for (int64_t d = dim + 1; d < x.dim(); d++) stride *= x.size(d);
    sg3::BiasActArgs a{};
    a.x = x.data_ptr(); a.b = has_b ? b.data_ptr() : nullptr;
    a.dtype = dtype_code(x); a.act = (int)act; a.mode = (int)mode;
    a.numel = x.numel(); a.b_stride = stride; a.b_size = has_b ? (int)b.size(0) : 1;
    a.alpha = (float)alpha; a.gain = (float)gain; a.clamp = (float)clamp;
    return a;
}

// mode 0: forward; 1: first derivative times dy; 2: second derivative times dy * ddx.
torch::Tensor bias_act(torch::Tensor x, torch::Tensor b, torch::Tensor dy, torch::Tensor ddx,
                       int64_t dim, int64_t act, int64_t mode, double alpha, double gain, double clamp) {
    TORCH_CHECK(mode >= 0 && mode <= 2, "bias_act: mode 0, 1 or 2 (3 and 4 are bias_act_masked_*)");
    sg3::BiasActArgs a = bias_act_args(x, b, dim, act, mode, alpha, gain, clamp);
    if (mode >= 1) { check_cuda(dy, x, "dy"); TORCH_CHECK(dy.sizes() == x.sizes() && dy.scalar_type() == x.scalar_type(), "dy must match x"); }
    if (mode == 2) { check_cuda(ddx, x, "ddx"); TORCH_CHECK(ddx.sizes() == x.sizes() && ddx.scalar_type() == x.scalar_type(), "ddx must match x"); }
    const c10::cuda::CUDAGuard guard(x.device());
    auto y = torch::empty_like(x);
    a.dy = mode >= 1 ? dy.data_ptr() : nullptr; a.ddx = mode == 2 ? ddx.data_ptr() : nullptr;
    a.y = y.data_ptr();
    check_launch(sg3::bias_act_launch(a, c10::cuda::getCurrentCUDAStream()), "bias_act");
    return y;
}

// Piecewise-linear activations: y and the packed 2-bit slope codes (mode 3 in sg3_kernels.h).
std::vector<torch::Tensor> bias_act_masked_fwd(torch::Tensor x, torch::Tensor b, int64_t dim, int64_t act,
                                               double alpha, double gain, double clamp) {
    TORCH_CHECK(act == sg3::kLinear || act == sg3::kRelu || act == sg3::kLrelu,
                "bias_act_masked_fwd: linear, relu or lrelu only");
    sg3::BiasActArgs a = bias_act_args(x, b, dim, act, 3, alpha, gain, clamp);
    const c10::cuda::CUDAGuard guard(x.device());
    auto y = torch::empty_like(x);
    auto mask = torch::empty({(x.numel() + 3) / 4}, x.options().dtype(torch::kUInt8));
    a.y = y.data_ptr(); a.mask = mask.data_ptr<uint8_t>();
    check_launch(sg3::bias_act_launch(a, c10::cuda::getCurrentCUDAStream()), "bias_act_masked_fwd");
    return {y, mask};
}

// dx = dy * gain * the recorded slope (mode 4); slope: the negative side's.
torch::Tensor bias_act_masked_bwd(torch::Tensor dy, torch::Tensor mask, double slope, double gain) {
    check_cuda(dy, "dy");
    check_cuda(mask, dy, "mask");
    TORCH_CHECK(mask.scalar_type() == torch::kUInt8 && mask.dim() == 1 && mask.size(0) == (dy.numel() + 3) / 4,
                "mask must be the uint8 [ceil(numel/4)] codes of bias_act_masked_fwd");
    const c10::cuda::CUDAGuard guard(dy.device());
    auto dx = torch::empty_like(dy);
    sg3::BiasActArgs a{};
    a.dy = dy.data_ptr(); a.mask = mask.data_ptr<uint8_t>(); a.y = dx.data_ptr();
    a.dtype = dtype_code(dy); a.mode = 4; a.numel = dy.numel(); a.b_stride = 1; a.b_size = 1;
    a.alpha = (float)slope; a.gain = (float)gain; a.clamp = -1.f;
    check_launch(sg3::bias_act_launch(a, c10::cuda::getCurrentCUDAStream()), "bias_act_masked_bwd");
    return dx;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.def("upfirdn2d", &upfirdn2d, "upfirdn2d forward (CUDA)");
    m.def("filtered_lrelu", &filtered_lrelu, "fused filtered_lrelu, forward or backward (CUDA)");
    m.def("bias_act", &bias_act, "bias_act and its derivatives (CUDA)");
    m.def("bias_act_masked_fwd", &bias_act_masked_fwd, "bias_act recording 2-bit slope codes (CUDA)");
    m.def("bias_act_masked_bwd", &bias_act_masked_bwd, "bias_act's gradient from the slope codes (CUDA)");
}
