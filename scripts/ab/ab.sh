#!/bin/bash
# A/B of agent builds on one topology: client and server network namespaces routed through a
# node namespace, like microseg-compare. Per rep and per build: no filter, then the build's
# agent enforcing an allow policy; prints each build's ratios to no filter and their median.
#
#   sudo BINS="old/microseg new/microseg" [MODE=cps|tcp|cost|cost-tcp] [REPS=8] [SECS=1.5] [SESSIONS=N]
#        [TC_MODE=netlink] [KILL=1] [PAR=N] scripts/ab/ab.sh
#
# PAR=N (cps and cost) runs N connection loops at once, unpinned, and sums their rates: the
# node's capacity with both CPUs busy, where one loop leaves them idle between packets.
#
# The build "cbpf" stands for no agent and a classic-BPF `return 0` filter on the four hooks
# microseg uses, like microseg-compare's "empty tc prog"; "ebpf" for an eBPF `return 0`
# (direct action, built with llc) on the same hooks. scripts/ab/variants.sh builds variants
# of the kernel programs to compare.
#
# MODE=cost runs the connection loop with kernel.bpf_stats_enabled on and prints, per build,
# the microseg programs' run time per connection (a tail call counts toward its caller):
# far less noisy than a rate, so it shows what a kernel change saves. MODE=cost-tcp prints
# the run time per program run during one iperf3 stream (the established path).
#
# Builds take turns in the given order on odd reps and the reverse on even ones. Printed: each
# build's values and median, the agent's CPU time (all threads) during each measured cps run,
# and each build's paired difference to the first build, mean and standard error. An A/A run
# (one binary under two names, cps, 16 reps) gave medians 0.873 and 0.817 but paired
# -0.007 +- 0.033: read the paired line, not the medians.
#
# SETTLE (seconds, default 1.5) is waited after an agent is ready (its socket bound: the
# first policy enforced) and after it is removed. Before 2026-12-07 17:45 it was waited from
# the agent's start, and a load slower than that (the verifier, on a busy machine) ran into
# the measured run: about 1 s of agent CPU per 1.5 s run in section 8's and 9's first runs.
# KILL=1 kills each agent once it has attached (with TC_MODE=netlink its filters stay): the
# programs without the agent. Every loop is bounded; everything is removed on exit.
set -u
P=ab$$; DIR=$(mktemp -d); REPS=${REPS:-8}; SECS=${SECS:-1.5}; MODE=${MODE:-cps}
BINS=${BINS:?set BINS to one or more microseg binaries}
gcc -O2 -o $DIR/conn_loop "$(dirname "$0")/conn_loop.c"
cleanup() {
  [ -n "${STATS_WAS:-}" ] && sysctl -qw kernel.bpf_stats_enabled=$STATS_WAS
  [ -n "${AG:-}" ] && kill $AG 2>/dev/null
  [ -n "${SV:-}" ] && kill $SV 2>/dev/null
  [ -n "${IPERF:-}" ] && kill $IPERF 2>/dev/null
  for n in cli node srv; do ip netns del $P-$n 2>/dev/null; done
  rm -rf $DIR /sys/fs/bpf/$P
}
trap cleanup EXIT
for n in cli node srv; do ip netns add $P-$n; done
for w in cli srv; do
  ip link add veth-$w netns $P-node type veth peer name eth0 netns $P-$w
