#!/usr/bin/env bash
# Replication benchmarks of issue 5 ("Measure and report"), medians of RUNS runs.
#
# Each replicated run: a FRESH `oxstor` daemon on core 1 is the Secondary (node-id 1, listens
# on 127.0.0.2:PORT, 512 MiB malloc backing), and `oxperf bdev` on core 0 is the Primary
# (node-id 0, dials from 127.0.0.1:PORT): its config creates the resource, connects, forces
# Primary (new data generation, full initial sync to the Secondary), waits for the sync and
# then drives the replicated device ox0. The daemon is stopped after every run.
#
# Baselines from the same session, interleaved with the replicated runs: the local-only write
# (oxperf on the malloc bdev alone, same core and parameters), the loopback TCP round trip
# (`oxperf net rtt`, client core 0, server core 1), single-stream TCP (`oxperf net stream`, and
# iperf3 when it is installed or installable).
#
# Environment: RUNS (3), TIME (5 s per I/O run), PROTOCOLS_AB (1: also protocol A and B QD1),
# SEQ_QD (16), BASE_PORT (7790), NO_BUILD (1: skip cargo build), CARGO_TARGET_DIR (target/),
# KEEP (1: keep the work directory with every log and JSON result), HUGEPAGES (1024: as root,
# raise vm.nr_hugepages to this for the run and restore it after, as serve.sh does; without
# hugepages the malloc disks are fresh 4 KiB pages and the initial sync mostly measures page
# faults; 0 leaves the system alone).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
RUNS=${RUNS:-3}
TIME=${TIME:-5}
PROTOCOLS_AB=${PROTOCOLS_AB:-1}
SEQ_QD=${SEQ_QD:-16}
PORT=${BASE_PORT:-7790}
BLOCKS=131072 # 512 MiB of 4 KiB blocks

if [ "${NO_BUILD:-0}" != 1 ]; then
  cargo build --release -p oxstor-tools -p oxstor-perf
fi
OXSTOR=$TARGET/release/oxstor
OXCTL=$TARGET/release/oxctl
OXPERF=$TARGET/release/oxperf
for b in "$OXSTOR" "$OXCTL" "$OXPERF"; do
  [ -x "$b" ] || { echo "missing $b (build first or set CARGO_TARGET_DIR)" >&2; exit 1; }
done

if ! command -v iperf3 >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "iperf3 is missing; trying apt-get install -y iperf3" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y iperf3 >/dev/null 2>&1 || echo "(iperf3 not installed; skipping it)" >&2
fi
HAVE_IPERF=0
command -v iperf3 >/dev/null 2>&1 && HAVE_IPERF=1

HUGEPAGES=${HUGEPAGES:-1024}
OLD_HP=""
if [ "$HUGEPAGES" != 0 ] && [ "$(id -u)" = 0 ] && [ "$(cat /proc/sys/vm/nr_hugepages)" -lt "$HUGEPAGES" ]; then
  OLD_HP=$(cat /proc/sys/vm/nr_hugepages)
  echo "$HUGEPAGES" > /proc/sys/vm/nr_hugepages 2>/dev/null || OLD_HP=""
fi

