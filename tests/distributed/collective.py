"""A torch.distributed job on the gloo backend (CPU) for tfwatch's distributed tests.

Usage: collective.py MODE, with RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT set (by hand or
by torchrun). Modes:
  mismatch   the last rank skips one all_reduce (an uneven last batch): the other ranks
             wait in all_reduce, it waits in barrier, forever
  straggler  the last rank sleeps in Python before the collective the others wait in
  healthy    every rank computes and all_reduces in a loop until killed
  finish     a few collectives, then every rank exits 0
Each rank prints "ready RANK" once its process group is up.
"""
import os
import sys
import time

import torch
import torch.distributed as dist


def compute(t):
    # Real work between collectives, so a healthy rank makes progress.
    x = torch.rand(256, 256)
    for _ in range(4):
        x = x @ x
        x = x / x.norm()
    return t + x.sum()


def main():
    mode = sys.argv[1]
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    last = dist.get_world_size() - 1
    t = torch.ones(8)
    dist.all_reduce(t)
    print("ready", rank, flush=True)
    if mode == "mismatch":
        if rank != last:
            dist.all_reduce(t)  # the last rank skips this one
        dist.barrier()
    elif mode == "straggler":
        if rank == last:
            time.sleep(3600)  # the straggler, still "busy" elsewhere
        dist.all_reduce(t)
    elif mode == "healthy":
        while True:
            t = compute(t)
            dist.all_reduce(t)
    elif mode == "finish":
        for _ in range(5):
            t = compute(t)
            dist.all_reduce(t)
        dist.barrier()
        dist.destroy_process_group()
        print("finished", rank, flush=True)
        return
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    print("done", rank, flush=True)


main()
