"""Broken: fork after torch started its intra-op pool (torch.set_num_threads and a
matmul), while a thread holds a lock that the child then takes: the child waits
forever on a lock whose owner does not exist in it, and the parent waits for the child.

Prints `skip: ...` and exits 77 when torch cannot be imported."""
import os
import sys
import threading

try:
    import torch
except Exception as e:  # noqa: BLE001 - any import failure means skip
    print("skip: import torch failed:", type(e).__name__, e, flush=True)
    sys.exit(77)

torch.set_num_threads(2)
x = torch.rand(256, 256)
print("torch ready:", float((x @ x).sum()) > 0, flush=True)

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
    log_lock.acquire()
    os._exit(0)
forked.set()
print(f"forked child {pid} while log-flusher held the lock", flush=True)
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
