#!/usr/bin/env bash
# Install one commit of maskgil_jax on every worker of a Cloud TPU VM (or of every slice of a
# multi-slice queued resource) in a Python >= 3.11 virtual environment.
#
#   launch/tpu_setup.sh TPU_NAME ZONE [COMMIT]          (COMMIT: default HEAD)
#   SLICES=2 launch/tpu_setup.sh QUEUED_RESOURCE ZONE   (multi-slice)
#   DRY_RUN=1 launch/tpu_setup.sh TPU_NAME ZONE         (print every command, run none)
#
# The code shipped is `git archive COMMIT`: exactly the committed tree, never git-ignored
# folders (runs, data, virtual environments) that happen to sit in the checkout. It lands in
# ~/maskgil_jax/<commit> on each worker (REMOTE_ROOT overrides maskgil_jax) and is installed,
# with jax[tpu]==JAX_VERSION (default 0.10.2, the pinned range's tested release), into the
# virtual environment ~/maskgil_jax/venv, created with uv for Python PYTHON_VERSION (default
# 3.11; TPU images ship 3.10 as the system Python, which this package does not support).
# ~/maskgil_jax/current points at the installed commit; launch/tpu_pod.sh runs from there.
set -euo pipefail
source "$(dirname "$0")/tpu_common.sh"
if [[ "${1:-}" == "--help" || "${1:-}" == "-h" ]]; then
  awk 'NR == 1 { next } /^#SBATCH/ || !/^#/ { exit } { sub(/^# ?/, ""); print }' "$0"
  exit 0
fi
if [[ $# -lt 2 || $# -gt 3 ]]; then
  echo "usage: $0 TPU_NAME ZONE [COMMIT] (--help)" >&2
  exit 2
fi
check_slices
NAME=$1
ZONE=$2
COMMIT=${3:-HEAD}
PYTHON_VERSION=${PYTHON_VERSION:-3.11}
JAX_VERSION=${JAX_VERSION:-0.10.2}
REPO=$(cd "$(dirname "$0")/.." && pwd)
SHA=$(git -C "$REPO" rev-parse --short=12 "$COMMIT^{commit}")
if [[ -n "$(git -C "$REPO" status --porcelain --untracked-files=no)" && "$COMMIT" == HEAD ]]; then
  echo "tpu_setup: note: uncommitted changes are not shipped (only commit $SHA)" >&2
fi
ARCHIVE_DIR=$(mktemp -d)
trap 'rm -rf "$ARCHIVE_DIR"' EXIT
ARCHIVE="$ARCHIVE_DIR/maskgil_jax-$SHA.tar.gz"
run git -C "$REPO" archive --format=tar.gz -o "$ARCHIVE" "$SHA"
copy_to_workers "$NAME" "$ZONE" "$ARCHIVE" "maskgil_jax-$SHA.tar.gz"
R="\$HOME/$REMOTE_ROOT"
on_workers "$NAME" "$ZONE" "set -euo pipefail
command -v uv >/dev/null || [ -x \$HOME/.local/bin/uv ] || curl -LsSf https://astral.sh/uv/install.sh | sh
export PATH=\$HOME/.local/bin:\$PATH
mkdir -p $R/$SHA && tar -xzf \$HOME/maskgil_jax-$SHA.tar.gz -C $R/$SHA && rm \$HOME/maskgil_jax-$SHA.tar.gz
[ -x $R/venv/bin/python ] || uv venv --python $PYTHON_VERSION $R/venv
uv pip install --python $R/venv/bin/python -q $R/$SHA 'jax[tpu]==$JAX_VERSION'
ln -sfn $R/$SHA $R/current
$R/venv/bin/python -c 'import sys, jax; print(sys.version.split()[0], jax.__version__)'"
ended "tpu_setup: $NAME ready: commit $SHA in ~/$REMOTE_ROOT/current, venv ~/$REMOTE_ROOT/venv"
