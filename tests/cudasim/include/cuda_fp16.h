// Stand-in for cuda_fp16.h in the CPU simulator: __half is the compiler's IEEE binary16, whose
// float conversion rounds to nearest even, as __float2half_rn does.
#pragma once

typedef _Float16 __half;
inline float __half2float(__half h) { return static_cast<float>(h); }
inline __half __float2half_rn(float f) { return static_cast<__half>(f); }
