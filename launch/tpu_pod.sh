#!/usr/bin/env bash
# Train on a Cloud TPU pod slice (or several slices): the same command on every worker, one
# process per host, each writing its own log.
#
#   launch/tpu_pod.sh TPU_NAME ZONE CONFIG WORKDIR [--config.a.b=value ...]
#   SLICES=2 launch/tpu_pod.sh QUEUED_RESOURCE ZONE CONFIG WORKDIR ...   (multi-slice)
#   DRY_RUN=1 launch/tpu_pod.sh ...                                      (print, run nothing)
#
# e.g. launch/tpu_pod.sh my-v5p-128 us-east5-a configs/maskgil_1b.py gs://BUCKET/runs/maskgil_1b \
#        --config.tokenizer.ckpt=gs://BUCKET/vq_ds16_c2i.pt --config.data.tfds_data_dir=gs://BUCKET/tfds
#
# Set up the workers first with launch/tpu_setup.sh (same SLICES); the run uses the commit it
# installed (~/maskgil_jax/current) and its virtual environment. Before starting, a run left
# by an earlier launch on any worker (its process group, recorded in ~/maskgil_jax/run.pid) is
# stopped and the TPU lock file it may have left is removed, so the chips are free. Each worker
# logs to ~/maskgil_jax/logs/RUN_ID/worker-<slice>-<host>.log (RUN_ID: default the time) and
# prints its last lines here when it ends. WORKDIR should be a gs:// path every worker
# can write. jax.distributed.initialize() is forced on (--config.mesh.distributed=yes) since
# pod workers do not always export their host list; with SLICES=N the mesh's cross-slice axis
# is set (--config.mesh.slices=N: the data axis spans the slices, outermost).
# Preempted or stopped? Run the same line again: every worker resumes from WORKDIR's newest
# checkpoint, data position included.
set -euo pipefail
source "$(dirname "$0")/tpu_common.sh"
if [[ "${1:-}" == "--help" || "${1:-}" == "-h" ]]; then
  awk 'NR == 1 { next } /^#SBATCH/ || !/^#/ { exit } { sub(/^# ?/, ""); print }' "$0"
  exit 0
fi
if [[ $# -lt 4 ]]; then
  echo "usage: $0 TPU_NAME ZONE CONFIG WORKDIR [--config.a.b=value ...] (--help)" >&2
  exit 2
fi
check_slices
NAME=$1
ZONE=$2
CONFIG=$3
WORKDIR=$4
shift 4
RUN_ID=${RUN_ID:-$(date +%Y%m%d-%H%M%S)}
ARGS="--config $(printf '%q' "$CONFIG") --workdir $(printf '%q' "$WORKDIR") --config.mesh.distributed=yes"
if [[ "$SLICES" -gt 1 ]]; then
  ARGS+=" --config.mesh.slices=$SLICES"
fi
for arg in "$@"; do
  ARGS+=" $(printf '%q' "$arg")"
done
R="\$HOME/$REMOTE_ROOT"
LOG="$R/logs/$RUN_ID/worker-\${MEGASCALE_SLICE_ID:-0}-\$(hostname).log"
# 1. stale run cleanup: the recorded process group, then the TPU runtime's lock file
on_workers "$NAME" "$ZONE" "pgid=\$(cat $R/run.pid 2>/dev/null || true)
[ -z \"\$pgid\" ] || { kill -TERM -- -\$pgid 2>/dev/null && sleep 10; kill -KILL -- -\$pgid 2>/dev/null; rm -f $R/run.pid; true; }
sudo rm -f /tmp/libtpu_lockfile || rm -f /tmp/libtpu_lockfile || true"
# 2. the run: every worker in its own process group (recorded), its output in its own log
on_workers "$NAME" "$ZONE" "set -euo pipefail
mkdir -p $R/logs/$RUN_ID && cd $R/current
setsid bash -c 'echo \$\$ > $R/run.pid; exec $R/venv/bin/python -m maskgil_jax.train $ARGS' > $LOG 2>&1 &
pid=\$!
status=0; wait \$pid || status=\$?
tail -n 3 $LOG; exit \$status"
echo "tpu_pod: run $RUN_ID finished; per-worker logs in ~/$REMOTE_ROOT/logs/$RUN_ID on each worker"
