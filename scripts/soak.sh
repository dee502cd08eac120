#!/usr/bin/env bash
# Soak: a benchmark, not part of CI (docs/AGENT.md, "Soak"). One agent enforces a policy
# between two workload namespaces while a load generator opens short TCP connections as
# fast as it can and sends UDP datagrams over a large set of new tuples, so that the
# session table keeps filling and cycling. Every MICROSEG_SOAK_EVERY seconds it prints the
# agent's memory, the session table's fill and the load's counts; at the end it stops the
# agent, runs --cleanup and checks that no pin, link or namespace is left.
#
#   MICROSEG_SOAK_SECONDS  how long the load runs (default 3600)
#   MICROSEG_SOAK_EVERY    seconds between two reports (default 60)
#   MICROSEG_SOAK_UDP_RATE new UDP tuples a second (default 20000: with the 60 s UDP
#                          timeout, about 1.2M sessions offered to a 1M-entry table)
#   MICROSEG_SOAK_TCP_PROCS TCP client processes (default 2)
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${MICROSEG_SOAK_SECONDS:-3600}
EVERY=${MICROSEG_SOAK_EVERY:-60}
UDP_RATE=${MICROSEG_SOAK_UDP_RATE:-20000}
TCP_PROCS=${MICROSEG_SOAK_TCP_PROCS:-2}

cargo build --release -p microseg 2> >(grep -v '^warning: microseg-dataplane@' >&2)
BIN=$PWD/target/release/microseg

P=mseg-soak-$$
NODE=$P-node
BPFFS=/sys/fs/bpf/$P
RUN=$(mktemp -d /tmp/$P.XXXX)
SOCK=$RUN/agent.sock
AGENT_PID=
PIDS=()

cleanup() {
  set +e
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  [ -n "$AGENT_PID" ] && kill "$AGENT_PID" 2>/dev/null && wait "$AGENT_PID" 2>/dev/null
  nsenter --net=/run/netns/$NODE "$BIN" agent --cleanup --bpffs "$BPFFS" 2>/dev/null
  for ns in client web node; do
    ip netns pids $P-$ns 2>/dev/null | xargs -r kill 2>/dev/null
    ip netns del $P-$ns 2>/dev/null
  done
  rm -rf "$RUN"
}
trap cleanup EXIT

in_ns() { local ns=$1; shift; ip netns exec "$P-$ns" "$@"; }

ip netns add "$NODE"
ip -n "$NODE" link add br0 type bridge
ip -n "$NODE" link set br0 up
ip -n "$NODE" link set lo up
declare -A ADDR=([client]=10 [web]=20)
for w in client web; do
  ip netns add "$P-$w"
  ip -n "$NODE" link add "veth-$w" type veth peer name eth0 netns "$P-$w"
  ip -n "$NODE" link set "veth-$w" master br0 up
  in_ns "$w" ip link set lo up
  in_ns "$w" ip addr add "10.211.0.${ADDR[$w]}/24" dev eth0
  in_ns "$w" ip link set eth0 up
done
in_ns client sysctl -qw net.ipv4.ip_local_port_range="1024 65000" net.ipv4.tcp_tw_reuse=1

mkdir -p "$RUN/policy"
for w in client web; do
  cat >>"$RUN/policy/workloads.yaml" <<EOF
apiVersion: microseg.io/v1
kind: Workload
metadata: {name: $w, labels: {app: $w}}
spec: {interface: veth-$w, ips: [10.211.0.${ADDR[$w]}]}
---
EOF
done
cat >"$RUN/policy/policy.yaml" <<'EOF'
apiVersion: microseg.io/v1
kind: Policy
metadata: {name: web-ingress}
spec:
  selector: {matchLabels: {app: web}}
  ingress:
    - action: allow
      from: [{selector: {matchLabels: {app: client}}}]
      ports: [{protocol: TCP, port: 8080}, {protocol: UDP, port: 10000, endPort: 59999}]
EOF

