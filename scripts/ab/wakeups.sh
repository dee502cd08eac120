#!/bin/bash
# How often an idle agent wakes: the voluntary context switches of all its threads over
# 10 s, in a network namespace of its own with no interfaces and no traffic.
#
#   sudo scripts/ab/wakeups.sh path/to/microseg
#
# Everything it makes (namespace, pins, files) is removed when it ends.
set -u
BIN=$(realpath "$1"); P=wk$$; D=$(mktemp -d)
cleanup() {
  [ -n "${AG:-}" ] && { kill $AG 2>/dev/null; wait $AG 2>/dev/null; }
  ip netns del $P 2>/dev/null; rm -rf $D /sys/fs/bpf/$P
}
trap cleanup EXIT
ip netns add $P
mkdir -p $D/pol
cat > $D/pol/p.yaml <<Y
apiVersion: microseg.io/v1
kind: Policy
metadata: {name: p}
spec:
  selector: {matchLabels: {app: web}}
  ingress: [{action: allow, from: [{selector: {matchLabels: {app: client}}}]}]
Y
ip netns exec $P env MICROSEG_LOG=error $BIN agent --policy $D/pol --bpffs /sys/fs/bpf/$P \
  --socket $D/a.sock --state-dir $D --node wk --sessions 4096 & AG=$!
sleep 4
switches() { cat /proc/$AG/task/*/status 2>/dev/null | awk '/^voluntary_ctxt_switches/ {s += $2} END {print s}'; }
a=$(switches); sleep 10; b=$(switches)
echo "$BIN: $((b - a)) voluntary context switches in 10 s"
