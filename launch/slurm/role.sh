#!/usr/bin/env bash
# One task of launch/slurm/distral_cluster.sbatch: derives its role from
# SLURM_PROCID and the job's node list, then runs cluster_tf_config.sh.
# Workers and parameter servers are restarted in place if they die (a restarted
# worker rejoins the running job; after a parameter server is lost the chief
# exits with status 75 and is restarted too, resuming from its checkpoint).
set -uo pipefail

REPO_ROOT="${REPO_ROOT:-${SLURM_SUBMIT_DIR}}"
mapfile -t hosts < <(scontrol show hostnames "${SLURM_JOB_NODELIST}")
NUM_PS="${NUM_PS:-2}"
PORT="${PORT:-2222}"
(( ${#hosts[@]} >= NUM_PS + 2 )) || {
  echo "role.sh: need at least $((NUM_PS + 2)) nodes (chief, ${NUM_PS} ps, 1 worker)" >&2
  exit 2
}
join() { local IFS=,; echo "$*"; }
ps=() workers=()
for host in "${hosts[@]:1:NUM_PS}"; do ps+=("${host}:${PORT}"); done
for host in "${hosts[@]:$((1 + NUM_PS))}"; do workers+=("${host}:${PORT}"); done
export CHIEF="${hosts[0]}:${PORT}" PS="$(join "${ps[@]}")" WORKERS="$(join "${workers[@]}")"

id="${SLURM_PROCID}"
if (( id == 0 )); then
  export JOB=chief INDEX=0 RESTART_CHIEF=1
  exec "${REPO_ROOT}/launch/cluster_tf_config.sh" "$@"  # Its end ends the job step.
elif (( id <= NUM_PS )); then
  export JOB=ps INDEX=$((id - 1))
else
  export JOB=worker INDEX=$((id - 1 - NUM_PS))
fi
# Servers: restarted if they die, until srun stops them after the chief ends.
while true; do
  "${REPO_ROOT}/launch/cluster_tf_config.sh" || true
  echo "role.sh: ${JOB} ${INDEX} exited; restarting it" >&2
  sleep 5
done
