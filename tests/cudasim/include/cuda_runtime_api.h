// Stand-in for the CUDA runtime header when kernels/*.cu are compiled for the CPU simulator:
// just the types and calls the kernels use. Error codes have the CUDA runtime's values.
#pragma once
#include <cstdint>

enum cudaError_t : int {
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1,
    cudaErrorInvalidConfiguration = 9,
    cudaErrorLaunchFailure = 719,
};
typedef struct CUstream_st* cudaStream_t;

cudaError_t cudaGetLastError();
const char* cudaGetErrorString(cudaError_t err);
