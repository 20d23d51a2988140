#!/usr/bin/env bash
# Benchmark Ferry's mover against rsync (daemon over loopback) and restic (local repository)
# on a 2 GiB dataset: ~50,000 files of 1–64 KiB (half compressible) plus two 200 MiB files.
# Passes: full copy, no-change pass, 1 %-churn pass. Prints wall time, MB/s (dataset size /
# wall), CPU cores used (user+sys of both ends / wall) and peak RSS of each end.
#
# Usage: benches/mover.sh            (env: BENCH_DIR, SMALL_FILES, BIG_FILES, FERRY)
# Needs root only for nothing; installs rsync/restic with apt-get when missing.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${BENCH_DIR:-$ROOT/target/bench}
FERRY=${FERRY:-$ROOT/target/release/ferry}
SMALL=${SMALL_FILES:-50000}
BIG=${BIG_FILES:-2}
export RESTIC_PASSWORD=bench

for tool in rsync restic; do
  command -v "$tool" >/dev/null || { apt-get update -qq && apt-get install -y -qq "$tool" >/dev/null; }
done
[ -x /usr/bin/time ] || apt-get install -y -qq time >/dev/null
[ -x "$FERRY" ] || (cd "$ROOT" && cargo build --release --bin ferry)

mkdir -p "$WORK"
SRC=$WORK/src
if [ ! -f "$WORK/src.done" ]; then
  rm -rf "$SRC"
  echo "generating dataset in $SRC ..." >&2
  python3 - "$SRC" "$SMALL" "$BIG" <<'PY'
