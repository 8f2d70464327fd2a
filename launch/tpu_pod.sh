#!/usr/bin/env bash
# Train on a Cloud TPU pod slice (or several slices): the same command on every worker, one
# process per host, each writing its own log.
#
#   launch/tpu_pod.sh TPU_NAME ZONE CONFIG WORKDIR [--config.a.b=value ...]
#   SLICES=2 launch/tpu_pod.sh QUEUED_RESOURCE ZONE CONFIG WORKDIR ...   (multi-slice)
#   COMMAND=sample launch/tpu_pod.sh TPU_NAME ZONE --ckpt WORKDIR --out gs://BUCKET/samples ...
#   DRY_RUN=1 launch/tpu_pod.sh ...                                      (print, run nothing)
#
# e.g. launch/tpu_pod.sh my-v5p-128 us-east5-a configs/maskgil_1b.py gs://BUCKET/runs/maskgil_1b \
#        --config.tokenizer.ckpt=gs://BUCKET/vq_ds16_c2i.pt --config.data.tfds_data_dir=gs://BUCKET/tfds
#
# Check the config against the slice first, on any machine (no TPU needed):
#   python -m maskgil_jax.train --config configs/maskgil_1b.py --memory-report --topology v5p-128
#
# Set up the workers first with launch/tpu_setup.sh (same SLICES); the run uses the commit it
# installed (~/maskgil_jax/current) and its virtual environment. Before starting, a run left
# by an earlier launch on any worker (its process group, recorded in ~/maskgil_jax/run.pid) is
# stopped and the TPU lock file it may have left is removed, so the chips are free. Each worker
# logs to ~/maskgil_jax/logs/RUN_ID/worker-<slice>-<host>.log (RUN_ID: default the time) and
# prints its last lines here when it ends. WORKDIR should be a gs:// path every worker
# can write. COMMAND (default train) runs another command of the package on every worker:
# sample, extract_codes, extract_text or evaluate, with its own arguments given verbatim.
# Arguments reach the workers intact, quotes and spaces included.
# jax.distributed: a worker whose environment names the job's hosts (TPU_WORKER_HOSTNAMES,
# JAX_COORDINATOR_ADDRESS, MEGASCALE_COORDINATOR_ADDRESS) is left to detect it; elsewhere
# MASKGIL_JAX_DISTRIBUTED=yes makes every command initialise it (pod workers do not always
# export their host list). With SLICES=N the mesh's cross-slice axis is set
# (--config.mesh.slices=N: the data axis spans the slices, outermost).
# Every worker must start at once (the job waits for all of them): the queued-resources ssh of
# multi-slice runs starts SSH_BATCH_SIZE workers at a time (default 1024; gcloud's own default,
# 64, would stall a larger job); raise it above the total worker count.
# Preempted or stopped? Run the same line again: every worker resumes from WORKDIR's newest
# checkpoint, data position included.
set -euo pipefail
source "$(dirname "$0")/tpu_common.sh"
if [[ "${1:-}" == "--help" || "${1:-}" == "-h" ]]; then
  awk 'NR == 1 { next } /^#SBATCH/ || !/^#/ { exit } { sub(/^# ?/, ""); print }' "$0"
  exit 0
fi
COMMAND=${COMMAND:-train}
case "$COMMAND" in
  train|sample|extract_codes|extract_text|evaluate) ;;
  *) echo "error: COMMAND=$COMMAND: one of train, sample, extract_codes, extract_text, evaluate" >&2
     exit 2 ;;
esac
if [[ $# -lt 2 || ( "$COMMAND" == train && $# -lt 4 ) ]]; then
  echo "usage: $0 TPU_NAME ZONE CONFIG WORKDIR [--config.a.b=value ...] (--help)" >&2
  exit 2
fi
check_slices
NAME=$1
ZONE=$2
shift 2
RUN_ID=${RUN_ID:-$(date +%Y%m%d-%H%M%S)}
if [[ "$COMMAND" == train ]]; then
  set -- --config "$1" --workdir "$2" "${@:3}"
fi
ARGS=""
if [[ "$SLICES" -gt 1 && "$COMMAND" =~ ^(train|extract_codes|extract_text)$ ]]; then
  ARGS=" --config.mesh.slices=$SLICES"
fi
for arg in "$@"; do  # each word shell-quoted for the worker's shell, which runs it unwrapped
  ARGS+=" $(printf '%q' "$arg")"
done
R="\$HOME/$REMOTE_ROOT"
LOG="$R/logs/$RUN_ID/worker-\${MEGASCALE_SLICE_ID:-0}-\$(hostname).log"
# 1. stale run cleanup: the recorded process group, then the TPU runtime's lock file
on_workers "$NAME" "$ZONE" "pgid=\$(cat $R/run.pid 2>/dev/null || true)
[ -z \"\$pgid\" ] || { kill -TERM -- -\$pgid 2>/dev/null && sleep 10; kill -KILL -- -\$pgid 2>/dev/null; rm -f $R/run.pid; true; }
sudo rm -f /tmp/libtpu_lockfile || rm -f /tmp/libtpu_lockfile || true"
# 2. the run: every worker in its own process group (recorded), its output in its own log; the
#    wrapper script is fixed text (single-quoted), the arguments are plain words after it
on_workers "$NAME" "$ZONE" "set -euo pipefail
mkdir -p $R/logs/$RUN_ID && cd $R/current
[ -n \"\${TPU_WORKER_HOSTNAMES:-}\${JAX_COORDINATOR_ADDRESS:-}\${MEGASCALE_COORDINATOR_ADDRESS:-}\" ] || export MASKGIL_JAX_DISTRIBUTED=yes
setsid bash -c 'echo \$\$ > \"\$0\"; exec \"\$@\"' $R/run.pid $R/venv/bin/python -m maskgil_jax.$COMMAND$ARGS > $LOG 2>&1 &
pid=\$!
status=0; wait \$pid || status=\$?
tail -n 3 $LOG; exit \$status"
ended "tpu_pod: run $RUN_ID of $COMMAND ended on every worker; per-worker logs in ~/$REMOTE_ROOT/logs/$RUN_ID"