done
ip -n $P-cli addr add 10.94.1.2/24 dev eth0; ip -n $P-srv addr add 10.94.2.2/24 dev eth0
ip -n $P-node addr add 10.94.1.1/24 dev veth-cli; ip -n $P-node addr add 10.94.2.1/24 dev veth-srv
for n in cli srv; do ip -n $P-$n link set dev eth0 up; ip -n $P-$n link set dev lo up; done
for d in veth-cli veth-srv; do ip -n $P-node link set dev $d up; done
ip netns exec $P-node sysctl -qw net.ipv4.ip_forward=1
ip netns exec $P-cli sysctl -qw net.ipv4.ip_local_port_range="1024 65000" net.ipv4.tcp_tw_reuse=1
ip -n $P-cli route add default via 10.94.1.1; ip -n $P-srv route add default via 10.94.2.1
# The server outlives the run: a minute per build and rep is several times what one takes.
LIFE=$(( 60 * REPS * $(echo $BINS | wc -w) + 60 ))
ip netns exec $P-srv $DIR/conn_loop server 7302 $([ "${PAR:-1}" = 1 ] && echo 1 || echo -1) $LIFE & SV=$!
ip netns exec $P-srv iperf3 -s -p 7303 -A 1 >/dev/null 2>&1 & IPERF=$!
mkdir -p $DIR/pol
cat > $DIR/pol/all.yaml <<Y
apiVersion: microseg.io/v1
kind: Workload
metadata: {name: client, labels: {app: client}}
spec: {interface: veth-cli, ips: [10.94.1.2]}
---
apiVersion: microseg.io/v1
kind: Workload
metadata: {name: server, labels: {app: server}}
spec: {interface: veth-srv, ips: [10.94.2.2]}
---
apiVersion: microseg.io/v1
kind: Policy
metadata: {name: ab}
spec:
  selector: {matchLabels: {app: server}}
  ingress:
    - action: allow
      from: [{cidr: 10.94.1.2/32}]
      ports: [{protocol: TCP, port: 7302}, {protocol: TCP, port: 7303}]
Y
sleep 0.5
if [ "$MODE" = tcp ] || [ "$MODE" = cost-tcp ]; then
  run() { ip netns exec $P-cli timeout 20 iperf3 -c 10.94.2.2 -p 7303 -t 2 -A 0,1 -J 2>/dev/null |
    python3 -c 'import json,sys; print("%.3f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9))'; }
else
  run() {
    if [ "${PAR:-1}" = 1 ]; then ip netns exec $P-cli $DIR/conn_loop client 10.94.2.2 7302 0 $SECS; return; fi
    for _ in $(seq $PAR); do ip netns exec $P-cli $DIR/conn_loop client 10.94.2.2 7302 -1 $SECS & done |
      awk '{s += $1} END {print s}'
  }
fi
# nsenter keeps this mount namespace, so the agent's pins (and TCX links) outlive it only
# until --cleanup, as in microseg-compare.
if [[ " $BINS " == *" ebpf "* ]]; then
  printf 'define i32 @pass(i8* %%c) section "classifier" {\n  ret i32 0\n}\n@_license = global [4 x i8] c"GPL\\00", section "license"\n' |
    llc -march=bpfel -filetype=obj -o $DIR/pass.o
