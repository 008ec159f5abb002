"""Broken: fork after TensorFlow started its thread pools, while a thread holds a lock
that the child then takes. The child's copy of the lock is held by a thread that does
not exist in the child: it waits forever, and the parent waits for the child.

Prints `skip: ...` and exits 77 when TensorFlow cannot be imported."""
import os
import sys
import threading

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
try:
    import tensorflow as tf
except Exception as e:  # noqa: BLE001 - any import failure means skip
    print("skip: import tensorflow failed:", type(e).__name__, e, flush=True)
    sys.exit(77)

# A small op, so the intra- and inter-op pools are up.
x = tf.random.uniform((128, 128))
print("tf ready:", float(tf.reduce_sum(tf.matmul(x, x))) > 0, flush=True)

log_lock = threading.Lock()
held = threading.Event()
forked = threading.Event()


def flusher():
    with log_lock:
        held.set()
        forked.wait(60)


threading.Thread(target=flusher, name="log-flusher", daemon=True).start()
held.wait(60)
pid = os.fork()
if pid == 0:
    # The child: its log_lock is a copy, locked by a thread it does not have.
    log_lock.acquire()
    os._exit(0)
forked.set()
print(f"forked child {pid} while log-flusher held the lock", flush=True)
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
