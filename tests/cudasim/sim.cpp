// CPU simulator for the CUDA kernels: runs every thread of a block as a fiber (ucontext) on one
// OS thread, switching at __syncthreads, block after block. Checks what a GPU would not report or
// would report only under compute-sanitizer:
// - launch limits (threads per block, grid size, dynamic shared memory);
// - barrier divergence: some threads of a block wait at __syncthreads while others have exited;
// - shared memory: filled with NaN bytes before each block (a read of an unwritten word poisons
//   the result), with guard bands around it checked after each block (out-of-bounds writes);
// - races: threads run in ascending or, on request, descending order between barriers, and blocks
//   in ascending or descending order, so a result that depends on the order (a shared-memory race,
//   or blocks writing different values to the same global word) differs between the two runs.
#include <ucontext.h>

#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "cudasim.h"

namespace cudasim {

uint3 thread_idx, block_idx;
dim3 block_dim, grid_dim;

namespace {

constexpr size_t kStackBytes = 256 * 1024;
constexpr size_t kMaxShared = 48 * 1024;  // the default dynamic shared memory limit per block
constexpr size_t kGuardBytes = 4096;
constexpr unsigned char kGuard = 0xA5, kPoison = 0xFF;  // 0xFFFF.. is a NaN as float and half

struct Fiber {
    ucontext_t ctx;
    std::unique_ptr<char[]> stack;
    bool done = false, at_barrier = false;
};

std::vector<Fiber> fibers;
ucontext_t scheduler;
int current = -1;
const std::function<void()>* body = nullptr;
std::vector<unsigned char> shared_mem;  // [guard | shared | guard]
size_t shared_size = 0;
bool reverse_order = false;
cudaError_t last_error = cudaSuccess;
std::string message;

void fail(cudaError_t err, const std::string& what) {
    if (last_error == cudaSuccess) {
        last_error = err;
        message = what;
    }
}

void fiber_main() {
    (*body)();
    fibers[current].done = true;  // returning resumes the scheduler (uc_link)
}

uint3 unflatten(unsigned i, dim3 d) { return {i % d.x, (i / d.x) % d.y, i / (d.x * d.y)}; }

bool guards_intact() {
    const unsigned char* lo = shared_mem.data();
    const unsigned char* hi = shared_mem.data() + kGuardBytes + shared_size;
    for (size_t i = 0; i < kGuardBytes; i++)
        if (lo[i] != kGuard || hi[i] != kGuard) return false;
    return true;
}

// Runs one block; false after an error (recorded with fail()).
bool run_block(unsigned nthreads) {
    std::memset(shared_mem.data() + kGuardBytes, kPoison, shared_size);
    for (unsigned t = 0; t < nthreads; t++) {
        Fiber& f = fibers[t];
        if (!f.stack) f.stack.reset(new char[kStackBytes]);
        f.done = f.at_barrier = false;
        getcontext(&f.ctx);
        f.ctx.uc_stack.ss_sp = f.stack.get();
        f.ctx.uc_stack.ss_size = kStackBytes;
        f.ctx.uc_link = &scheduler;
        makecontext(&f.ctx, fiber_main, 0);
    }
    for (;;) {  // one round: every live thread runs to its next barrier or to its end
        unsigned finished = 0, waiting = 0;
        for (unsigned k = 0; k < nthreads; k++) {
            const unsigned t = reverse_order ? nthreads - 1 - k : k;
            Fiber& f = fibers[t];
            if (f.done) { finished++; continue; }
            f.at_barrier = false;
            thread_idx = unflatten(t, block_dim);
            current = static_cast<int>(t);
            swapcontext(&scheduler, &f.ctx);
            if (f.done) finished++;
            else waiting++;
        }
        if (waiting == 0) break;
        if (finished > 0) {
            char buf[160];
            std::snprintf(buf, sizeof buf, "barrier divergence in block (%u, %u, %u): %u threads at "
                          "__syncthreads, %u exited", block_idx.x, block_idx.y, block_idx.z, waiting, finished);
            fail(cudaErrorLaunchFailure, buf);
            return false;  // the waiting fibers are abandoned; their stacks are reset next block
        }
    }
    if (!guards_intact()) {
        char buf[160];
        std::snprintf(buf, sizeof buf, "shared memory written out of bounds (%zu bytes allocated) in "
                      "block (%u, %u, %u)", shared_size, block_idx.x, block_idx.y, block_idx.z);
        fail(cudaErrorLaunchFailure, buf);
        return false;
    }
    return true;
}

}  // namespace

void syncthreads() {
    Fiber& f = fibers[current];
    f.at_barrier = true;
    swapcontext(&f.ctx, &scheduler);
}

void* dynamic_shared() { return shared_mem.data() + kGuardBytes; }

cudaError_t launch(const std::function<void()>& kernel, dim3 grid, dim3 block, size_t shared_bytes,
                   cudaStream_t) {
    const unsigned long long nthreads = 1ULL * block.x * block.y * block.z;
    if (nthreads == 0 || nthreads > 1024 || block.z > 64 || grid.x == 0 || grid.y == 0 || grid.z == 0 ||
        grid.y > 65535 || grid.z > 65535 || grid.x > 2147483647u) {
        fail(cudaErrorInvalidConfiguration, "launch configuration out of range");
        return last_error;
    }
    if (shared_bytes > kMaxShared) {
        fail(cudaErrorInvalidValue, "dynamic shared memory over 48 KB");
        return last_error;
    }
    if (fibers.size() < nthreads) fibers.resize(nthreads);
    shared_size = shared_bytes;
    shared_mem.assign(2 * kGuardBytes + shared_bytes, kGuard);
    body = &kernel;
    block_dim = block;
    grid_dim = grid;
    const unsigned long long nblocks = 1ULL * grid.x * grid.y * grid.z;
    for (unsigned long long k = 0; k < nblocks; k++) {
        const unsigned long long i = reverse_order ? nblocks - 1 - k : k;
        block_idx = {static_cast<unsigned>(i % grid.x), static_cast<unsigned>(i / grid.x % grid.y),
                     static_cast<unsigned>(i / grid.x / grid.y)};
        if (!run_block(static_cast<unsigned>(nthreads))) return last_error;
    }
    return cudaSuccess;
}

}  // namespace cudasim

cudaError_t cudaGetLastError() {
    const cudaError_t err = cudasim::last_error;
    cudasim::last_error = cudaSuccess;
    return err;
}

const char* cudaGetErrorString(cudaError_t err) {
    switch (err) {
        case cudaSuccess: return "no error";
        case cudaErrorInvalidValue: return "invalid argument";
        case cudaErrorInvalidConfiguration: return "invalid configuration argument";
        default: return "unspecified launch failure";
    }
}

// C entry points for ctypes (the launchers themselves are bound by __init__.py).
extern "C" {
void cudasim_set_reverse(int on) { cudasim::reverse_order = on != 0; }
// What went wrong in the last failed launch (kept until the next failure; "" if none yet).
const char* cudasim_message() { return cudasim::message.c_str(); }
void cudasim_clear() { cudasim::last_error = cudaSuccess; cudasim::message.clear(); }
}
