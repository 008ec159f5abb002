#!/bin/bash
# `tfwatch node` over 1,000 jobs: 1,000 daemonised sleeps (each a job of its own under
# init) and three Python jobs of five threads, then `tfwatch node --json --duration 30s`
# over the whole node under /usr/bin/time. Prints tfwatch's CPU and memory, the lines it
# wrote by type, its exit line's counts and the samples' lateness; then ends the
# processes it started, by pid. Usage: bash benches/node_1000_jobs.sh [BINARY]
set -u
BIN=${1:-target/debug/tfwatch}
OUT=$(mktemp -d)
TAG=300.$((RANDOM % 900 + 100))
for _ in $(seq 1000); do setsid -f sleep "$TAG"; done
for _ in 1 2 3; do
  setsid -f python3 -c 'import threading, time
for _ in range(4): threading.Thread(target=time.sleep, args=(400,), daemon=True).start()
time.sleep(400)' "tfwatch-figure-$TAG"
done
sleep 3
echo "processes on the node: $(ls /proc | grep -c '^[0-9]')"
/usr/bin/time -f "tfwatch node: %U s user, %S s system, %e s elapsed, max RSS %M KiB" \
  "$BIN" node --json --duration 30s > "$OUT/node.jsonl" 2> "$OUT/time.txt"
cat "$OUT/time.txt"
python3 - "$OUT/node.jsonl" <<'PY'
import collections, json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
print(dict(collections.Counter(l['type'] for l in lines)))
exit = [l for l in lines if l['type'] == 'exit'][0]
print({k: exit.get(k) for k in ('jobs_seen', 'jobs_not_admitted', 'jobs_short_lived',
                                'skipped_ticks', 'job_skipped_ticks', 'cpu_seconds')})
started = [l['job'] for l in lines if l['type'] == 'job-started']
print('jobs started:', len(started), 'of them started again:', len(started) - len(set(started)))
late = sorted(l['lateness_seconds'] for l in lines if l['type'] == 'sample')
print('lateness median %.3f p99 %.3f max %.3f s' % (
    late[len(late) // 2], late[int(len(late) * 0.99)], late[-1]))
PY
for dir in /proc/[0-9]*; do
  cmd=$(tr '\0' ' ' < "$dir/cmdline" 2>/dev/null)
  case "$cmd" in
    "sleep $TAG "|*"tfwatch-figure-$TAG"*) kill "${dir#/proc/}" 2>/dev/null ;;
  esac
done
rm -rf "$OUT"
