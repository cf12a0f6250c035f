#!/usr/bin/env bash
# Instructions per message under callgrind: the Lua edition's FCALL rmq_push, rmq_fetch,
# rmq_ack against the lists EVALSHA + lock scripts of the benchmark (bench/src/approaches.rs),
# on one redis-server (with the module loaded, as in `make bench`, unless RMQ_MODULE=none).
# Counts are repeatable (they do not depend on what else the machine is doing), so they show
# where a change helps. Each phase is a callgrind dump of its own; the figure is everything
# the server did in it (reading, parsing, running, replying), divided by N.
#
#   bench/profile-lua.sh [N] [BODY_BYTES] [OUT_DIR]   (defaults: 5000 messages, 16-byte bodies)
#
# OUT_DIR keeps the callgrind files (callgrind_annotate OUT_DIR/cg.out.<k> shows one phase).
# REDIS_SERVER picks another redis-server binary (one built with symbols shows more); RMQ_LUA
# another library file (e.g. an older lua/rmq.lua, to compare).
# Needs valgrind (apt-get install valgrind) and python3.
set -euo pipefail
N=${1:-5000}
BODY_BYTES=${2:-16}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
MODULE=${RMQ_MODULE:-$ROOT/target/release/librmq.so}
WORK=$(mktemp -d)
OUT=${3:-}
trap 'rm -rf "$WORK"' EXIT
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
LOAD=()
[ "$MODULE" != none ] && LOAD=(--loadmodule "$MODULE")

valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.out" \
  "${REDIS_SERVER:-redis-server}" --port "$PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$WORK" \
  "${LOAD[@]}" > "$WORK/valgrind.log" 2>&1 &
VG=$!
for _ in $(seq 300); do redis-cli -p "$PORT" ping >/dev/null 2>&1 && break; sleep 0.2; done
redis-cli -p "$PORT" -x FUNCTION LOAD REPLACE < "${RMQ_LUA:-$ROOT/lua/rmq.lua}" > /dev/null

# The scripts of bench/src/approaches.rs, read from there so that both stay the same.
python3 - "$PORT" "$N" "$BODY_BYTES" "$VG" "$ROOT/bench/src/approaches.rs" <<'PY'
import re, socket, subprocess, sys
port, n, size, vg, src = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
text = open(src).read()
scripts = {name: re.search(r'pub const SCRIPT_%s: &str = r#"(.*?)"#;' % name, text, re.S).group(1)
           for name in ("PUSH", "FETCH", "ACK")}
body = "x" * size
sock = socket.create_connection(("127.0.0.1", port))
buf = sock.makefile("rb")

def cmd(*a):
    a = [str(x) for x in a]
    return ("*%d\r\n" % len(a) + "".join("$%d\r\n%s\r\n" % (len(x.encode()), x) for x in a)).encode()

def read():
    line = buf.readline()
    kind, rest = line[:1], line[1:-2]
    if kind == b"-":
        raise RuntimeError(rest)
    if kind in (b"+", b":"):
        return rest
    if kind == b"$":
        ln = int(rest)
        return None if ln < 0 else buf.read(ln + 2)[:-2]
    if kind == b"*":
        ln = int(rest)
        return None if ln < 0 else [read() for _ in range(ln)]
    raise ValueError(line)

def run(commands, depth=64):
    out = []
    for i in range(0, len(commands), depth):
        chunk = commands[i:i + depth]
        sock.sendall(b"".join(chunk))
        out.extend(read() for _ in chunk)
    return out

def phase(name, commands):
    replies = run(commands)
    subprocess.run(["callgrind_control", "-d", name, vg], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return replies

sha = {k: run([cmd("SCRIPT", "LOAD", v)])[0].decode() for k, v in scripts.items()}
subprocess.run(["callgrind_control", "-d", "setup", vg], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

phase("fcall-push", [cmd("FCALL", "rmq_push", 1, "q", body) for _ in range(n)])
receipts = []
# COMPACT, as the rmq clients ask for it: id body receipt attempt …
for reply in phase("fcall-fetch", [cmd("FCALL", "rmq_fetch", 1, "q", "COUNT", 1, "COMPACT") for _ in range(n)]):
    receipts.append(reply[0][2].decode())
acked = phase("fcall-ack", [cmd("FCALL", "rmq_ack", 1, "q", r) for r in receipts])
assert all(a == b"1" for a in acked), "an ack failed"

L, R, P, B = "lock:{b}", "ready:{b}", "processing:{b}", "body:{b}:"
phase("evalsha-push", [cmd("EVALSHA", sha["PUSH"], 3, L, R, B + str(i), "t", i, body) for i in range(n)])
ids = [r[0].decode() for r in phase("evalsha-fetch", [cmd("EVALSHA", sha["FETCH"], 3, L, R, P, "t", B) for _ in range(n)])]
acked = phase("evalsha-ack", [cmd("EVALSHA", sha["ACK"], 3, L, P, B + i, "t", i) for i in ids])
assert all(a == b"1" for a in acked), "an evalsha ack failed"
PY
redis-cli -p "$PORT" shutdown nosave > /dev/null 2>&1 || true
wait

if [ -n "$OUT" ]; then mkdir -p "$OUT" && cp "$WORK"/cg.out* "$OUT"/; fi
echo "instructions per message, $N messages of $BODY_BYTES bytes, pipelines of 64 (callgrind, whole server):"
declare -A total
for f in "$WORK"/cg.out.*; do
  name=$(grep -m1 '^desc: Trigger:' "$f" | sed 's/^desc: Trigger: dump //')
  sum=$(grep -m1 '^summary:' "$f" | awk '{print $2}')
  total[$name]=$sum
done
for op in push fetch ack; do
  f=${total[fcall-$op]:-0}; e=${total[evalsha-$op]:-0}
  awk -v op="$op" -v f="$f" -v e="$e" -v n="$N" \
    'BEGIN { printf "%-6s FCALL %8.0f   EVALSHA %8.0f   ratio %.2f\n", op, f / n, e / n, f / e }'
done
awk -v n="$N" -v fp="${total[fcall-push]}" -v ff="${total[fcall-fetch]}" -v fa="${total[fcall-ack]}" \
  -v ep="${total[evalsha-push]}" -v ef="${total[evalsha-fetch]}" -v ea="${total[evalsha-ack]}" \
  'BEGIN { f = fp + ff + fa; e = ep + ef + ea; printf "cycle  FCALL %8.0f   EVALSHA %8.0f   ratio %.2f\n", f / n, e / n, f / e }'
