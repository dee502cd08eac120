#!/bin/bash
# Writes OUT/microseg, a "build" for ab.sh that runs the agent binary INNER another way, so
# that ways of running one binary can be alternated in one ab.sh run:
#
#   scripts/ab/wrap.sh KIND INNER OUT
#
#   netlink     classic tc filters instead of TCX links (MICROSEG_TC_MODE=netlink)
#   killed      classic tc filters, and the agent killed once it attached: the programs
#               keep enforcing without it
#   idle        classic tc filters, and the agent moved to SCHED_IDLE once it attached
#   sessions=N  a session table of N entries (--sessions N)
#   report-start  every connection reported at its start too (--flow-report-start)
set -eu
KIND=$1; INNER=$(realpath "$2"); OUT=$3
mkdir -p "$OUT"
case $KIND in
  netlink) RUN='exec env MICROSEG_TC_MODE=netlink "$INNER" "$@"' ;;
  killed) RUN='env MICROSEG_TC_MODE=netlink "$INNER" "$@" & pid=$!; sleep 1.2; kill -9 $pid' ;;
  idle) RUN='env MICROSEG_TC_MODE=netlink "$INNER" "$@" & pid=$!
    trap '"'"'kill $pid; wait $pid; exit 0'"'"' TERM
    sleep 1.2; chrt -a -i -p 0 $pid >/dev/null; wait $pid' ;;
  sessions=*) RUN='exec "$INNER" "$@" --sessions '"${KIND#sessions=}" ;;
  report-start) RUN='exec "$INNER" "$@" --flow-report-start' ;;
  *) echo "unknown KIND $KIND" >&2; exit 2 ;;
esac
cat > "$OUT/microseg" <<W
#!/bin/bash
INNER=$INNER
# Only the agent run is changed; --cleanup and the rest go to the binary as they are.
case " \$* " in
  *" --policy "*) $RUN ;;
  *) exec "\$INNER" "\$@" ;;
esac
W
chmod +x "$OUT/microseg"
