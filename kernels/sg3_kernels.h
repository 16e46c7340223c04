// Launchers shared by the CUDA sources (*.cu) and the torch binding (sg3_binding.cpp).
// Plain pointers and sizes only, so the .cu files need no torch headers and compile fast.
// Every launcher returns the launch's cudaError_t; dtype codes: 0 = float32, 1 = float16, 2 = bfloat16.
#pragma once
#include <cstdint>
#include <cuda_runtime_api.h>

namespace sg3 {

enum DType : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2 };

// upfirdn2d on planes x[P, H, W] (P = N*C) with a correlation kernel w[fh, fw] (float32, already
// flipped and scaled by the gain): y[p, oy, ox] = sum_{ky,kx} w[ky, kx] * u[oy*dy + ky - py0, ox*dx + kx - px0],
// where u is x upsampled by inserting zeros (u[i*up] = x[i]). y has shape [P, OH, OW].
struct UpfirdnArgs {
    const void* x; void* y; const float* w;
    int in_dtype, out_dtype;
    int64_t planes; int h, w_in, oh, ow;
    int fh, fw, upx, upy, downx, downy, px0, py0;
};
cudaError_t upfirdn2d_launch(const UpfirdnArgs& a, cudaStream_t stream);

// Fused filtered_lrelu on planes [N*C, h, w] -> [N*C, oh, ow], one direction per launch:
// stage 1 upsamples by `up` with correlation kernel w1 (zero-insertion, padding p1x/p1y on the
// upsampled grid) onto the intermediate grid, of which [0, th) x [0, tw) are the real samples;
// stage 2 correlates the intermediate (zero-padded by p2x/p2y) with w2 and keeps every `down`-th sample.
// Forward (backward = 0): x + b (b per channel, may be null) -> stage 1 -> leaky ReLU * gain -> clamp
// -> stage 2; if mask is not null it receives per intermediate sample a 2-bit code, 1 (positive),
// 2 (negative) or 0 (clamped), four samples per byte along x: sample (qy, qx) of plane p is bits
// 2*(qx%4)..+1 of mask[(p*th + qy)*ceil(tw/4) + qx/4]; bytes it does not write keep their value (the
// caller zeroes the mask). Backward (backward = 1): x is dy, b null; the pointwise step multiplies
// by gain, gain * slope or 0 as mask says (0 outside the real samples). A filter w is separable (sep = 1:
// w holds fw = fh taps, applied along x and then y) or 2-D (w is [fh, fw]). in_dtype/out_dtype as above.
struct FilteredLreluArgs {
    const void* x; const void* b; void* y; uint8_t* mask;
    const float* w1; const float* w2;
    int in_dtype, out_dtype, backward;
    int n, c, h, w, th, tw, oh, ow;
    int f1h, f1w, f2h, f2w, sep1, sep2;
    int up, down, p1x, p1y, p2x, p2y;
    float gain, slope, clamp;  // clamp < 0: none
};
// Returns cudaErrorInvalidConfiguration (before launching anything) when one output's working set
// would not fit in shared memory, or the tiles could not write the mask in whole bytes; the caller
// then runs the unfused path.
cudaError_t filtered_lrelu_launch(const FilteredLreluArgs& a, cudaStream_t stream);

// bias_act, elementwise over x (numel elements) with bias b[b_size] along a dimension whose
// stride (in elements) is b_stride. mode 0: y = clamp(act(x + b) * gain);
// mode 1: y = dy * gain * act'(x + b) (0 where clamped);  mode 2: y = dy * ddx * gain * act''(x + b) (0 where clamped).
// Piecewise-linear activations (linear, relu, lrelu) can record their slope instead: mode 3 is mode 0
// that also writes a 2-bit code per element, 1 (x + b > 0), 2 (otherwise) or 0 (clamped), four
// elements per byte: element i is bits 2*(i%4)..+1 of mask[i/4] (every byte of mask[ceil(numel/4)] is
// written); mode 4: y = dy * gain * (1, alpha or 0 as mask says), reading only dy and mask (alpha is
// the negative side's slope: 1 for linear, 0 for relu).
enum Act : int { kLinear = 0, kRelu, kLrelu, kTanh, kSigmoid, kElu, kSelu, kSoftplus, kSwish };
struct BiasActArgs {
    const void* x; const void* b; const void* dy; const void* ddx; void* y; uint8_t* mask;
    int dtype, act, mode;
    int64_t numel, b_stride; int b_size;
    float alpha, gain, clamp;  // clamp < 0: none
};
cudaError_t bias_act_launch(const BiasActArgs& a, cudaStream_t stream);

}  // namespace sg3
