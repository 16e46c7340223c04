// A kernel in namespace sg3 that reads one element past the end of its buffer, on purpose.
// gpu_session.sh's `sanitize` stage runs it under compute-sanitizer with the same kernel filter
// as the kernel tests (--kernel-name kns=sg3): the tool must report the read and exit with the
// error code. If it does not, the filter did not match a kernel named like ours, and a clean
// report on the tests would show nothing. Not part of the library; built with plain nvcc.
#include <cstdio>
#include <cuda_runtime.h>

namespace sg3 {
__global__ void sanitizer_canary_reads_past_end(const float* x, float* y, int n) {
    y[0] = x[n];  // x holds n floats: x[n] is outside the allocation
}
}  // namespace sg3

int main() {
    const int n = 64;
    float *x = nullptr, *y = nullptr;
    if (cudaMalloc(&x, n * sizeof(float)) != cudaSuccess || cudaMalloc(&y, sizeof(float)) != cudaSuccess) {
        std::fprintf(stderr, "canary: cudaMalloc failed\n");
        return 2;
    }
    cudaMemset(x, 0, n * sizeof(float));
    sg3::sanitizer_canary_reads_past_end<<<1, 1>>>(x, y, n);
    cudaError_t err = cudaDeviceSynchronize();
    std::printf("canary ran: %s\n", cudaGetErrorString(err));
    cudaFree(x);
    cudaFree(y);
    return 0;
}
