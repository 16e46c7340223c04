// upfirdn2d: zero-insertion upsampling, padding, FIR filtering and downsampling in one pass.
// One thread per output sample; only the filter taps that land on real (non-inserted) input
// samples are visited (polyphase), so upsampling costs nothing for the zeros.
#include "sg3_kernels.h"
#include "sg3_common.cuh"

namespace sg3 {

__global__ void upfirdn2d_kernel(UpfirdnArgs a) {
    const int64_t total = a.planes * a.oh * a.ow;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
         i += (int64_t)gridDim.x * blockDim.x) {
        const int ox = static_cast<int>(i % a.ow);
        const int oy = static_cast<int>((i / a.ow) % a.oh);
        const int64_t p = i / ((int64_t)a.ow * a.oh);
        const int64_t plane = p * a.h * a.w_in;
        // Upsampled-grid position of tap 0; tap k reads u[u0 + k], a real sample iff divisible by up.
        const int uy0 = oy * a.downy - a.py0;
        const int ux0 = ox * a.downx - a.px0;
        const int ky0 = pos_mod(-uy0, a.upy);
        const int kx0 = pos_mod(-ux0, a.upx);
        float acc = 0.f;
        for (int ky = ky0; ky < a.fh; ky += a.upy) {
            const int iy = (uy0 + ky) / a.upy;  // exact: uy0 + ky is a multiple of upy
            if (iy < 0) continue;
            if (iy >= a.h) break;
            const float* wrow = a.w + ky * a.fw;
            const int64_t row = plane + (int64_t)iy * a.w_in;
            for (int kx = kx0; kx < a.fw; kx += a.upx) {
                const int ix = (ux0 + kx) / a.upx;
                if (ix < 0) continue;
                if (ix >= a.w_in) break;
                acc += wrow[kx] * load_as_float(a.x, row + ix, a.in_dtype);
            }
        }
        store_from_float(a.y, i, a.out_dtype, acc);
    }
}

cudaError_t upfirdn2d_launch(const UpfirdnArgs& a, cudaStream_t stream) {
    const int64_t total = a.planes * a.oh * a.ow;
    if (total == 0) return cudaSuccess;
    const int threads = 256;
    upfirdn2d_kernel<<<blocks_for(total, threads), threads, 0, stream>>>(a);
    return cudaGetLastError();
}

}  // namespace sg3
