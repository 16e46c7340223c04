// Small device helpers shared by the kernels: float16 / bfloat16 <-> float32 loads and stores.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cstdint>

namespace sg3 {

// dtype: 0 float32, 1 float16, 2 bfloat16 (sg3_kernels.h); the arithmetic is float32 throughout.
__device__ __forceinline__ float load_as_float(const void* p, int64_t i, int dtype) {
    if (dtype == 0) return static_cast<const float*>(p)[i];
    if (dtype == 1) return __half2float(static_cast<const __half*>(p)[i]);
    return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
}

__device__ __forceinline__ void store_from_float(void* p, int64_t i, int dtype, float v) {
    if (dtype == 0) static_cast<float*>(p)[i] = v;
    else if (dtype == 1) static_cast<__half*>(p)[i] = __float2half_rn(v);
    else static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(v);
}

// Floor and ceiling division and non-negative modulo for possibly negative numerators (b > 0).
__device__ __forceinline__ int floor_div(int a, int b) { return (a >= 0) ? a / b : -((-a + b - 1) / b); }
__device__ __forceinline__ int pos_mod(int a, int b) { int r = a % b; return r < 0 ? r + b : r; }
__device__ __forceinline__ int ceil_div(int a, int b) { return -floor_div(-a, b); }

inline int blocks_for(int64_t n, int threads, int64_t cap = 65535LL * 8) {
    int64_t b = (n + threads - 1) / threads;
    return static_cast<int>(b < 1 ? 1 : (b > cap ? cap : b));
}

}  // namespace sg3
