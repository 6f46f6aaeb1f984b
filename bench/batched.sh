#!/usr/bin/env bash
# Batched webhook ingest: the gateway next to the durable limit, in events per second, when
# every request carries EVENTS message events (as Meta sends them when it batches).
#
# Starts the durable limit server (the limit server from the bench kit with --durable: it checks
# the signature, appends the body to a log and fdatasyncs it, group-committed, before its 200)
# and, if GATEWAY_CMD is set, the gateway. Then bench/batchload drives each in turn with the
# same closed-loop load, interleaved (durable, gateway, durable, gateway, ...) ROUNDS times, in
# two CPU layouts:
#   unpinned  every process may use every core
#   pinned    servers on CPU $SERVER_CPU, batchload on CPU $LOADER_CPU (taskset)
# and prints per layout: events/s (median of the rounds and [min-max]), x durable (the ratio to
# the durable run of the same round, median over the rounds), the server's CPU time per event
# (user + system, from /proc; median), p99 latency and failed requests. On a noisy machine the
# CPU per event moves less than the rates do.
#
# Environment:
#   LIMIT_SERVER  path to a built limit-server binary (required)
#   GATEWAY_CMD   command that starts the gateway, e.g.
#                 'target/release/omni-gateway sandbox --serve 127.0.0.1:18480 --rocketchat-down';
#                 it runs from the repository root with TMPDIR set to this run's scratch folder,
#                 so its store sits on the same filesystem as the durable log
#   GATEWAY_URL   its webhook URL, e.g. http://127.0.0.1:18480/webhooks/messenger
#   EVENTS=10 CONNS=32 DURATION=10 ROUNDS=3 WARMUP=2 LAYOUTS="unpinned pinned"
#   SERVER_CPU=0 LOADER_CPU=1 SECRET=bench-secret KEEP=0 (1 keeps the scratch folder)
# Needs cargo, python3 and taskset. Kills only what it started, by pid.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
LIMIT_SERVER=${LIMIT_SERVER:-} GATEWAY_CMD=${GATEWAY_CMD:-} GATEWAY_URL=${GATEWAY_URL:-}
EVENTS=${EVENTS:-10} CONNS=${CONNS:-32} DURATION=${DURATION:-10} ROUNDS=${ROUNDS:-3}
WARMUP=${WARMUP:-2} LAYOUTS=${LAYOUTS:-"unpinned pinned"} SERVER_CPU=${SERVER_CPU:-0}
LOADER_CPU=${LOADER_CPU:-1} SECRET=${SECRET:-bench-secret} KEEP=${KEEP:-0}

say() { printf '%s\n' "$*" >&2; }
fail() { say "batched: $*"; exit 1; }

[[ -x "$LIMIT_SERVER" ]] ||
  fail "LIMIT_SERVER must name a built limit-server binary (the limit server from the bench kit)"
if [[ -n "$GATEWAY_CMD" && -z "$GATEWAY_URL" ]]; then
  fail "GATEWAY_CMD needs GATEWAY_URL (http://127.0.0.1:PORT/webhooks/messenger)"
fi
GATEWAY_PORT=
if [[ -n "$GATEWAY_CMD" ]]; then
  GATEWAY_PORT=${GATEWAY_URL#http://*:}
  GATEWAY_PORT=${GATEWAY_PORT%%/*}
  [[ "$GATEWAY_PORT" =~ ^[0-9]+$ ]] || fail "GATEWAY_URL must look like http://127.0.0.1:PORT/webhooks/messenger"
fi

say "== building batchload (release)"
CARGO_TARGET_DIR="$ROOT/bench/batchload/target" \
  cargo build --release --quiet --manifest-path "$ROOT/bench/batchload/Cargo.toml"
BATCHLOAD=$ROOT/bench/batchload/target/release/batchload

OUT=$(mktemp -d "${TMPDIR:-/tmp}/batched-XXXXXX")
RESULTS=$OUT/results.jsonl
PIDS=()
stop_all() {
  local pid
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  PIDS=()
}
cleanup() {
  stop_all
  if [[ "$KEEP" == 1 ]]; then say "scratch folder kept: $OUT"; else rm -rf "$OUT"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# wait_ready PID NAME LOG [PORT]: until PORT accepts connections (without PORT: until the limit
# server logs the port it picked); prints the port.
wait_ready() {
  local pid=$1 name=$2 log=$3 port=${4:-} i
  for i in $(seq 1 300); do
    kill -0 "$pid" 2>/dev/null || { tail -5 "$log" >&2; fail "$name exited at start (log above)"; }
    if [[ -z "${4:-}" ]]; then
      port=$(sed -n 's/.*listening on [0-9.]*:\([0-9]*\).*/\1/p' "$log")
    fi
    if [[ -n "$port" ]] && port_open "$port"; then
      echo "$port"
      return
    fi
    sleep 0.1
  done
  fail "$name is not listening after 30 s; see $log"
}

declare -A URL SERVER_PID
NAMES=()
TICKS=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; } # user + system time of PID
start_servers() { # start_servers LAYOUT
  local pin=() pid port
  [[ "$1" == pinned ]] && pin=(taskset -c "$SERVER_CPU")
  "${pin[@]}" "$LIMIT_SERVER" --port 0 --secret "$SECRET" --durable --log "$OUT/durable.data" \
    2>"$OUT/durable.log" &
  pid=$!
  PIDS+=("$pid")
  SERVER_PID[durable]=$pid
  port=$(wait_ready "$pid" "the durable limit server" "$OUT/durable.log")
  URL[durable]=http://127.0.0.1:$port/webhooks/messenger
  NAMES=(durable)
  if [[ -n "$GATEWAY_CMD" ]]; then
    port_open "$GATEWAY_PORT" && fail "port $GATEWAY_PORT is already in use; stop what listens there"
    (cd "$ROOT" && TMPDIR=$OUT exec "${pin[@]}" bash -c "exec $GATEWAY_CMD") >>"$OUT/gateway.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    SERVER_PID[gateway]=$pid # the gateway itself: each shell above execs the next
    wait_ready "$pid" gateway "$OUT/gateway.log" "$GATEWAY_PORT" >/dev/null
    URL[gateway]=$GATEWAY_URL
    NAMES+=(gateway)
  fi
}

