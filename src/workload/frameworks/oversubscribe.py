"""One process whose framework pool is sized past the CPUs, or the seeds' fixes.

    python3 oversubscribe.py FRAMEWORK VARIANT [SECONDS]

FRAMEWORK is `torch` or `tensorflow`. VARIANT:
- `broken`: the intra-op pool is 3 × the usable CPUs (torch.set_num_threads, or
  tf.config.threading), all of them busy with matrix multiplies;
- `fixed-api`: the pool sized to the usable CPUs with the framework's call;
- `fixed-env`: the pool sized to the usable CPUs through the environment, set in
  os.environ inside the program before the import (OMP_NUM_THREADS,
  TF_NUM_INTRAOP_THREADS...);
- `workers`: one process per usable CPU (spawned), each with a pool of one thread
  (torch.set_num_threads(1) or tf.config.threading).
Prints `units/s` at the end. Prints `skip: ...` and exits 77 when the framework cannot
be imported."""
import multiprocessing
import os
import sys
import time

FRAMEWORK = sys.argv[1] if len(sys.argv) > 1 else "torch"
VARIANT = sys.argv[2] if len(sys.argv) > 2 else "broken"
SECONDS = float(sys.argv[3]) if len(sys.argv) > 3 else 8.0
USABLE = len(os.sched_getaffinity(0))


def load(pool):
    """Imports the framework with a pool of `pool` threads; returns a step function."""
    if VARIANT == "fixed-env":
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                     "TF_NUM_INTRAOP_THREADS"):
            os.environ[name] = str(pool)
        os.environ["TF_NUM_INTEROP_THREADS"] = "1"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        if FRAMEWORK == "torch":
            import torch
        else:
            import tensorflow as tf
    except Exception as e:  # noqa: BLE001 - any import failure means skip
        print(f"skip: import {FRAMEWORK} failed:", type(e).__name__, e, flush=True)
        sys.exit(77)
    if FRAMEWORK == "torch":
        if VARIANT != "fixed-env":
            torch.set_num_threads(pool)
        x = torch.rand(1024, 1024)
        return lambda: float((x @ x).sum())
    if VARIANT != "fixed-env":
        tf.config.threading.set_intra_op_parallelism_threads(pool)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    x = tf.random.uniform((1024, 1024))
    return lambda: float(tf.reduce_sum(tf.matmul(x, x)))


def work(pool, seconds):
    step = load(pool)
    step()
    print("pool ready:", pool, "thread(s)", flush=True)
    units, end = 0, time.monotonic() + seconds
    while time.monotonic() < end:
        step()
        units += 1
    return units


def worker(seconds, queue):
    queue.put(work(1, seconds))


def main():
    start = time.monotonic()
    if VARIANT == "workers":
        ctx = multiprocessing.get_context("spawn")
        queue = ctx.Queue()
        procs = [ctx.Process(target=worker, args=(SECONDS, queue)) for _ in range(USABLE)]
        for p in procs:
            p.start()
        units = sum(queue.get(timeout=600) for _ in procs)
        for p in procs:
            p.join(60)
    else:
        pool = 3 * USABLE if VARIANT == "broken" else USABLE
        units = work(pool, SECONDS)
    print(f"units/s {units / max(time.monotonic() - start, 1e-9):.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