import os, random, sys
src, small, big = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(42)
words = [b"ferry", b"volume", b"namespace", b"cluster", b"migration", b"block", b"hash", b"delta"]
for i in range(small):
    d = os.path.join(src, "small", "d%03d" % (i % 500))
    os.makedirs(d, exist_ok=True)
    n = rng.randint(1024, 64 * 1024)
    if i % 2:
        data = os.urandom(n)
    else:
        data = b" ".join(rng.choice(words) for _ in range(n // 6 + 1))[:n]
    with open(os.path.join(d, "f%05d" % i), "wb") as f:
        f.write(data)
os.makedirs(os.path.join(src, "big"), exist_ok=True)
for i in range(big):
    with open(os.path.join(src, "big", "disk%d.img" % i), "wb") as f:
        for _ in range(200):
            f.write(os.urandom(1 << 20))
PY
  touch "$WORK/src.done"
fi
SIZE=$(du -sb "$SRC" | cut -f1)
FILES=$(find "$SRC" -type f | wc -l)
echo "dataset: $FILES files, $((SIZE / 1048576)) MiB; $(uptime)" >&2

# Every pass starts from the same state, whichever tool runs first: the source in the page
# cache (a host that pages out cold memory would otherwise make the first tool read from
# disk and hand the next ones a warm cache) and no dirty data of the previous pass waiting
# to be written back (which would otherwise be flushed during the next tool's pass).
prelude() {
  sync
  find "$1" -type f -print0 | xargs -0 cat > /dev/null
}

# Destinations of earlier runs are deleted at the start (and at the end) of a run. On ext4
# without a journal the inode allocator avoids reusing an inode for up to 6 minutes after
# its deletion (60 s, plus 300 s while its inode-table block is dirty) and every file
# creation scans past such inodes: the first tool to create 50,000 files after a deletion
# of 100,000 paid several CPU-seconds for it. Wait until deletions have aged out there.
FSDEV=$(df --output=source "$WORK" | tail -1)
NOJOURNAL=
if [ "$(df --output=fstype "$WORK" | tail -1)" = ext4 ] && ! ls /proc/fs/jbd2 2>/dev/null | grep -q "^$(basename "$FSDEV")-"; then
  NOJOURNAL=1
fi
delete_old() {
  local old=()
  for d in "$WORK"/ferry-dst "$WORK"/ferry-state-* "$WORK"/rsync-dst "$WORK"/restic-repo "$WORK"/big-dst; do
    [ -e "$d" ] && old+=("$d")
  done
  [ ${#old[@]} -gt 0 ] || return 0
  rm -rf "${old[@]}"
  sync
  date +%s > "$WORK/deleted-at"
}
settle() {
  [ -n "$NOJOURNAL" ] && [ -f "$WORK/deleted-at" ] || return 0
  local left=$(( $(cat "$WORK/deleted-at") + 361 - $(date +%s) ))
  if [ "$left" -gt 0 ]; then
    echo "waiting ${left}s until ext4 (no journal) reuses the inodes deleted by the last run ..." >&2
    sleep "$left"
  fi
}

RESULTS=$WORK/results.tsv
: > "$RESULTS"
# record TOOL PASS WALL CPU_SECONDS RSS_SEND_KB RSS_RECV_KB
record() { printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >> "$RESULTS"; }
tm() { /usr/bin/time -f "%e %U %S %M" -o "$1" "${@:2}"; }
field() { awk -v n="$2" 'END{print $n}' "$1"; }

CERTS=$WORK/certs
"$FERRY" mover certs --out "$CERTS" 2>/dev/null
ferry_pass() { # PASS
  local dst=$WORK/ferry-dst ready=$WORK/ready
  rm -f "$ready"
  prelude "$SRC"
  FERRY_LOG=warn tm "$WORK/t-recv" "$FERRY" mover receive --listen 127.0.0.1:0 --dir "$dst" --certs "$CERTS" \
    --state "$WORK/ferry-state-recv" --ready-file "$ready" -o json > "$WORK/recv.json" &
  local rpid=$!
  while [ ! -s "$ready" ]; do sleep 0.05; done
  FERRY_LOG=warn tm "$WORK/t-send" "$FERRY" mover send --to "$(cat "$ready")" --dir "$SRC" --certs "$CERTS" \
    --sender-state "$WORK/ferry-state-send" -o json > "$WORK/send-$1.json"
  wait $rpid
  local wall cpu
  wall=$(field "$WORK/t-send" 1)
  cpu=$(awk '{s+=$2+$3} END{print s}' "$WORK/t-send" "$WORK/t-recv")
  record ferry "$1" "$wall" "$cpu" "$(field "$WORK/t-send" 4)" "$(field "$WORK/t-recv" 4)"
  python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print("  ferry %-9s ok=%s sent=%d skipped=%d file_bytes=%d wire_bytes=%d" % (sys.argv[2], r["ok"], r["files_sent"], r["files_skipped"], r["file_bytes_sent"], r["wire_bytes_sent"]))' "$WORK/send-$1.json" "$1" >&2
}

rsync_pass() { # PASS
  local RSYNC_PORT=$((20000 + RANDOM % 20000))
  local dst=$WORK/rsync-dst
  mkdir -p "$dst"
  cat > "$WORK/rsyncd.conf" <<CONF
use chroot = no
pid file = $WORK/rsyncd.pid
uid = root
gid = root
[bench]
path = $dst
read only = no
CONF
  rm -f "$WORK/rsyncd.pid"
  tm "$WORK/t-rsyncd" rsync --daemon --no-detach --address=127.0.0.1 --port=$RSYNC_PORT --config="$WORK/rsyncd.conf" &
  local dpid=$!
  for _ in $(seq 200); do [ -s "$WORK/rsyncd.pid" ] && break; sleep 0.05; done
  [ -s "$WORK/rsyncd.pid" ] || { echo "rsync daemon did not start: $(cat "$WORK/t-rsyncd")" >&2; exit 1; }
  prelude "$SRC"
  tm "$WORK/t-rsync" rsync -aHS --delete --numeric-ids "$SRC/" "rsync://127.0.0.1:$RSYNC_PORT/bench/"
  sleep 0.2 # let the daemon reap its per-connection child so its CPU is counted
  kill -TERM "$(cat "$WORK/rsyncd.pid")" 2>/dev/null || true
  wait $dpid 2>/dev/null || true
  local cpu
  cpu=$(awk '/^[0-9]/{s+=$2+$3} END{print s}' "$WORK/t-rsync" "$WORK/t-rsyncd")
  record rsync "$1" "$(field "$WORK/t-rsync" 1)" "$cpu" "$(field "$WORK/t-rsync" 4)" "$(awk '/^[0-9]/{m=$4} END{print m}' "$WORK/t-rsyncd")"
}

restic_pass() { # PASS
  local repo=$WORK/restic-repo
  [ -f "$repo/config" ] || restic init --repo "$repo" -q
  prelude "$SRC"
  tm "$WORK/t-restic" restic --repo "$repo" backup -q "$SRC"
  record restic "$1" "$(field "$WORK/t-restic" 1)" "$(awk '{print $2+$3}' "$WORK/t-restic" | tail -1)" "$(field "$WORK/t-restic" 4)" "-"
}

churn() { # rewrite ~1 % of the data: 1 % of the small files and 4 MiB inside one big file
  python3 - "$SRC" "$SMALL" <<'PY'
import os, random, sys
src, small = sys.argv[1], int(sys.argv[2])
rng = random.Random(7)
for i in rng.sample(range(small), small // 100):
    p = os.path.join(src, "small", "d%03d" % (i % 500), "f%05d" % i)
    n = os.path.getsize(p)
    with open(p, "wb") as f:
        f.write(os.urandom(n))
p = os.path.join(src, "big", "disk0.img")
if os.path.exists(p):
    with open(p, "r+b") as f:
        f.seek(100 << 20)
        f.write(os.urandom(4 << 20))
PY
}

delete_old
settle
for pass in full no-change; do
  echo "pass: $pass" >&2
  ferry_pass "$pass"; rsync_pass "$pass"; restic_pass "$pass"
done
churn
echo "pass: churn-1%" >&2
ferry_pass churn-1%; rsync_pass churn-1%; restic_pass churn-1%

echo "after passes: $(uptime)" >&2
# Large files only: Ferry's write rate on 200 MiB files into a fresh directory, and with sync.
if [ "$BIG" -gt 0 ]; then
  rm -rf "$WORK/big-dst"
  BIGSIZE=$(du -sb "$SRC/big" | cut -f1)
  prelude "$SRC/big"
  tm "$WORK/t-big" bash -c "FERRY_LOG=warn '$FERRY' mover copy '$SRC/big' '$WORK/big-dst' >/dev/null && sync"
  record ferry large-files+sync "$(field "$WORK/t-big" 1)" "$(awk '{print $2+$3}' "$WORK/t-big")" "$(field "$WORK/t-big" 4)" "-"
  # The disk's sequential write rate for comparison: seconds for 2 GiB, flushed.
  sync
  DD=$(dd if=/dev/zero of="$WORK/ddtest" bs=1M count=2048 conv=fdatasync 2>&1 | awk '/copied/{print $(NF-3)}')
  rm -f "$WORK/ddtest"
fi
delete_old

echo
python3 - "$RESULTS" "$SIZE" "${BIGSIZE:-0}" "${DD:-0}" <<'PY'
import sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
size = int(sys.argv[2])
big = None
print("%-7s %-17s %8s %9s %6s %12s %12s %s" % ("tool", "pass", "wall s", "MB/s", "cores", "RSS send MiB", "RSS recv MiB", "vs rsync"))
walls = {(r[0], r[1]): float(r[2]) for r in rows}
for tool, p, wall, cpu, rs, rr in rows:
    w = float(wall)
    mb = (size if p != "large-files+sync" else int(sys.argv[3])) / 1e6 / w
    ratio = walls.get(("rsync", p))
    kb = lambda v: "-" if v in ("-", "") else "%.1f" % (int(v) / 1024)
    print("%-7s %-17s %8.2f %9.1f %6.2f %12s %12s %s" % (tool, p, w, mb, float(cpu) / w, kb(rs), kb(rr), ("%.2fx" % (w / ratio)) if ratio else ""))
if float(sys.argv[4] or 0) > 0:
    dd = 2048 * 1048576 / 1e6 / float(sys.argv[4])
    big = [r for r in rows if r[1] == "large-files+sync"]
    if big:
        mb = int(sys.argv[3]) / 1e6 / float(big[0][2])
        print("disk sequential write (dd 2 GiB, fdatasync): %.1f MB/s; ferry large files + sync: %.1f MB/s = %.0f %%" % (dd, mb, 100 * mb / dd))
PY
