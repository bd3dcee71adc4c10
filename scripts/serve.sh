#!/usr/bin/env bash
# Builds oxstor and serves a 1 GiB RAM volume to NVMe/TCP hosts, like SPDK's nvmf_tgt with a
# malloc bdev. Ctrl-C stops it cleanly.
#   ADDR (127.0.0.1), PORT (4420), NQN, SOCK (/var/tmp/oxstor.sock), CORES (0x3) override.
set -euo pipefail
cd "$(dirname "$0")/.."
ADDR=${ADDR:-127.0.0.1}
PORT=${PORT:-4420}
NQN=${NQN:-nqn.2016-06.io.oxstor:cnode1}
SOCK=${SOCK:-/var/tmp/oxstor.sock}
CORES=${CORES:-0x3}

cargo build --release -p oxstor-tools -p oxstor-perf
# DMA memory wants hugepages; without them oxstor falls back to normal pages and says so.
if [ "$(id -u)" = 0 ] && [ "$(cat /proc/sys/vm/nr_hugepages)" -lt 768 ]; then
  echo 768 > /proc/sys/vm/nr_hugepages || true
fi
CONFIG=$(mktemp /tmp/oxstor-serve.XXXXXX.json)
trap 'rm -f "$CONFIG"' EXIT
cat > "$CONFIG" <<JSON
{"subsystems": [
  {"subsystem": "bdev", "config": [
    {"method": "bdev_malloc_create", "params": {"name": "Malloc0", "num_blocks": 262144, "block_size": 4096}}
  ]},
  {"subsystem": "nvmf", "config": [
    {"method": "nvmf_create_transport", "params": {"trtype": "TCP"}},
    {"method": "nvmf_create_subsystem", "params": {"nqn": "$NQN", "allow_any_host": true, "serial_number": "OX0001"}},
    {"method": "nvmf_subsystem_add_ns", "params": {"nqn": "$NQN", "namespace": {"bdev_name": "Malloc0"}}},
    {"method": "nvmf_subsystem_add_listener", "params": {"nqn": "$NQN",
      "listen_address": {"trtype": "tcp", "adrfam": "ipv4", "traddr": "$ADDR", "trsvcid": "$PORT"}}}
  ]}
]}
JSON
echo "serving Malloc0 (1 GiB) as $NQN on $ADDR:$PORT; RPC on $SOCK (target/release/oxctl -s $SOCK rpc_get_methods)"
target/release/oxstor -m "$CORES" -r "$SOCK" --json "$CONFIG"