nsenter --net=/run/netns/$NODE "$BIN" agent --policy "$RUN/policy" --bpffs "$BPFFS" \
  --state-dir "$RUN" --socket "$SOCK" --node soak --metrics 127.0.0.1:9970 2>"$RUN/agent.log" &
AGENT_PID=$!
for _ in $(seq 300); do
  "$BIN" stats --socket "$SOCK" >/dev/null 2>&1 && break
  sleep 0.1
done
"$BIN" stats --socket "$SOCK" >/dev/null

# The load: an asyncio echo server in web; in client, TCP processes (connect, 8 bytes
# there and back, close) and one UDP sender over 50,000 destination ports from 32 sockets
# (1.6M tuples).
cat >"$RUN/load.py" <<'EOF'
import asyncio, os, socket, sys, time
role, out = sys.argv[1], sys.argv[2]
WEB = "10.211.0.20"

def report(fields):
    tmp = out + ".tmp"
    with open(tmp, "w") as f:
        f.write(" ".join(f"{k}={v}" for k, v in fields.items()) + "\n")
    os.replace(tmp, out)

if role == "server":
    async def echo(r, w):
        try:
            w.write(await r.readexactly(8)); await w.drain()
        except Exception:
            pass
        w.close()
    async def main():
        s = await asyncio.start_server(echo, "0.0.0.0", 8080, backlog=4096, reuse_address=True)
        await s.serve_forever()
    asyncio.run(main())
elif role == "tcp":
    ok = failed = 0
    last = time.monotonic()
    while True:
        try:
            s = socket.create_connection((WEB, 8080), timeout=3)
            s.sendall(b"soak1234")
            got = b""
            while len(got) < 8:
                chunk = s.recv(8 - len(got))
                if not chunk:
                    raise OSError("closed")
                got += chunk
            s.close()
            ok += 1
        except OSError:
            failed += 1
        if time.monotonic() - last > 1:
            report({"tcp_ok": ok, "tcp_failed": failed}); last = time.monotonic()
elif role == "udp":
    rate = int(sys.argv[3])
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(32)]
    sent, port, start, last = 0, 10000, time.monotonic(), time.monotonic()
    while True:
        for s in socks:
            try:
                s.sendto(b"soak", (WEB, port))
                sent += 1
            except OSError:
                pass
        port = 10000 if port >= 59999 else port + 1
        ahead = sent / rate - (time.monotonic() - start)
        if ahead > 0:
            time.sleep(ahead)
        if time.monotonic() - last > 1:
            report({"udp_sent": sent}); last = time.monotonic()
EOF
in_ns web python3 "$RUN/load.py" server "$RUN/server.count" & PIDS+=($!)
sleep 1
for i in $(seq "$TCP_PROCS"); do
  in_ns client python3 "$RUN/load.py" tcp "$RUN/tcp$i.count" & PIDS+=($!)
done
in_ns client python3 "$RUN/load.py" udp "$RUN/udp.count" "$UDP_RATE" & PIDS+=($!)