load() { # load LAYOUT URL SECONDS: one batchload JSON line
  local pin=()
  [[ "$1" == pinned ]] && pin=(taskset -c "$LOADER_CPU")
  "${pin[@]}" "$BATCHLOAD" --url "$2" --secret "$SECRET" --events "$EVENTS" \
    --connections "$CONNS" --duration "$3" 2>>"$OUT/batchload.log"
}

loader_failed() { tail -3 "$OUT/batchload.log" >&2; fail "batchload failed against $1 (its last lines above)"; }

say "== $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg); $EVENTS events a request, $CONNS connections, ${DURATION} s a run"
: >"$RESULTS"
for layout in $LAYOUTS; do
  say "== layout: $layout"
  start_servers "$layout"
  for name in "${NAMES[@]}"; do # warm-up, discarded; every request must be accepted
    r=$(load "$layout" "${URL[$name]}" "$WARMUP") || loader_failed "$name"
    python3 -c 'import json, sys; r = json.loads(sys.argv[1]); sys.exit(r["ok"] == 0 or r["non_2xx"] + r["errors"] > 0)' "$r" ||
      fail "$name did not accept every batched body in the warm-up: $r (KEEP=1 keeps the server logs)"
  done
  for round in $(seq 1 "$ROUNDS"); do
    for name in "${NAMES[@]}"; do
      before=$(cpu_ticks "${SERVER_PID[$name]}")
      r=$(load "$layout" "${URL[$name]}" "$DURATION") || loader_failed "$name"
      cpu=$(($(cpu_ticks "${SERVER_PID[$name]}") - before))
      printf '{"layout":"%s","round":%s,"server":"%s","cpu_s":%s,"r":%s}\n' "$layout" "$round" "$name" \
        "$(python3 -c "print($cpu / $TICKS)")" "$r" >>"$RESULTS"
      say "   round $round $name $r"
    done
  done
  stop_all
  say "   durable group commit: $(grep -h fdatasyncs "$OUT/durable.log" | tail -1)"
done
say "== load average after: $(cut -d' ' -f1-3 /proc/loadavg)"

python3 - "$RESULTS" "$EVENTS" "$CONNS" "$DURATION" "$ROUNDS" <<'PY'
import json, statistics, sys
path, events, conns, duration, rounds = sys.argv[1:]
per_request = int(events)
rows = [json.loads(line) for line in open(path)]
print()
print(f"{events} events a request, {conns} connections, {duration} s a run, {rounds} interleaved rounds")
print("events/s: median over rounds [min-max]; x durable: ratio to the durable run of the same round, median;")
print("cpu us/ev: the server's CPU time (user + system) per event acknowledged, median")
for layout in dict.fromkeys(r["layout"] for r in rows):
    print()
    print(f"[{layout}]" + (" servers on one CPU, batchload on the other" if layout == "pinned" else " no CPU affinity"))
    header = f"{'server':<8} {'events/s':>9} {'[min-max]':>17} {'x durable':>9} {'cpu us/ev':>9} {'p99 ms':>7} {'failed':>6}"
    print(header)
    print("-" * len(header))
    mine = [r for r in rows if r["layout"] == layout]
    durable = {r["round"]: r["r"]["eps"] for r in mine if r["server"] == "durable"}
    for server in dict.fromkeys(r["server"] for r in mine):
        runs = [r for r in mine if r["server"] == server]
        eps = [r["r"]["eps"] for r in runs]
        ratios = [r["r"]["eps"] / durable[r["round"]] for r in runs if durable.get(r["round"])]
        ratio = statistics.median(ratios) if ratios else float("nan")
        p99 = statistics.median(r["r"]["p99_ms"] for r in runs)
        failed = sum(r["r"]["non_2xx"] + r["r"]["errors"] for r in runs)
        cpu = statistics.median(r["cpu_s"] * 1e6 / max(1, r["r"]["ok"] * per_request) for r in runs)
        span = f"[{min(eps):.0f}-{max(eps):.0f}]"
        print(f"{server:<8} {statistics.median(eps):>9.0f} {span:>17} {ratio:>8.3f}x {cpu:>9.2f} {p99:>7.2f} {failed:>6}")
        if any(r["r"].get("built_live") for r in runs):
            print(f"  note: {server}'s runs outran the pre-built bodies; batchload signed the rest during the run")
PY
