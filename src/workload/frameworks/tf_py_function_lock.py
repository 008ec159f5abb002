"""Broken: a tf.function whose tf.py_function callback waits on a threading.Lock that
its caller holds while it calls the function: the call never returns.

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

state_lock = threading.Lock()


def callback(x):
    with state_lock:  # held by the caller of step(): waits forever
        return x + 1.0


@tf.function
def step(x):
    return tf.py_function(callback, [x], tf.float32)


print("calling step() while holding state_lock", flush=True)
with state_lock:
    print("step:", float(step(tf.constant(1.0))), flush=True)
