#!/usr/bin/env bash
# Train on a Cloud TPU pod slice: the same command on every worker, one process per host.
#
#   launch/tpu_pod.sh TPU_NAME ZONE CONFIG WORKDIR [--config.a.b=value ...]
#
# e.g. launch/tpu_pod.sh my-v5p-128 us-east5-a configs/maskgil_1b.py gs://BUCKET/runs/maskgil_1b \
#        --config.tokenizer.ckpt=gs://BUCKET/vq_ds16_c2i.pt --config.data.tfds_data_dir=gs://BUCKET/tfds
#
# WORKDIR should be a gs:// path every worker can write. jax.distributed.initialize() is forced
# on (--config.mesh.distributed=yes) since pod workers do not always export their host list.
# Multi-slice (queued resources with several slices): add --config.mesh.slices=N.
# Preempted or stopped? Run the same line again: every worker resumes from WORKDIR's newest
# checkpoint, data position included. Set up the workers first with launch/tpu_setup.sh.
set -euo pipefail
if [[ $# -lt 4 ]]; then
  echo "usage: $0 TPU_NAME ZONE CONFIG WORKDIR [--config.a.b=value ...]" >&2
  exit 2
fi
TPU_NAME=$1
ZONE=$2
CONFIG=$3
WORKDIR=$4
shift 4
REPO_DIR=${REPO_DIR:-maskgil_jax}
EXTRA=""
for arg in "$@"; do
  EXTRA+=" $(printf '%q' "$arg")"
done
gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone "$ZONE" --worker=all --command "
  cd ~/$REPO_DIR && python3 -m maskgil_jax.train --config $(printf '%q' "$CONFIG") \
    --workdir $(printf '%q' "$WORKDIR") --config.mesh.distributed=yes$EXTRA"
