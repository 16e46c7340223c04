// filtered_lrelu, fused, forward and backward (StyleGAN3 sec. 3.2 and its transpose).
//
// Both directions are "upsample with FIR -> pointwise -> FIR and downsample" on one plane:
//   forward:  x  -(up, fu)->   bias, leaky ReLU * gain, clamp (writes a 2-bit code) -(fd, down)-> y
//   backward: dy -(down, fd')-> times gain, gain * slope or 0 (reads the code)      -(fu', up)-> dx
// where fd', fu' are the flipped filters and the paddings those of the transposed passes. Each block
// owns a square tile of outputs of one plane. It stages the input samples the tile needs in shared
// memory (bias added, zeros outside the image), computes the intermediate tile there (separable
// filters as two 1-D passes), applies the pointwise step and filters down; the intermediate never
// goes to global memory.
#include "sg3_kernels.h"
#include "sg3_common.cuh"

namespace sg3 {

constexpr int kThreads = 256;
constexpr int kMaxShared = 48 * 1024;  // default dynamic shared memory limit per block
constexpr int kMaxTile = 32;

// Shared-memory layout of one block, from the tile side and the filter geometry.
struct Layout {
    int tile, tih, tiw, inh, inw;  // output tile; intermediate tile; staged input samples
    int w1n, w2n;                  // filter taps
    int o_w2, o_in, o_h, o_t;      // float offsets: w1 at 0, w2, input (later: vertical pass of stage 2),
    int total;                     // horizontal pass of stage 1, intermediate tile; total floats

