#!/usr/bin/env bash
# Rehearses a multi-host run on this machine: starts NUM_PS parameter servers
# and NUM_WORKERS workers as separate processes through cluster_tf_config.sh
# (exactly what each host of a real cluster runs), then the chief in the
# foreground; every server is stopped when the chief ends. See docs/cluster.md.
#
#   NUM_PS=1 NUM_WORKERS=2 launch/cluster_loopback.sh --level_set=two_rooms \
#       --num_tasks=2 --algorithm=kl_ent_2col --logdir=/tmp/distral_cluster
#
# BASE_PORT (default 22220): the chief listens on BASE_PORT, serves its actor
# hosts on BASE_PORT+1, and ps and workers take BASE_PORT+2, ...
# Server output goes to ${LOG_DIR:-/tmp/distral_cluster_logs}/<job>_<index>.log.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
NUM_PS="${NUM_PS:-1}"
NUM_WORKERS="${NUM_WORKERS:-2}"
BASE_PORT="${BASE_PORT:-22220}"
LOG_DIR="${LOG_DIR:-/tmp/distral_cluster_logs}"
mkdir -p "${LOG_DIR}"

address() { echo "127.0.0.1:$((BASE_PORT + $1))"; }
join() { local IFS=,; echo "$*"; }
ps=() workers=()
for ((i = 0; i < NUM_PS; i++)); do ps+=("$(address $((2 + i)))"); done
for ((i = 0; i < NUM_WORKERS; i++)); do workers+=("$(address $((2 + NUM_PS + i)))"); done
export CHIEF="$(address 0)" PS="$(join "${ps[@]}")" WORKERS="$(join "${workers[@]}")"

pids=()
stop_servers() {
  for pid in "${pids[@]}"; do kill "${pid}" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap stop_servers EXIT
for ((i = 0; i < NUM_PS; i++)); do
  JOB=ps INDEX="${i}" "${HERE}/cluster_tf_config.sh" >"${LOG_DIR}/ps_${i}.log" 2>&1 &
  pids+=($!)
done
for ((i = 0; i < NUM_WORKERS; i++)); do
  JOB=worker INDEX="${i}" "${HERE}/cluster_tf_config.sh" >"${LOG_DIR}/worker_${i}.log" 2>&1 &
  pids+=($!)
done
JOB=chief "${HERE}/cluster_tf_config.sh" "$@"
