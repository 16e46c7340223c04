"""Devices, and multi-process training with PyTorch's own engine (torchrun): NCCL on GPUs, gloo on CPU.

Each process (rank) takes an equal slice of the global batch; gradients are summed with one
all_reduce per optimizer step (losses are already scaled by 1/global batch, so the sum is the
global mean). Only rank 0 writes files.
"""
import os
import signal
import threading
import time

import torch
import torch.distributed as dist


def to_device(t, device):
    """CPU tensor t on `device`. To a GPU through pinned memory, without waiting: a copy from pageable
    memory synchronises the stream, so the host could not queue the next work ahead of the GPU."""
    device = torch.device(device)
    if device.type != "cuda" or t.device.type != "cpu":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


def init(device=None):
    """Join the process group started by torchrun (if any). Returns (rank, world_size, device)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = f"cuda:{local}" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda" and world > 1 and device.index is not None and device.index != local:
        raise ValueError(f"--device {device} under torchrun would put every process on GPU {device.index} "
                         "(NCCL refuses two processes on one GPU); give --device cuda: each process takes its "
                         "own GPU (LOCAL_RANK), and CUDA_VISIBLE_DEVICES chooses which GPUs")
    if device.type == "cuda" and device.index is None:  # 'cuda': this process's GPU (set_device needs an index)
        device = torch.device("cuda", local)
    if device.type == "cuda" and device.index >= torch.cuda.device_count():
        raise ValueError(f"process {rank} (LOCAL_RANK {local}) needs GPU {device.index}, but torch sees "
                         f"{torch.cuda.device_count()} GPU(s) (CUDA_VISIBLE_DEVICES="
                         f"{os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}): start at most that many processes "
                         "per machine (torchrun --nproc_per_node)")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        _end_with_launcher()
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return rank, world, device


def _end_with_launcher():
    """torchrun starts each rank in a session of its own, so a kill of torchrun's process group
    (SIGKILL, a closed terminal) would leave the ranks training on, writing snapshots next to the
    run that resumes them. Linux ends a rank with its parent; elsewhere a thread watches for it."""
    parent = os.getppid()
    try:
        import ctypes
        if ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL)) != 0:  # PR_SET_PDEATHSIG
            raise OSError("prctl failed")
    except Exception:  # not Linux
        threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
        return
    if os.getppid() != parent:  # the launcher ended before the kernel watched it
        os._exit(1)


def _watch_parent(parent):
    while os.getppid() == parent:
        time.sleep(1)
    os._exit(1)


def world_size():
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def all_reduce_sum(t):
    """Sum `t` over ranks (in place where possible); returns the summed tensor."""
    if world_size() > 1:
        if dist.get_backend() == "nccl" and t.device.type != "cuda":
            u = t.cuda()
            dist.all_reduce(u, op=dist.ReduceOp.SUM)
            t.copy_(u.cpu())
        else:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def first_failed_rank(failed):
    """The lowest rank whose `failed` is true, or None. A collective: every rank calls it once
    after its setup, whether that worked or not, so that a rank that failed alone does not leave
    the others waiting in their first collective."""
    world = world_size()
    if world == 1:
        return 0 if failed else None
    t = torch.tensor([dist.get_rank() if failed else world], dtype=torch.int64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    first = int(t.item())
    return None if first == world else first


def broadcast_module(module):
    """Make every rank start from rank 0's parameters and buffers."""
    if world_size() > 1:
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, src=0)


def barrier():
    if world_size() > 1:
        dist.barrier()


def cleanup():
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def average_buffers(module):
    """Average floating-point buffers over ranks (running statistics such as w_avg and
    StyleGAN3's magnitude EMA are updated from each rank's own images)."""
    if world_size() > 1:
        bufs = [b for b in module.buffers() if b.is_floating_point()]
        if bufs:
            flat = torch.cat([b.detach().flatten().float() for b in bufs])
            all_reduce_sum(flat)
            flat /= world_size()
            i = 0
            for b in bufs:
                b.copy_(flat[i:i + b.numel()].view_as(b))
                i += b.numel()
