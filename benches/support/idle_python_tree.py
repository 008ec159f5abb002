"""A machine's worth of idle Python processes, for `tfwatch node`'s cost.

`python3 benches/support/idle_python_tree.py N` starts N processes, each with 62
threads waiting on a `threading.Event` and its main thread in `time.sleep`, prints
"up" once every one is ready, and ends them (by pid) when its stdin closes.
"""

import subprocess
import sys
import threading
import time


def idle() -> None:
    event = threading.Event()
    for _ in range(62):
        threading.Thread(target=event.wait, daemon=True).start()
    print("ready", flush=True)
    time.sleep(3600)


def main() -> None:
    if sys.argv[1:2] == ["--idle"]:
        idle()
        return
    count = int(sys.argv[1])
    children = [
        subprocess.Popen([sys.executable, __file__, "--idle"], stdout=subprocess.PIPE)
        for _ in range(count)
    ]
    for child in children:
        child.stdout.readline()
    print("up", flush=True)
    sys.stdin.read()
    for child in children:
        child.kill()
    for child in children:
        child.wait()


if __name__ == "__main__":
    main()