    __host__ __device__ Layout(const FilteredLreluArgs& a, int t) : tile(t) {
        tih = (t - 1) * a.down + a.f2h;
        tiw = (t - 1) * a.down + a.f2w;
        inh = (tih + a.f1h - 2) / a.up + 1;
        inw = (tiw + a.f1w - 2) / a.up + 1;
        w1n = a.sep1 ? a.f1w : a.f1h * a.f1w;
        w2n = a.sep2 ? a.f2w : a.f2h * a.f2w;
        const int g = a.sep2 ? t * tiw : 0;  // stage 2's vertical pass, which reuses the input's space
        const int region0 = inh * inw > g ? inh * inw : g;
        o_w2 = w1n;
        o_in = o_w2 + w2n;
        o_h = o_in + region0;
        o_t = o_h + (a.sep1 ? inh * tiw : 0);
        total = o_t + tih * tiw;
    }
    __host__ __device__ size_t bytes() const { return (size_t)total * sizeof(float); }
};

__global__ void filtered_lrelu_kernel(FilteredLreluArgs a, int tile, int tiles_x) {
    extern __shared__ float smem[];
    const Layout L(a, tile);
    float* w1 = smem;
    float* w2 = smem + L.o_w2;
    float* in = smem + L.o_in;   // [inh, inw]; reused by stage 2's vertical pass as g [tile, tiw]
    float* hb = smem + L.o_h;    // [inh, tiw]
    float* tt = smem + L.o_t;    // [tih, tiw]
    const int oy0 = (blockIdx.x / tiles_x) * tile;
    const int ox0 = (blockIdx.x % tiles_x) * tile;
    const int qy0 = oy0 * a.down - a.p2y, qx0 = ox0 * a.down - a.p2x;  // intermediate tile origin
    const int iy0 = ceil_div(qy0 - a.p1y, a.up), ix0 = ceil_div(qx0 - a.p1x, a.up);  // first input sample
    const int64_t planes = (int64_t)a.n * a.c;

    for (int i = threadIdx.x; i < L.w1n; i += blockDim.x) w1[i] = a.w1[i];
    for (int i = threadIdx.x; i < L.w2n; i += blockDim.x) w2[i] = a.w2[i];

    for (int64_t p = blockIdx.y; p < planes; p += gridDim.y) {
        // 1) Input samples of this tile, bias added, zero outside the image.
        const int64_t xplane = p * a.h * a.w;
        const float bias = a.b ? load_as_float(a.b, p % a.c, a.in_dtype) : 0.f;
        for (int i = threadIdx.x; i < L.inh * L.inw; i += blockDim.x) {
            const int iy = iy0 + i / L.inw, ix = ix0 + i % L.inw;
            const bool inside = iy >= 0 && iy < a.h && ix >= 0 && ix < a.w;
            in[i] = inside ? load_as_float(a.x, xplane + (int64_t)iy * a.w + ix, a.in_dtype) + bias : 0.f;
        }
        __syncthreads();

        // 2) Stage 1: upsample by `up` (polyphase: only taps on real samples) into the intermediate tile.
        if (a.sep1) {
            const float* wx = w1;  // a separable filter: the same taps along x and y
            const float* wy = w1;
            for (int i = threadIdx.x; i < L.inh * L.tiw; i += blockDim.x) {  // along x
                const int r = i / L.tiw, c = i % L.tiw;
                const int ux = qx0 + c - a.p1x;
                float acc = 0.f;
                for (int jx = pos_mod(-ux, a.up); jx < a.f1w; jx += a.up)
                    acc += wx[jx] * in[r * L.inw + (ux + jx) / a.up - ix0];
                hb[i] = acc;
            }
            __syncthreads();
            for (int i = threadIdx.x; i < L.tih * L.tiw; i += blockDim.x) {  // along y
                const int r = i / L.tiw, c = i % L.tiw;
                const int uy = qy0 + r - a.p1y;
                float acc = 0.f;
                for (int jy = pos_mod(-uy, a.up); jy < a.f1h; jy += a.up)
                    acc += wy[jy] * hb[((uy + jy) / a.up - iy0) * L.tiw + c];
                tt[i] = acc;
            }
        } else {
            for (int i = threadIdx.x; i < L.tih * L.tiw; i += blockDim.x) {
                const int uy = qy0 + i / L.tiw - a.p1y, ux = qx0 + i % L.tiw - a.p1x;
                float acc = 0.f;
                for (int jy = pos_mod(-uy, a.up); jy < a.f1h; jy += a.up) {
                    const float* row = in + ((uy + jy) / a.up - iy0) * L.inw;
                    for (int jx = pos_mod(-ux, a.up); jx < a.f1w; jx += a.up)
                        acc += w1[jy * a.f1w + jx] * row[(ux + jx) / a.up - ix0];
                }
                tt[i] = acc;
            }
        }
        __syncthreads();

        // 3) Pointwise, on the intermediate samples [0, th) x [0, tw); outside them the backward's are 0.
        //    The mask holds 2 bits per sample, a byte per 4 neighbours along x: each thread takes one
        //    byte's samples, and the forward writes the byte only if this tile holds all of its samples
        //    that reach an output (those at qx < mw); the launcher makes sure some tile does.
        const int gx0 = floor_div(qx0, 4), ngx = floor_div(qx0 + L.tiw - 1, 4) - gx0 + 1;
        const int tw4 = (a.tw + 3) / 4;
        const int reach = (a.ow - 1) * a.down - a.p2x + a.f2w;  // samples past it reach no output
        const int mw = reach < a.tw ? reach : a.tw;
        for (int i = threadIdx.x; i < L.tih * ngx; i += blockDim.x) {
            const int r = i / ngx, gx = gx0 + i % ngx, qy = qy0 + r;
            const int64_t row = (p * a.th + qy) * tw4;
            const bool valid_row = qy >= 0 && qy < a.th;
            int byte = 0;
            bool whole = true;
            for (int k = 0; k < 4; k++) {
                const int qx = gx * 4 + k, col = qx - qx0;
                if (col < 0 || col >= L.tiw) {
                    whole = whole && (qx < 0 || qx >= mw);
                    continue;
                }
                const bool valid = valid_row && qx >= 0 && qx < a.tw;
                float v = tt[r * L.tiw + col];
                if (a.backward) {
                    const int code = valid ? (a.mask[row + gx] >> (2 * k)) & 3 : 0;
                    v *= code == 1 ? a.gain : (code == 2 ? a.gain * a.slope : 0.f);
                } else {
                    int code = v > 0.f ? 1 : 2;
                    v = (v > 0.f ? v : v * a.slope) * a.gain;
                    if (a.clamp >= 0.f && (v > a.clamp || v < -a.clamp)) {
                        v = fminf(fmaxf(v, -a.clamp), a.clamp);
                        code = 0;
                    }
                    if (valid) byte |= code << (2 * k);
                }
                tt[r * L.tiw + col] = v;
            }
            if (!a.backward && a.mask && valid_row && gx >= 0 && gx < tw4 && whole)
                a.mask[row + gx] = (uint8_t)byte;  // overlapping tiles write equal bytes
        }
        __syncthreads();

        // 4) Stage 2: FIR filter and keep every `down`-th sample.
        const int64_t yplane = p * a.oh * a.ow;
        if (a.sep2) {
            const float* wx = w2;
            const float* wy = w2;
            float* g = in;  // [tile, tiw]; the staged input is no longer needed
            for (int i = threadIdx.x; i < tile * L.tiw; i += blockDim.x) {  // along y
                const int r = i / L.tiw, c = i % L.tiw;
                const float* col = tt + r * a.down * L.tiw + c;
                float acc = 0.f;
                for (int ky = 0; ky < a.f2h; ky++) acc += wy[ky] * col[ky * L.tiw];
                g[i] = acc;
            }
            __syncthreads();
            for (int i = threadIdx.x; i < tile * tile; i += blockDim.x) {  // along x
                const int r = i / tile, c = i % tile;
                const int oy = oy0 + r, ox = ox0 + c;
                if (oy >= a.oh || ox >= a.ow) continue;
                const float* row = g + r * L.tiw + c * a.down;
                float acc = 0.f;
                for (int kx = 0; kx < a.f2w; kx++) acc += wx[kx] * row[kx];
                store_from_float(a.y, yplane + (int64_t)oy * a.ow + ox, a.out_dtype, acc);
            }
        } else {
            for (int i = threadIdx.x; i < tile * tile; i += blockDim.x) {
                const int r = i / tile, c = i % tile;
                const int oy = oy0 + r, ox = ox0 + c;
                if (oy >= a.oh || ox >= a.ow) continue;
                float acc = 0.f;
                for (int ky = 0; ky < a.f2h; ky++) {
                    const float* row = tt + (r * a.down + ky) * L.tiw + c * a.down;
                    for (int kx = 0; kx < a.f2w; kx++) acc += w2[ky * a.f2w + kx] * row[kx];
                }
                store_from_float(a.y, yplane + (int64_t)oy * a.ow + ox, a.out_dtype, acc);
            }
        }
        __syncthreads();  // the next plane reuses the shared memory
    }
}

cudaError_t filtered_lrelu_launch(const FilteredLreluArgs& a, cudaStream_t stream) {
    const int64_t planes = (int64_t)a.n * a.c;
    if (planes == 0 || a.oh <= 0 || a.ow <= 0) return cudaSuccess;
    // Largest square output tile (<= kMaxTile) whose working set fits in shared memory.
    int tile = kMaxTile;
    while (tile > 1 && Layout(a, tile).bytes() > kMaxShared) tile /= 2;
    const int side = a.oh > a.ow ? a.oh : a.ow;
    while (tile > 8 && tile / 2 >= side) tile /= 2;  // no larger than the image needs
    if (Layout(a, tile).bytes() > kMaxShared) return cudaErrorInvalidConfiguration;
    // Every mask byte whose samples reach an output must lie whole in some tile: true when neighbouring
    // tiles overlap by 3 samples or more, or all start on a multiple of 4 and abut or overlap.
    const bool overlap = a.f2w - a.down >= 3;
    const bool aligned = a.f2w >= a.down && (tile * a.down) % 4 == 0 && a.p2x % 4 == 0;
    if (a.mask && !a.backward && !overlap && !aligned) return cudaErrorInvalidConfiguration;
    const int tiles_x = (a.ow + tile - 1) / tile, tiles_y = (a.oh + tile - 1) / tile;
    const dim3 grid(tiles_x * tiles_y, (unsigned)(planes < 65535 ? planes : 65535));
    filtered_lrelu_kernel<<<grid, kThreads, Layout(a, tile).bytes(), stream>>>(a, tile, tiles_x);
    return cudaGetLastError();
}

}  // namespace sg3
