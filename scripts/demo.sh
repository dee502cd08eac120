#!/usr/bin/env bash
# The microseg demo: three workloads (client, web, db), each a network namespace whose
# veth ends on a bridge in a "node" namespace, where the agent enforces
# examples/demo/*.yaml. Real TCP, UDP and ICMP traffic goes between them; then the flows
# and counters are printed. Everything it creates is removed on exit, even on failure.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
cargo build --release -p microseg 2> >(grep -v '^warning: microseg-dataplane@' >&2)
BIN=$PWD/target/release/microseg

P=mseg-demo-$$
NODE=$P-node
BPFFS=/sys/fs/bpf/$P
RUN=$(mktemp -d /tmp/$P.XXXX)
SOCK=$RUN/agent.sock
AGENT_PID=

cleanup() {
  set +e
  [ -n "$AGENT_PID" ] && kill "$AGENT_PID" 2>/dev/null && wait "$AGENT_PID" 2>/dev/null
  nsenter --net=/run/netns/$NODE "$BIN" agent --cleanup --bpffs "$BPFFS" --socket "$SOCK" 2>/dev/null
  for ns in client web db node; do
    ip netns pids $P-$ns 2>/dev/null | xargs -r kill 2>/dev/null
    ip netns del $P-$ns 2>/dev/null
  done
  rm -rf "$RUN"
}
trap cleanup EXIT

in_ns() { local ns=$1; shift; ip netns exec "$P-$ns" "$@"; }

echo "== topology: client, web and db behind a bridge in $NODE"
ip netns add "$NODE"
ip -n "$NODE" link add br0 type bridge
ip -n "$NODE" link set br0 up
ip -n "$NODE" link set lo up
declare -A ADDR=([client]=10 [web]=20 [db]=30)
for w in client web db; do
  ip netns add "$P-$w"
  ip -n "$NODE" link add "veth-$w" type veth peer name eth0 netns "$P-$w"
  ip -n "$NODE" link set "veth-$w" master br0 up
  in_ns "$w" ip link set lo up
  in_ns "$w" ip addr add "10.210.0.${ADDR[$w]}/24" dev eth0
  in_ns "$w" ip -6 addr add "fd10::${ADDR[$w]}/64" dev eth0 nodad
  in_ns "$w" ip link set eth0 up
done

echo "== starting the agent in $NODE with examples/demo"
nsenter --net=/run/netns/$NODE "$BIN" agent --policy examples/demo --bpffs "$BPFFS" \
  --state-dir "$RUN" --socket "$SOCK" --node demo-node 2>"$RUN/agent.log" &
AGENT_PID=$!
for _ in $(seq 50); do
  "$BIN" stats --socket "$SOCK" >/dev/null 2>&1 && break
  sleep 0.1
done
grep -E 'enforcing|error' "$RUN/agent.log" || true

echo "== servers: web listens on TCP 80 and UDP 53, db on TCP 5432"
in_ns web socat TCP6-LISTEN:80,ipv6only=0,fork,reuseaddr SYSTEM:'echo hello from web' 2>/dev/null &
in_ns web socat UDP6-RECVFROM:53,ipv6only=0,fork SYSTEM:'echo dns answer' 2>/dev/null &
in_ns db socat TCP6-LISTEN:5432,ipv6only=0,fork,reuseaddr SYSTEM:'echo hello from db' 2>/dev/null &
sleep 0.5

try() {
  local what=$1; shift
  if out=$("$@" 2>/dev/null) && [ -n "$out" ]; then
    printf '  %-44s PASSED   (%s)\n' "$what" "$(echo "$out" | head -1)"
  else
    printf '  %-44s BLOCKED\n' "$what"
  fi
}
tcp() { in_ns "$1" timeout 3 socat -T2 - "TCP:$2,connect-timeout=2" </dev/null; }
udp() { echo query | in_ns "$1" timeout 3 socat -T1 - "UDP:$2"; }
ping1() { in_ns "$1" ping -c1 -W1 "$2" >/dev/null && echo reply; }

echo "== traffic"
try "client -> web:80/tcp      (allowed)" tcp client 10.210.0.20:80
try "client -> web:80/tcp IPv6 (allowed)" tcp client '[fd10::20]:80'
try "client -> db:5432/tcp     (default deny)" tcp client 10.210.0.30:5432
try "web -> db:5432/tcp        (allowed)" tcp web 10.210.0.30:5432
try "db -> web:80/tcp          (default deny)" tcp db 10.210.0.20:80
try "client -> web:53/udp      (denied, prio 100)" udp client 10.210.0.20:53
try "client ping web           (logged)" ping1 client 10.210.0.20
try "client ping db            (default deny)" ping1 client 10.210.0.30
sleep 0.3

echo "== microseg flows (IPv6 multicast listener reports left out)"
"$BIN" flows --socket "$SOCK" | grep -v ' -> \[ff02::'
echo "== microseg flows --verdict deny -o json (the first three)"
"$BIN" flows --socket "$SOCK" --verdict deny -o json | grep -v '"dst_ip":"ff02::' | head -3
echo "== microseg sessions (TCP)"
"$BIN" sessions --socket "$SOCK" | grep -E '^WORKLOAD|TCP' 
echo "== microseg stats"
"$BIN" stats --socket "$SOCK"