WORK=$(mktemp -d /tmp/bench-repl.XXXXXX)
DPID=""
cleanup() {
  if [ -n "$OLD_HP" ]; then echo "$OLD_HP" > /proc/sys/vm/nr_hugepages 2>/dev/null || true; fi
  if [ -n "$DPID" ]; then kill "$DPID" 2>/dev/null || true; wait "$DPID" 2>/dev/null || true; fi
  if [ "${KEEP:-0}" = 1 ]; then echo "results kept in $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

# jget FILE PYTHON_EXPR: evaluates EXPR on the JSON document `d` of FILE.
jget() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print($2)" "$1"; }
# median of the numbers on stdin (one per line)
median() { sort -g | awk '{a[NR]=$1} END {if (NR==0) print "nan"; else if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
rec() { echo "$2" >> "$WORK/$1.vals"; }
med() { [ -f "$WORK/$1.vals" ] && median < "$WORK/$1.vals" || echo nan; }
calc() { python3 -c "print(format($1, '$2'))"; }

# Fresh Secondary daemon for one run, protocol $1, listening on 127.0.0.2:$PORT.
start_secondary() {
  local proto=$1 sock=$WORK/sec.sock
  rm -f "$sock"
  "$OXSTOR" -m 0x2 -r "$sock" > "$WORK/secondary-$RUN_TAG.log" 2>&1 &
  DPID=$!
  for _ in $(seq 100); do
    "$OXCTL" -s "$sock" spdk_get_version >/dev/null 2>&1 && break
    kill -0 "$DPID" 2>/dev/null || { echo "oxstor died:" >&2; cat "$WORK/secondary-$RUN_TAG.log" >&2; exit 1; }
    sleep 0.1
  done
  local c="$OXCTL -s $sock"
  $c bdev_malloc_create "{\"name\":\"M1\",\"num_blocks\":$BLOCKS,\"block_size\":4096}" >/dev/null
  $c repl_new_resource '{"name":"r0","node_id":1}' >/dev/null
  $c repl_attach '{"resource":"r0","volume":0,"device":"ox0","disk":"M1","meta_disk":"internal"}' >/dev/null
  $c repl_new_peer "{\"resource\":\"r0\",\"peer_node_id\":0,\"peer_name\":\"primary\",\"net\":{\"protocol\":\"$proto\",\"ping-timeout\":\"30\"},\"disk\":{\"resync-rate\":\"8G\"}}" >/dev/null
  $c repl_new_path "{\"resource\":\"r0\",\"peer_node_id\":0,\"local_addr\":\"127.0.0.2:$PORT\",\"remote_addr\":\"127.0.0.1:$PORT\"}" >/dev/null
  $c repl_connect '{"resource":"r0","peer_node_id":0}' >/dev/null
}

stop_secondary() {
  [ -n "$DPID" ] || return 0
  kill -INT "$DPID" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$DPID" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$DPID" 2>/dev/null || true
  wait "$DPID" 2>/dev/null || true
  DPID=""
}

write_config() { # FILE PROTOCOL (empty: local malloc only)
  local file=$1 proto=$2
  local malloc="{\"method\":\"bdev_malloc_create\",\"params\":{\"name\":\"M0\",\"num_blocks\":$BLOCKS,\"block_size\":4096}}"
  if [ -z "$proto" ]; then
    echo "{\"subsystems\":[{\"subsystem\":\"bdev\",\"config\":[$malloc]}]}" > "$file"
    return
  fi
  cat > "$file" <<JSON
{"subsystems":[{"subsystem":"bdev","config":[
  $malloc,
  {"method":"repl_new_resource","params":{"name":"r0","node_id":0}},
  {"method":"repl_attach","params":{"resource":"r0","volume":0,"device":"ox0","disk":"M0","meta_disk":"internal"}},
  {"method":"repl_new_peer","params":{"resource":"r0","peer_node_id":1,"peer_name":"secondary",
    "net":{"protocol":"$proto","ping-timeout":"30"},"disk":{"resync-rate":"8G"}}},
  {"method":"repl_new_path","params":{"resource":"r0","peer_node_id":1,"local_addr":"127.0.0.1:$PORT","remote_addr":"127.0.0.2:$PORT"}},
  {"method":"repl_connect","params":{"resource":"r0","peer_node_id":1}},
  {"method":"repl_primary","params":{"resource":"r0","force":true}},
  {"method":"repl_wait_sync","params":{"resource":"r0","timeout_s":300}}
]}]}
JSON
}

# run_io NAME PROTOCOL(empty: local) QD SIZE WORKLOAD: one oxperf run, result in $WORK/NAME-RUN.json
run_io() {
  local name=$1 proto=$2 qd=$3 size=$4 wl=$5 bdev=M0
  RUN_TAG=$name-$RUN
  local cfg=$WORK/$RUN_TAG.cfg.json out=$WORK/$RUN_TAG.json
  if [ -n "$proto" ]; then
    PORT=$((PORT + 1))
  fi
  write_config "$cfg" "$proto"
  if [ -n "$proto" ]; then
    start_secondary "$proto"
    bdev=ox0
  fi
  if ! RUST_LOG=info "$OXPERF" bdev --json "$cfg" -b "$bdev" -q "$qd" -o "$size" -w "$wl" -t "$TIME" \
      --warmup 1 -m 0x1 --output json > "$out" 2> "$WORK/$RUN_TAG.log"; then
    echo "oxperf failed ($RUN_TAG):" >&2; tail -20 "$WORK/$RUN_TAG.log" >&2
    [ -n "$proto" ] && { echo "secondary log:" >&2; tail -20 "$WORK/secondary-$RUN_TAG.log" >&2; }
    stop_secondary
    exit 1
  fi
  stop_secondary
  rec "$name.iops" "$(jget "$out" 'd["iops"]')"
  rec "$name.mibs" "$(jget "$out" 'd["mib_s"]')"
  rec "$name.mean" "$(jget "$out" 'd["latency_us"]["mean"]')"
  rec "$name.p50" "$(jget "$out" 'd["latency_us"]["p50"]')"
  local rs
  rs=$(sed -n 's/.*resync to .* done: .*(\([0-9.]*\) MiB\/s).*/\1/p' "$WORK/$RUN_TAG.log" | tail -1)
  if [ -n "$rs" ]; then rec resync "$rs"; fi
  printf '  %-10s run %s: %10.0f IOPS %9.1f MiB/s  mean %7.2f us  p50 %7.2f us%s\n' "$name" "$RUN" \
    "$(jget "$out" 'd["iops"]')" "$(jget "$out" 'd["mib_s"]')" "$(jget "$out" 'd["latency_us"]["mean"]')" \
    "$(jget "$out" 'd["latency_us"]["p50"]')" "${rs:+  (resync $rs MiB/s)}"
}

net_runs() {
  local out=$WORK/rtt-$RUN.json
  "$OXPERF" net rtt -n 20000 --size 64 -c 0x3 --output json > "$out"
  rec rtt64.p50 "$(jget "$out" 'd["rtt_us"]["p50"]')"
  rec rtt64.mean "$(jget "$out" 'd["rtt_us"]["mean"]')"
  "$OXPERF" net rtt -n 20000 --size 4096 -c 0x3 --output json > "$WORK/rtt4k-$RUN.json"
  rec rtt4k.p50 "$(jget "$WORK/rtt4k-$RUN.json" 'd["rtt_us"]["p50"]')"
  "$OXPERF" net stream -t "$TIME" -o 131072 -c 0x3 --output json > "$WORK/stream-$RUN.json"
  rec stream "$(jget "$WORK/stream-$RUN.json" 'd["mib_s"]')"
  printf '  net        run %s: RTT 64 B p50 %.2f us, 4 KiB p50 %.2f us; stream %.0f MiB/s\n' "$RUN" \
    "$(jget "$out" 'd["rtt_us"]["p50"]')" "$(jget "$WORK/rtt4k-$RUN.json" 'd["rtt_us"]["p50"]')" \
    "$(jget "$WORK/stream-$RUN.json" 'd["mib_s"]')"
  if [ "$HAVE_IPERF" = 1 ]; then
    PORT=$((PORT + 1))
    iperf3 -s -1 -B 127.0.0.1 -p "$PORT" -A 1 > /dev/null 2>&1 &
    local ipid=$!
    sleep 0.5
    if iperf3 -c 127.0.0.1 -p "$PORT" -t "$TIME" -l 128K -A 0 -J > "$WORK/iperf-$RUN.json" 2>/dev/null; then
      local ip
      ip=$(jget "$WORK/iperf-$RUN.json" 'd["end"]["sum_received"]["bits_per_second"]/8/1048576')
      rec iperf "$ip"
      printf '  iperf3     run %s: %.0f MiB/s\n' "$RUN" "$ip"
    fi
    wait "$ipid" 2>/dev/null || true
  fi
}

echo "load before: $(uptime)"
echo "hugepages: $(grep -E 'HugePages_(Total|Free)' /proc/meminfo | tr -s ' ' | tr '\n' ' ')"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
for RUN in $(seq "$RUNS"); do
  echo "run $RUN/$RUNS"
  run_io local1 "" 1 4096 randwrite
  run_io replC1 C 1 4096 randwrite
  net_runs
  run_io local32 "" 32 4096 randwrite
  run_io replC32 C 32 4096 randwrite
  run_io localseq "" "$SEQ_QD" 131072 write
  run_io replCseq C "$SEQ_QD" 131072 write
  if [ "$PROTOCOLS_AB" = 1 ]; then
    run_io replA1 A 1 4096 randwrite
    run_io replB1 B 1 4096 randwrite
  fi
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

L_MEAN=$(med local1.mean); L_P50=$(med local1.p50)
R_MEAN=$(med replC1.mean); R_P50=$(med replC1.p50)
RTT=$(med rtt64.p50)
echo
echo "=== medians of $RUNS runs (${TIME}s each; load avg before $LOAD_BEFORE, after $LOAD_AFTER; $(nproc) cores; hugepages $(cat /proc/sys/vm/nr_hugepages)) ==="
echo "Protocol C, 4 KiB randwrite QD1 (Primary core 0, Secondary core 1):"
printf '  local-only malloc:   mean %7.2f us  p50 %7.2f us\n' "$L_MEAN" "$L_P50"
printf '  TCP RTT (64 B):      p50 %7.2f us  (4 KiB msgs: p50 %.2f us)\n' "$RTT" "$(med rtt4k.p50)"
printf '  replicated (C):      mean %7.2f us  p50 %7.2f us\n' "$R_MEAN" "$R_P50"
printf '  target local+RTT+15: mean %7.2f us  p50 %7.2f us\n' "$(calc "$L_MEAN+$RTT+15" .2f)" "$(calc "$L_P50+$RTT+15" .2f)"
verdict() { python3 -c "print('met' if $1 <= $2 + $RTT + 15 else 'NOT met')"; }
printf '  repl / target:       mean %.2fx (%s)  p50 %.2fx (%s)\n' \
  "$(calc "$R_MEAN/($L_MEAN+$RTT+15)" .2f)" "$(verdict "$R_MEAN" "$L_MEAN")" \
  "$(calc "$R_P50/($L_P50+$RTT+15)" .2f)" "$(verdict "$R_P50" "$L_P50")"
printf '  repl - local - RTT:  mean %.2f us  p50 %.2f us\n' \
  "$(calc "$R_MEAN-$L_MEAN-$RTT" .2f)" "$(calc "$R_P50-$L_P50-$RTT" .2f)"
if [ "$PROTOCOLS_AB" = 1 ]; then
  printf '  protocol A:          mean %7.2f us  p50 %7.2f us\n' "$(med replA1.mean)" "$(med replA1.p50)"
  printf '  protocol B:          mean %7.2f us  p50 %7.2f us\n' "$(med replB1.mean)" "$(med replB1.p50)"
fi
echo "Protocol C, 4 KiB randwrite QD32:"
printf '  replicated %.0f IOPS vs local %.0f IOPS = %.2fx\n' "$(med replC32.iops)" "$(med local32.iops)" \
  "$(calc "$(med replC32.iops)/$(med local32.iops)" .3f)"
echo "Protocol C, 128 KiB sequential write QD$SEQ_QD:"
printf '  replicated %.0f MiB/s vs local %.0f MiB/s = %.2fx\n' "$(med replCseq.mibs)" "$(med localseq.mibs)" \
  "$(calc "$(med replCseq.mibs)/$(med localseq.mibs)" .3f)"
printf '  vs oxperf net stream %.0f MiB/s = %.2fx\n' "$(med stream)" "$(calc "$(med replCseq.mibs)/$(med stream)" .3f)"
if [ "$HAVE_IPERF" = 1 ] && [ -f "$WORK/iperf.vals" ]; then
  printf '  vs iperf3 %.0f MiB/s = %.2fx\n' "$(med iperf)" "$(calc "$(med replCseq.mibs)/$(med iperf)" .3f)"
else
  echo "  (iperf3 not available)"
fi
printf 'Resync (full initial sync of %d MiB, resync-rate 8G): median %.1f MiB/s over %d syncs\n' \
  $((BLOCKS * 4096 >> 20)) "$(med resync)" "$(wc -l < "$WORK/resync.vals" 2>/dev/null || echo 0)"
NOHP=$(grep -l "no hugepages" "$WORK"/*.log 2>/dev/null | wc -l)
[ "$NOHP" = 0 ] || echo "note: $NOHP process(es) ran without hugepages (DMA memory on 4 KiB pages)"
