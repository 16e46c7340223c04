// filtered_lrelu forward, fused: bias, upsample (FIR), leaky ReLU * gain, clamp, downsample (FIR).
// Each block owns a tile of output samples of one plane. It first computes the intermediate
// (upsampled, activated) samples that tile needs into shared memory, then filters them down.
// The intermediate never goes to global memory; only a 1-byte gradient code per intermediate
// sample is stored when a backward pass will need it.
#include "sg3_kernels.h"
#include "sg3_common.cuh"

namespace sg3 {

constexpr int kThreads = 256;
constexpr int kMaxShared = 48 * 1024;  // default dynamic shared memory limit per block

__global__ void filtered_lrelu_kernel(FilteredLreluArgs a, int tile, int tiles_x) {
    extern __shared__ float s[];  // intermediate tile [tih, tiw]
    const int tih = (tile - 1) * a.down + a.fdh;
    const int tiw = (tile - 1) * a.down + a.fdw;
    const int oy0 = (blockIdx.x / tiles_x) * tile;
    const int ox0 = (blockIdx.x % tiles_x) * tile;
    const int qy0 = oy0 * a.down, qx0 = ox0 * a.down;  // intermediate origin of this tile
    const int64_t planes = (int64_t)a.n * a.c;

    for (int64_t p = blockIdx.y; p < planes; p += gridDim.y) {
        const int64_t xplane = p * a.h * a.w;
        const float bias = a.b ? load_as_float(a.b, p % a.c, a.dtype) : 0.f;

        // 1) Intermediate samples: polyphase upsampling of x + b, then the nonlinearity.
        for (int t = threadIdx.x; t < tih * tiw; t += blockDim.x) {
            const int qy = qy0 + t / tiw, qx = qx0 + t % tiw;
            const int uy0 = qy - a.py0, ux0 = qx - a.px0;
            const int jy0 = pos_mod(-uy0, a.up), jx0 = pos_mod(-ux0, a.up);
            float v = 0.f;
            for (int jy = jy0; jy < a.fuh; jy += a.up) {
                const int iy = (uy0 + jy) / a.up;
                if (iy < 0) continue;
                if (iy >= a.h) break;
                for (int jx = jx0; jx < a.fuw; jx += a.up) {
                    const int ix = (ux0 + jx) / a.up;
                    if (ix < 0) continue;
                    if (ix >= a.w) break;
                    v += a.wu[jy * a.fuw + jx] * (load_as_float(a.x, xplane + (int64_t)iy * a.w + ix, a.dtype) + bias);
                }
            }
            int8_t code = v > 0.f ? 1 : 2;
            v = (v > 0.f ? v : v * a.slope) * a.gain;
            if (a.clamp >= 0.f && (v > a.clamp || v < -a.clamp)) {
                v = fminf(fmaxf(v, -a.clamp), a.clamp);
                code = 0;
            }
            s[t] = v;
            if (a.mask && qy < a.th && qx < a.tw)
                a.mask[(p * a.th + qy) * a.tw + qx] = code;  // overlapping tiles write equal values
        }
        __syncthreads();

        // 2) Output samples: FIR filter the intermediate tile and keep every down-th sample.
        for (int t = threadIdx.x; t < tile * tile; t += blockDim.x) {
            const int ty = t / tile, tx = t % tile;
            const int oy = oy0 + ty, ox = ox0 + tx;
            if (oy >= a.oh || ox >= a.ow) continue;
            float acc = 0.f;
            for (int ky = 0; ky < a.fdh; ky++) {
                const float* srow = s + (ty * a.down + ky) * tiw + tx * a.down;
                const float* wrow = a.wd + ky * a.fdw;
                for (int kx = 0; kx < a.fdw; kx++) acc += wrow[kx] * srow[kx];
            }
            store_from_float(a.y, (p * a.oh + oy) * a.ow + ox, a.dtype, acc);
        }
        __syncthreads();  // the next plane reuses s
    }
}

cudaError_t filtered_lrelu_launch(const FilteredLreluArgs& a, cudaStream_t stream) {
    const int64_t planes = (int64_t)a.n * a.c;
    if (planes == 0 || a.oh <= 0 || a.ow <= 0) return cudaSuccess;
    // Largest square output tile (<= 16x16) whose intermediate tile fits in shared memory.
    int tile = 16;
    auto bytes = [&](int t) {
        return (size_t)((t - 1) * a.down + a.fdh) * (size_t)((t - 1) * a.down + a.fdw) * sizeof(float);
    };
    while (tile > 1 && bytes(tile) > kMaxShared) tile /= 2;
    if (bytes(tile) > kMaxShared) return cudaErrorInvalidConfiguration;
    const int tiles_x = (a.ow + tile - 1) / tile, tiles_y = (a.oh + tile - 1) / tile;
    const dim3 grid(tiles_x * tiles_y, (unsigned)(planes < 65535 ? planes : 65535));
    filtered_lrelu_kernel<<<grid, kThreads, bytes(tile), stream>>>(a, tile, tiles_x);
    return cudaGetLastError();
}

}  // namespace sg3
