// Force-included before every kernel source compiled for the CPU simulator (see __init__.py).
// CUDA qualifiers become plain C++, the built-in index variables become the simulator's
// (set per simulated thread), and launches and __syncthreads go to the simulator's scheduler.
#pragma once
#include <math.h>
#include <cstddef>
#include <cstdint>
#include <functional>
#include "cuda_runtime_api.h"

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __restrict__ __restrict

struct uint3 { unsigned x, y, z; };
struct dim3 {
    unsigned x, y, z;
    dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

namespace cudasim {
extern uint3 thread_idx, block_idx;
extern dim3 block_dim, grid_dim;
void syncthreads();
void* dynamic_shared();
cudaError_t launch(const std::function<void()>& kernel, dim3 grid, dim3 block, size_t shared_bytes = 0,
                   cudaStream_t stream = nullptr);
}  // namespace cudasim

#define threadIdx cudasim::thread_idx
#define blockIdx cudasim::block_idx
#define blockDim cudasim::block_dim
#define gridDim cudasim::grid_dim
#define __syncthreads() cudasim::syncthreads()
