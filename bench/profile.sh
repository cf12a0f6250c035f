#!/usr/bin/env bash
# Instructions per command under callgrind: rmq's PUSH, FETCH, ACK against Streams' XADD,
# XREADGROUP, XACK, XDEL, on one redis-server with the module. Counts are repeatable (they do
# not depend on what else the machine is doing), so they show where a change helps.
#
#   bench/profile.sh [N] [BODY_BYTES]      (defaults: 20000 messages, 16-byte bodies)
#
# Needs valgrind (apt-get install valgrind) and a built module (make build).
set -euo pipefail
N=${1:-20000}
BODY_BYTES=${2:-16}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
MODULE=${RMQ_MODULE:-$ROOT/target/release/librmq.so}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.out" \
  redis-server --port "$PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$WORK" \
  --loadmodule "$MODULE" > "$WORK/valgrind.log" 2>&1 &
for _ in $(seq 100); do redis-cli -p "$PORT" ping >/dev/null 2>&1 && break; sleep 0.2; done

# Pipelined streams of commands over one connection. Receipts carry a random part, so the ACKs
# use the receipts the FETCHes gave.
python3 - "$PORT" "$N" "$BODY_BYTES" <<'PY'
import socket, sys
port, n, size = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
body = "x" * size
sock = socket.create_connection(("127.0.0.1", port))
buf = sock.makefile("rb")

def cmd(*a):
    return ("*%d\r\n" % len(a) + "".join("$%d\r\n%s\r\n" % (len(x), x) for x in a)).encode()

def read():
    line = buf.readline()
    kind, rest = line[:1], line[1:-2]
    if kind in (b"+", b"-", b":"):
        return rest
    if kind == b"$":
        ln = int(rest)
        if ln < 0:
            return None
        data = buf.read(ln + 2)[:-2]
        return data
    if kind == b"*":
        ln = int(rest)
        return None if ln < 0 else [read() for _ in range(ln)]
    raise ValueError(line)

def run(commands):
    sock.sendall(b"".join(commands))
    return [read() for _ in commands]

run([cmd("RMQ.PUSH", "q", body) for _ in range(n)])
receipts = []
# COMPACT, as the rmq clients ask for it: id body receipt attempt …
for reply in run([cmd("RMQ.FETCH", "q", "COMPACT") for _ in range(n)]):
    receipts.append(reply[0][2].decode())
run([cmd("RMQ.ACK", "q", r) for r in receipts])
run([cmd("XADD", "s", "%d-1" % i, "b", body) for i in range(1, n + 1)])
run([cmd("XGROUP", "CREATE", "s", "g", "0")])
run([cmd("XREADGROUP", "GROUP", "g", "c", "COUNT", "1", "STREAMS", "s", ">") for _ in range(n)])
run([cmd("XACK", "s", "g", "%d-1" % i) for i in range(1, n + 1)])
run([cmd("XDEL", "s", "%d-1" % i) for i in range(1, n + 1)])
PY
redis-cli -p "$PORT" shutdown nosave > /dev/null 2>&1 || true
wait

echo "instructions per message, $N messages of $BODY_BYTES bytes (callgrind, inclusive;"
echo "RM_Replicate: all of rmq's replicated effects of one push-fetch-ack cycle together):"
callgrind_annotate --inclusive=yes "$WORK/cg.out" 2>/dev/null \
  | grep -v "=>" \
  | grep -E "rmq::rmq_(push|fetch|ack) |xaddCommand|xreadCommand|xackCommand|xdelCommand|RM_Replicate " \
  | awk -v n="$N" '{ gsub(",", "", $1); name = $NF; for (i = 2; i <= NF; i++) if ($i ~ /::|Command|RM_/) name = $i; printf "%10.0f  %s\n", $1 / n, name }'
