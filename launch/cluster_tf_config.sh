#!/usr/bin/env bash
# Runs one task of a Distral cluster: sets TF_CONFIG from the variables below,
# then starts a parameter-server or worker server (they block), or the chief
# (the trainer; extra arguments are its flags). See docs/cluster.md.
#
#   CHIEF=host0:2222 PS=host1:2222 WORKERS=host2:2222,host3:2222 \
#   JOB=worker INDEX=1 launch/cluster_tf_config.sh
#
#   CHIEF=... PS=... WORKERS=... JOB=chief launch/cluster_tf_config.sh \
#       --level_set=minigrid --algorithm=kl_ent_2col --logdir=/shared/runs/a
#
# CHIEF, PS, WORKERS: host:port addresses (PS and WORKERS comma-separated), the
#   same on every host. JOB: chief, ps or worker. INDEX: the task's index in its
#   job (default 0). PYTHON: the interpreter (default python3).
# The chief exits with status 75 when a parameter server is lost; with
# RESTART_CHIEF=1 it is started again (it resumes from the last checkpoint once
# the servers are back).
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
: "${CHIEF:?set CHIEF=host:port}" "${PS:?set PS=host:port[,...]}"
: "${WORKERS:?set WORKERS=host:port[,...]}" "${JOB:?set JOB=chief|ps|worker}"
INDEX="${INDEX:-0}"
CLUSTER_FAILURE_EXIT_CODE=75

TF_CONFIG="$("${PYTHON}" - "${CHIEF}" "${PS}" "${WORKERS}" "${JOB}" "${INDEX}" <<'EOF'
import json, sys
chief, ps, workers, job, index = sys.argv[1:]
print(json.dumps({'cluster': {'chief': [chief], 'ps': ps.split(','),
                              'worker': workers.split(',')},
                  'task': {'type': job, 'index': int(index)}}))
EOF
)"
export TF_CONFIG
export PYTHONPATH="${REPO_ROOT}${PYTHONPATH:+:${PYTHONPATH}}"

if [[ "${JOB}" != chief ]]; then
  exec "${PYTHON}" -m distral_tf.distributed.server
fi
while true; do
  status=0
  "${PYTHON}" -m distral_tf.launch --cluster=tf_config "$@" || status=$?
  if [[ "${status}" -ne "${CLUSTER_FAILURE_EXIT_CODE}" || "${RESTART_CHIEF:-0}" != 1 ]]; then
    exit "${status}"
  fi
  echo "cluster_tf_config.sh: a parameter server was lost; restarting the chief" >&2
  sleep 10
done
