"""Fixed: the seeds' ways. Thread pools sized before TensorFlow is imported, a child
started with multiprocessing's spawn (a fresh interpreter with its own locks), a
tf.py_function callback called without the caller holding its lock, and a small Keras
training loop. Must raise nothing of severity warning or above.

Prints `skip: ...` and exits 77 when TensorFlow cannot be imported."""
import multiprocessing
import os
import sys
import threading

log_lock = threading.Lock()


def child_logs(queue):
    # A spawned child has its own, free log_lock.
    with log_lock:
        queue.put("child logged")


def main():
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                 "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
        os.environ[name] = "1"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        import numpy as np
        import tensorflow as tf
    except Exception as e:  # noqa: BLE001 - any import failure means skip
        print("skip: import tensorflow failed:", type(e).__name__, e, flush=True)
        sys.exit(77)
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)

    # A child started after the pools, with spawn: no inherited lock.
    held = threading.Event()
    done = threading.Event()

    def flusher():
        with log_lock:
            held.set()
            done.wait(60)

    thread = threading.Thread(target=flusher, name="log-flusher")
    thread.start()
    held.wait(60)
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    child = ctx.Process(target=child_logs, args=(queue,))
    child.start()
    print("spawned child:", queue.get(timeout=60), flush=True)
    child.join(60)
    done.set()
    thread.join()

    # The callback takes the lock; the caller does not hold it across the call.
    state_lock = threading.Lock()

    def callback(x):
        with state_lock:
            return x + 1.0

    @tf.function
    def step(x):
        return tf.py_function(callback, [x], tf.float32)

    print("step:", float(step(tf.constant(1.0))), flush=True)

    # A small Keras training loop on random data.
    rng = np.random.default_rng(0)
    features = rng.normal(size=(512, 16)).astype("float32")
    labels = (features.sum(axis=1, keepdims=True) > 0).astype("float32")
    model = tf.keras.Sequential([
        tf.keras.Input(shape=(16,)),
        tf.keras.layers.Dense(32, activation="relu"),
        tf.keras.layers.Dense(1, activation="sigmoid"),
    ])
    model.compile(optimizer="adam", loss="binary_crossentropy")
    history = model.fit(features, labels, epochs=3, batch_size=64, verbose=0)
    print("trained: loss", round(history.history["loss"][-1], 3), flush=True)
    return child.exitcode or 0


if __name__ == "__main__":
    sys.exit(main())