# Each report reads what is there; a missing count is 0 or "?", never the end of the run.
# `stats` walks the whole table: once a report.
legs_created() { "$BIN" stats --socket "$SOCK" -o json | python3 -c "import json,sys; s = json.load(sys.stdin); print(s['sessions'], s['sessions_created'])" || echo '? ?'; }
# Entries in the table (a connection between two workloads of the node is one entry with
# two legs; `stats` counts legs): the agent's gauge (docs/METRICS.md).
entries() { in_ns node curl -s --max-time 10 http://127.0.0.1:9970/metrics | awk '$1 == "microseg_sessions" {print $2}' || echo '?'; }
kb() { awk -v k="$1:" '$1 == k {print $2}' /proc/$AGENT_PID/status; }
tcp_total() { { cat "$RUN"/tcp*.count 2>/dev/null || true; } | tr ' ' '\n' | awk -F= -v k="$1" '$1 == k {s += $2} END {print s + 0}'; }
udp_total() { awk -F= '{print $2}' "$RUN/udp.count" 2>/dev/null || echo 0; }
sleep 2
MAX=$(bpftool -j map show pinned "$BPFFS/maps/MSEG_SESSIONS" | python3 -c 'import json,sys; print(json.load(sys.stdin)["max_entries"])')

echo "soak: ${DURATION}s, a report every ${EVERY}s; session table of $MAX entries; UDP $UDP_RATE tuples/s, $TCP_PROCS TCP processes"
printf '%8s %10s %10s %10s %7s %10s %12s %10s %10s %7s %10s\n' \
  elapsed rss_kb hwm_kb entries fill% legs created tcp_ok tcp_failed tcp/s udp_sent
START=$(date +%s)
LAST_OK=0 LAST_T=$START
FIRST_RSS= LAST_RSS=
while :; do
  NOW=$(date +%s)
  ELAPSED=$((NOW - START))
  ENTRIES=$(entries)
  read -r LEGS CREATED <<<"$(legs_created)"
  OK=$(tcp_total tcp_ok)
  RSS=$(kb VmRSS)
  FIRST_RSS=${FIRST_RSS:-$RSS}
  LAST_RSS=$RSS
  printf '%8s %10s %10s %10s %7s %10s %12s %10s %10s %7s %10s\n' "$ELAPSED" "$RSS" "$(kb VmHWM)" \
    "$ENTRIES" "$(awk -v s="$ENTRIES" -v m="$MAX" 'BEGIN {printf "%.1f", 100 * s / m}')" \
    "$LEGS" "$CREATED" "$OK" "$(tcp_total tcp_failed)" \
    "$(( (OK - LAST_OK) / (NOW - LAST_T > 0 ? NOW - LAST_T : 1) ))" "$(udp_total)"
  LAST_OK=$OK LAST_T=$NOW
  [ "$ELAPSED" -ge "$DURATION" ] && break
  sleep $(( EVERY < DURATION - ELAPSED ? EVERY : DURATION - ELAPSED ))
done
echo "agent RSS: ${FIRST_RSS} kB at the first report, ${LAST_RSS} kB at the last"
grep -E ' (ERROR|WARN) ' "$RUN/agent.log" | head -5 || true

# What the agent holds, by kernel id: the pinned links, their programs, the pinned maps.
ids() {
  local f
  for f in $(find "$BPFFS/links" -type f 2>/dev/null); do
    bpftool -j link show pinned "$f" | python3 -c 'import json,sys; l = json.load(sys.stdin); print("link", l["id"]); print("prog", l["prog_id"])'
  done
  for f in $(find "$BPFFS/maps" -type f 2>/dev/null); do
    bpftool -j map show pinned "$f" | python3 -c 'import json,sys; print("map", json.load(sys.stdin)["id"])'
  done
}
HELD=$(ids | sort -u)

# The end: the agent stops, --cleanup removes everything, nothing may be left: no pin, and
# none of the links, programs and maps it held (by id; the kernel frees them shortly after:
# 30 s allowed).
for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
PIDS=()
kill "$AGENT_PID" && wait "$AGENT_PID" || true
AGENT_PID=
nsenter --net=/run/netns/$NODE "$BIN" agent --cleanup --bpffs "$BPFFS"
LEFT=0
if [ -e "$BPFFS" ]; then
  echo "LEAK: pins left under $BPFFS:"; find "$BPFFS" | head; LEFT=1
fi
alive() { while read -r kind id; do if bpftool "$kind" show id "$id" >/dev/null 2>&1; then echo "$kind $id"; fi; done <<<"$HELD"; }
for _ in $(seq 300); do
  STILL=$(alive)
  [ -z "$STILL" ] && break
  sleep 0.1
done
if [ -n "$STILL" ]; then
  echo "LEAK: still in the kernel after --cleanup:"; echo "$STILL"; LEFT=1
fi
[ "$LEFT" = 0 ] && echo "cleanup: no pins left; the $(grep -c ^link <<<"$HELD") links, $(grep -c ^prog <<<"$HELD") programs and $(grep -c ^map <<<"$HELD") maps the agent held are gone"
exit "$LEFT"
