#!/usr/bin/env bash
# Copy this checkout to every worker of a Cloud TPU VM (pod slice) and install it there.
#
#   launch/tpu_setup.sh TPU_NAME ZONE
#
# Installs `maskgil_jax` in editable mode with the TPU build of JAX, in ~/maskgil_jax on each
# worker (REPO_DIR overrides). Run once per TPU VM; launch/tpu_pod.sh then starts training.
set -euo pipefail
if [[ $# -ne 2 ]]; then
  echo "usage: $0 TPU_NAME ZONE" >&2
  exit 2
fi
TPU_NAME=$1
ZONE=$2
REPO_DIR=${REPO_DIR:-maskgil_jax}
cd "$(dirname "$0")/.."
ARCHIVE=$(mktemp -d)/maskgil_jax_src.tgz
tar --exclude=.git --exclude='__pycache__' -czf "$ARCHIVE" .
gcloud compute tpus tpu-vm scp "$ARCHIVE" "$TPU_NAME":maskgil_jax_src.tgz --zone "$ZONE" --worker=all
gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone "$ZONE" --worker=all --command "
  set -e; mkdir -p ~/$REPO_DIR && tar -xzf ~/maskgil_jax_src.tgz -C ~/$REPO_DIR &&
  cd ~/$REPO_DIR && python3 -m pip install -q -e . 'jax[tpu]>=0.10,<0.11'"
echo "tpu_setup: $TPU_NAME ready (~/$REPO_DIR on every worker)"
