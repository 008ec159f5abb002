"""A torch.distributed job on the gloo backend (CPU).

Usage: torch_gloo.py MODE [WORLD]. Without RANK in the environment it is its own
launcher, "by hand": it starts WORLD ranks (default 2) of itself with RANK, LOCAL_RANK,
WORLD_SIZE, MASTER_ADDR and MASTER_PORT set, and waits for them. Under torchrun (RANK
set) it is one rank. Modes:
  mismatch   the last rank skips one all_reduce (an uneven last batch): the other ranks
             wait in all_reduce, it waits in barrier, forever
  fixed      the same loop with the fix: every rank calls every collective (the rank
             without a batch contributes zeros), then all exit 0
  straggler  the last rank sleeps in Python before the collective the others wait in
  healthy    every rank computes and all_reduces in a loop until killed
Each rank prints "ready RANK" once its process group is up. Prints `skip: ...` and
exits 77 when torch.distributed cannot be imported.
"""
import os
import socket
import subprocess
import sys
import time

SKIP = 77


def say(line):
    """One line to stdout in one write, so the ranks sharing the pipe never interleave
    within a line (print writes the text and its newline apart when unbuffered)."""
    os.write(1, (line + "\n").encode())


def launch(mode, world):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    ranks = []
    for rank in range(world):
        env = dict(os.environ, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
        ranks.append(subprocess.Popen([sys.executable, os.path.abspath(__file__), mode], env=env))
    return max(r.wait() for r in ranks)


def compute(torch, t):
    # Real work between collectives, so a healthy rank makes progress.
    x = torch.rand(256, 256)
    for _ in range(4):
        x = x @ x
        x = x / x.norm()
    return t + x.sum()


def rank_main(mode):
    try:
        import torch
        import torch.distributed as dist
    except Exception as e:  # noqa: BLE001 - any import failure means skip
        say(f"skip: import torch.distributed failed: {type(e).__name__} {e}")
        return SKIP
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    last = dist.get_world_size() - 1
    t = torch.ones(8)
    dist.all_reduce(t)
    say(f"ready {rank}")
    if mode == "mismatch":
        say(f"calling the last collectives, one skipped on rank {last}")
        if rank != last:
            dist.all_reduce(t)  # the last rank skips this one
        dist.barrier()
    elif mode == "fixed":
        for step in range(5):
            batch = t if not (rank == last and step == 4) else torch.zeros(8)
            batch = compute(torch, batch)
            dist.all_reduce(batch)  # every rank calls it, with or without a batch
        dist.barrier()
        dist.destroy_process_group()
    elif mode == "straggler":
        if rank == last:
            time.sleep(3600)  # the straggler, still "busy" elsewhere
        dist.all_reduce(t)
    elif mode == "healthy":
        while True:
            t = compute(torch, t)
            dist.all_reduce(t)
    else:
        print(f"unknown mode {mode!r}", file=sys.stderr)
        return 2
    say(f"done {rank}")
    return 0


if __name__ == "__main__":
    mode = sys.argv[1]
    if "RANK" in os.environ:
        sys.exit(rank_main(mode))
    try:
        import torch.distributed  # noqa: F401 - only whether it imports
    except Exception as e:  # noqa: BLE001
        say(f"skip: import torch.distributed failed: {type(e).__name__} {e}")
        sys.exit(SKIP)
    sys.exit(launch(mode, int(sys.argv[2]) if len(sys.argv) > 2 else 2))
