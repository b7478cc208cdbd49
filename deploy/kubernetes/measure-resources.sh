#!/bin/bash
# The figures behind the DaemonSet's requests and limits: the installed agent, configured as the
# DaemonSet runs it (--format none, logs and traces over OTLP/gRPC), in a memory cgroup of its
# own (v1 or v2) from before it starts (so BPF maps and the ring buffer are charged to it, as
# in a pod), exporting to bench/otlp_sink.py; idle, then loopback storms from bench/storm.py,
# then with the sink gone (the export queue fills up).
#
#   sudo deploy/kubernetes/measure-resources.sh [AGENT]     (AGENT: /opt/otel-tcplife/bin/otel-tcplife)
#
# Needs root and this checkout's .venv (make setup) for the storm and the sink. Traffic is
# loopback only; the agent reports only the storm's server port (-L), so other traffic on the
# machine does not count. Prints one line per phase: agent CPU (mCPU over the phase), peak RSS,
# and the peak memory charged to its cgroup.
set -euo pipefail
AGENT=${1:-/opt/otel-tcplife/bin/otel-tcplife}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PY=$ROOT/.venv/bin/python
SECONDS_PER_RATE=${SECONDS_PER_RATE:-20}
RATES=${RATES:-"2000 5000"}
OUTAGE_RATE=${OUTAGE_RATE:-4000}
OUTAGE_SECONDS=${OUTAGE_SECONDS:-30}

if [ -d /sys/fs/cgroup/memory ]; then  # v1 memory controller
  CG=/sys/fs/cgroup/memory/otel-tcplife-measure-$$; PEAK=memory.max_usage_in_bytes
else
  CG=/sys/fs/cgroup/otel-tcplife-measure-$$; PEAK=memory.peak
fi
mkdir "$CG"
WORK=$(mktemp -d)
cleanup() {
  [ -n "${APID:-}" ] && kill "$APID" 2>/dev/null && wait "$APID" 2>/dev/null
  [ -n "${SINK_PID:-}" ] && kill "$SINK_PID" 2>/dev/null
  sleep 0.5; rmdir "$CG" 2>/dev/null; rm -rf "$WORK"
}
trap cleanup EXIT

coproc SINK { exec "$PY" "$ROOT/bench/otlp_sink.py"; }
read -r SINK_PORT <&"${SINK[0]}"
PORT=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
bash -c "echo \$\$ > $CG/cgroup.procs; exec $AGENT --format none -4 -L $PORT \
  --otlp-endpoint http://127.0.0.1:$SINK_PORT --stats-interval 0 2>$WORK/agent.err" &
APID=$!
sleep 3

ticks() { awk '{print $14 + $15}' "/proc/$APID/stat"; }
report() {  # phase, ticks before, ticks after, seconds
  local hwm cg
  hwm=$(awk '/VmHWM/{print $2}' "/proc/$APID/status")
  cg=$(cat "$CG/$PEAK")
  printf '%-32s cpu %5.1f mCPU  peak RSS %4d MiB  peak cgroup %4d MiB\n' "$1" \
    "$(awk -v a="$2" -v b="$3" -v hz="$(getconf CLK_TCK)" -v s="$4" 'BEGIN {print (b - a) * 1000 / hz / s}')" \
    $((hwm / 1024)) $((cg / 1048576))
}
storm() {  # rate, seconds
  "$PY" "$ROOT/bench/storm.py" --seconds "$2" --rate "$1" --port "$PORT" --workers 2 --servers 1 >/dev/null
}

t0=$(ticks); sleep 10; report "idle, 10 s" "$t0" "$(ticks)" 10
for rate in $RATES; do
  t0=$(ticks); storm "$rate" "$SECONDS_PER_RATE"
  report "$rate sessions/s, ${SECONDS_PER_RATE} s" "$t0" "$(ticks)" "$SECONDS_PER_RATE"
done
kill "$SINK_PID"; wait "$SINK_PID" 2>/dev/null || true; SINK_PID=
t0=$(ticks); storm "$OUTAGE_RATE" "$OUTAGE_SECONDS"
report "sink down, $OUTAGE_RATE/s, ${OUTAGE_SECONDS} s" "$t0" "$(ticks)" "$OUTAGE_SECONDS"