fi
on() {
  if [ "$1" = cbpf ] || [ "$1" = ebpf ]; then
    for d in veth-cli veth-srv; do
      tc -n $P-node qdisc add dev $d clsact
      for h in ingress egress; do
        if [ "$1" = cbpf ]; then tc -n $P-node filter add dev $d $h bpf bytecode '1,6 0 0 0,'
        else tc -n $P-node filter add dev $d $h bpf da obj $DIR/pass.o sec classifier; fi
      done
    done
    return
  fi
  rm -f $DIR/sock
  nsenter --net=/run/netns/$P-node env MICROSEG_LOG=warn ${TC_MODE:+MICROSEG_TC_MODE=$TC_MODE} \
    $1 agent --policy $DIR/pol --bpffs /sys/fs/bpf/$P --socket $DIR/sock --state-dir $DIR/state \
    ${SESSIONS:+--sessions $SESSIONS} >/dev/null 2>&1 & AG=$!
  # The agent binds its socket once the first policy is enforced and attached; loading
  # (the verifier) can take seconds on a busy machine, and must not overlap the run.
  for _ in $(seq 300); do [ -S $DIR/sock ] && break; sleep 0.1; done
  sleep ${SETTLE:-1.5}
  [ "${KILL:-}" = 1 ] && { kill -9 $AG; wait $AG 2>/dev/null; AG=; }
}
off() {
  [ "$1" = cbpf ] || [ "$1" = ebpf ] && { for d in veth-cli veth-srv; do tc -n $P-node qdisc del dev $d clsact; done; return; }
  [ -n "${AG:-}" ] && { kill $AG 2>/dev/null; wait $AG 2>/dev/null; AG=; }
  nsenter --net=/run/netns/$P-node $1 agent --cleanup --bpffs /sys/fs/bpf/$P >/dev/null 2>&1
  # Builds older than 95816b7 leave classic filters of a killed agent behind.
  for d in veth-cli veth-srv; do tc -n $P-node qdisc del dev $d clsact 2>/dev/null; done
  # The kernel frees the maps (about 200 MB) after the agent exits; not during the next run.
  sleep ${SETTLE:-1.5}
}
# Sums of run_time_ns and run_cnt of this run's agent's two entry programs (names are cut
# to 15 characters): those using its pinned session table, not other runs' or tests'.
prog_stats() {
  mid=$(bpftool map show pinned /sys/fs/bpf/$P/maps/MSEG_SESSIONS -j | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  bpftool prog show -j | MID="$mid" python3 -c 'import json,sys,os
mid = int(os.environ["MID"])
ps = [p for p in json.load(sys.stdin) if mid in p.get("map_ids", []) and p.get("name","")[:15] in ("microseg_from_w","microseg_to_wor")]
print(sum(p.get("run_time_ns",0) for p in ps), sum(p.get("run_cnt",0) for p in ps))'
}
declare -A RATIOS AGENT_MS
# The builds in the given order on odd reps and reversed on even ones, so that a build's
# place in a rep (after which build, how long after the topology was made) cancels out.
order() { if [ $(($1 % 2)) = 1 ]; then echo $BINS; else echo $BINS | tr ' ' '\n' | tac; fi; }
# The agent's time on a CPU so far, all threads, in ns (empty without an agent).
agent_cpu() { [ -n "${AG:-}" ] && cat /proc/$AG/task/*/schedstat 2>/dev/null | awk '{s += $1} END {printf "%.0f\n", s}'; }
if [ "$MODE" = cost ] || [ "$MODE" = cost-tcp ]; then
  STATS_WAS=$(sysctl -n kernel.bpf_stats_enabled)
  for i in $(seq $REPS); do
    for b in $(order $i); do
      on $b
      sysctl -qw kernel.bpf_stats_enabled=1
      read t0 n0 < <(prog_stats); rate=$(run); read t1 n1 < <(prog_stats)
      sysctl -qw kernel.bpf_stats_enabled=0
      off $b
      if [ "$MODE" = cost ]; then per="$rate * $SECS"; else per="max($n1 - $n0, 1)"; fi
      RATIOS[$b]+="$(python3 -c "print('%.0f' % (($t1 - $t0) / ($per)))") "
    done
  done
  [ "$MODE" = cost ] && MODE="ns per connection" || MODE="ns per run"
else
  for i in $(seq $REPS); do
    for b in $(order $i); do
      base=$(run); on $b
      c0=$(agent_cpu); got=$(run); c1=$(agent_cpu)
      off $b
      # A failed run stays in its place as nan, so that builds stay paired rep by rep.
      RATIOS[$b]+="$(python3 -c "print('%.3f' % (${got:-0} / ${base:-0}) if ${base:-0} and ${got:-0} else 'nan')") "
      [ -n "$c0" ] && [ -n "$c1" ] && AGENT_MS[$b]+="$(( (c1 - c0) / 1000000 )) "
    done
  done
fi
for b in $BINS; do
  echo "$b ($MODE): ${RATIOS[$b]} median $(printf '%s\n' ${RATIOS[$b]} | grep -v nan | sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}')"
  [ -n "${AGENT_MS[$b]:-}" ] && echo "$b agent CPU ms per run: ${AGENT_MS[$b]}"
done
# Each build against the first, rep by rep: the mean difference and its standard error.
FIRST=${BINS%% *}
for b in $BINS; do
  [ "$b" = "$FIRST" ] && continue
  python3 -c 'import statistics as s, sys
a, b = (list(map(float, x.split())) for x in sys.argv[1:3])
d = [y - x for x, y in zip(a, b) if x == x and y == y]  # pairs without a failed run
print("%s - %s: paired %+.3f +- %.3f (n=%d)" % (sys.argv[4], sys.argv[3], s.mean(d), s.stdev(d) / len(d) ** 0.5 if len(d) > 1 else float("nan"), len(d)))' \
    "${RATIOS[$FIRST]}" "${RATIOS[$b]}" "$FIRST" "$b"
done
