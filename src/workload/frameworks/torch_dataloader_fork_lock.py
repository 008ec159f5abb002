"""Broken: DataLoader workers forked (the default on Linux) while a thread of the
parent holds the lock the dataset takes in __getitem__. Each worker's copy of the lock
is held by a thread it does not have: the workers block forever and the training loop
waits for their first batch.

Prints `skip: ...` and exits 77 when torch cannot be imported."""
import sys
import threading

try:
    import torch
    from torch.utils.data import DataLoader, Dataset
except Exception as e:  # noqa: BLE001 - any import failure means skip
    print("skip: import torch failed:", type(e).__name__, e, flush=True)
    sys.exit(77)

cache_lock = threading.Lock()


class Cached(Dataset):
    def __len__(self):
        return 256

    def __getitem__(self, index):
        with cache_lock:  # in a forked worker: a copy held by the parent's refresher
            return torch.full((16,), float(index))


held = threading.Event()
done = threading.Event()


def refresher():
    with cache_lock:
        held.set()
        done.wait(600)


def main():
    torch.set_num_threads(1)
    threading.Thread(target=refresher, name="cache-refresh", daemon=True).start()
    held.wait(60)
    loader = DataLoader(Cached(), batch_size=32, num_workers=2,
                        multiprocessing_context="fork")
    print("forked child DataLoader workers while cache-refresh held the lock",
          flush=True)
    for batch in loader:
        print("batch:", batch.shape, flush=True)
        break
    return 0


if __name__ == "__main__":
    sys.exit(main())
