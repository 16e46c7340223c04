// bias_act: bias + activation + gain + clamp, and its first and second derivatives, elementwise.
// Derivatives are written from the activations' definitions (y' and y'' in terms of s = x + b).
#include "sg3_kernels.h"
#include "sg3_common.cuh"

namespace sg3 {

struct ActOut { float y, d1, d2; };  // act(s), act'(s), act''(s)

__device__ ActOut activate(int act, float s, float alpha) {
    switch (act) {
        case kRelu: return {s <= 0.f ? 0.f : s, s > 0.f ? 1.f : 0.f, 0.f};  // NaN stays NaN, as torch.relu
        case kLrelu: return {s > 0.f ? s : s * alpha, s > 0.f ? 1.f : alpha, 0.f};
        case kTanh: { float t = tanhf(s); float d = 1.f - t * t; return {t, d, -2.f * t * d}; }
        case kSigmoid: {
            float g = 1.f / (1.f + expf(-s)); float d = g * (1.f - g);
            return {g, d, d * (1.f - 2.f * g)};
        }
        // elu/selu at s = 0, as torch: the negative side's first derivative, the positive side's second
        case kElu: {  // alpha fixed at 1, as torch.nn.functional.elu
            if (s > 0.f) return {s, 1.f, 0.f};
            float e = expf(s); return {e - 1.f, e, s < 0.f ? e : 0.f};
        }
        case kSelu: {
            const float scale = 1.0507009873554804934f, a = 1.6732632423543772848f;
            if (s > 0.f) return {scale * s, scale, 0.f};
            float e = expf(s); return {scale * a * (e - 1.f), scale * a * e, s < 0.f ? scale * a * e : 0.f};
        }
        case kSoftplus: {  // torch's softplus(beta=1, threshold=20) is linear above 20
            if (s > 20.f) return {s, 1.f, 0.f};
            float g = 1.f / (1.f + expf(-s)); return {log1pf(expf(s)), g, g * (1.f - g)};
        }
        case kSwish: {
            float g = 1.f / (1.f + expf(-s)); float d = g * (1.f - g);
            return {s * g, g + s * d, d * (2.f + s * (1.f - 2.f * g))};
        }
        default: return {s, 1.f, 0.f};  // linear
    }
}

// x + b at element i; the clamp, and whether y lies inside it (where the gradient passes, as torch.clamp).
__device__ __forceinline__ float biased_input(const BiasActArgs& a, int64_t i) {
    const float s = load_as_float(a.x, i, a.dtype);
    return a.b ? s + load_as_float(a.b, (i / a.b_stride) % a.b_size, a.dtype) : s;
}
// A NaN stays NaN, as torch.clamp (fminf/fmaxf would return the bound and hide a diverged layer).
__device__ __forceinline__ float clamp_output(const BiasActArgs& a, float y) {
    if (!(a.clamp >= 0.f)) return y;
    return y > a.clamp ? a.clamp : (y < -a.clamp ? -a.clamp : y);
}
__device__ __forceinline__ bool inside_clamp(const BiasActArgs& a, float y) {
    return !(a.clamp >= 0.f) || (y >= -a.clamp && y <= a.clamp);
}

__global__ void bias_act_kernel(BiasActArgs a) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < a.numel;
         i += (int64_t)gridDim.x * blockDim.x) {
        const ActOut r = activate(a.act, biased_input(a, i), a.alpha);
        const float y = r.y * a.gain;
        float out;
        if (a.mode == 0) {
            out = clamp_output(a, y);
        } else {
            const bool live = inside_clamp(a, y);
            const float g = load_as_float(a.dy, i, a.dtype) * a.gain;
            if (a.mode == 1) out = live ? g * r.d1 : 0.f;
            else out = live ? g * r.d2 * load_as_float(a.ddx, i, a.dtype) : 0.f;
        }
        store_from_float(a.y, i, a.dtype, out);
    }
}

// Mode 3: a thread per mask byte, i.e. per four neighbouring elements, so no two threads share a byte.
__global__ void bias_act_record_kernel(BiasActArgs a) {
    const int64_t nbytes = (a.numel + 3) / 4;
    for (int64_t j = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; j < nbytes;
         j += (int64_t)gridDim.x * blockDim.x) {
        int byte = 0;
        for (int k = 0; k < 4 && 4 * j + k < a.numel; k++) {
            const float s = biased_input(a, 4 * j + k);
            const float y = activate(a.act, s, a.alpha).y * a.gain;
            store_from_float(a.y, 4 * j + k, a.dtype, clamp_output(a, y));
            byte |= (inside_clamp(a, y) ? (s > 0.f ? 1 : 2) : 0) << (2 * k);
        }
        a.mask[j] = (uint8_t)byte;
    }
}

// Mode 4: the recorded slopes times dy; x and b are not needed.
__global__ void bias_act_replay_kernel(BiasActArgs a) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < a.numel;
         i += (int64_t)gridDim.x * blockDim.x) {
        const int code = (a.mask[i >> 2] >> (2 * (i & 3))) & 3;
        const float slope = code == 1 ? 1.f : (code == 2 ? a.alpha : 0.f);
        store_from_float(a.y, i, a.dtype, load_as_float(a.dy, i, a.dtype) * a.gain * slope);
    }
}

cudaError_t bias_act_launch(const BiasActArgs& a, cudaStream_t stream) {
    if (a.numel == 0) return cudaSuccess;
    const int threads = 256;
    if (a.mode == 3)
        bias_act_record_kernel<<<blocks_for((a.numel + 3) / 4, threads), threads, 0, stream>>>(a);
    else if (a.mode == 4)
        bias_act_replay_kernel<<<blocks_for(a.numel, threads), threads, 0, stream>>>(a);
    else
        bias_act_kernel<<<blocks_for(a.numel, threads), threads, 0, stream>>>(a);
    return cudaGetLastError();
}

}  // namespace sg3
