"""Starts WORLD ranks of collective.py by hand (RANK, WORLD_SIZE, MASTER_ADDR and
MASTER_PORT in each one's environment) and waits for them: the "launcher" tfwatch
attaches to. Usage: launch.py WORLD PORT MODE."""
import os
import subprocess
import sys

world, port, mode = int(sys.argv[1]), sys.argv[2], sys.argv[3]
here = os.path.dirname(os.path.abspath(__file__))
ranks = []
for rank in range(world):
    env = dict(os.environ, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
               MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
    ranks.append(subprocess.Popen([sys.executable, os.path.join(here, "collective.py"), mode], env=env))
codes = [r.wait() for r in ranks]
sys.exit(max(codes))
