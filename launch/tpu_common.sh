# Shared by tpu_setup.sh and tpu_pod.sh (sourced, not run): how commands reach every worker.
#
# SLICES=1 (default): NAME is a TPU VM (one slice):  gcloud compute tpus tpu-vm ssh|scp
# SLICES=N > 1: NAME is a queued resource of N slices: gcloud compute tpus queued-resources
#   ssh|scp ... --node=all (multi-slice needs queued resources)
# DRY_RUN=1 prints every command (one `+ ` line each, shell-quoted) and runs none of them.

SLICES=${SLICES:-1}
REMOTE_ROOT=${REMOTE_ROOT:-maskgil_jax}     # code: ~/REMOTE_ROOT/<commit>, venv: ~/REMOTE_ROOT/venv

run() {  # print, and run unless DRY_RUN=1
  echo "+ $(printf '%q ' "$@")"
  if [[ "${DRY_RUN:-0}" != "1" ]]; then "$@"; fi
}

check_slices() {
  if ! [[ "$SLICES" =~ ^[1-9][0-9]*$ ]]; then
    echo "error: SLICES=$SLICES must be a positive integer" >&2
    exit 2
  fi
}

# every worker of every slice: ssh NAME ZONE COMMAND / scp NAME ZONE LOCAL REMOTE
on_workers() {  # COMMAND's lines are complete commands: joined with '; ' into one line
  local name=$1 zone=$2 command=${3//$'\n'/; }
  command=${command//\&; /\& }  # a line sent to the background ends with '&' alone
  if [[ "$SLICES" -gt 1 ]]; then
    run gcloud compute tpus queued-resources ssh "$name" --zone "$zone" --node=all --worker=all \
      --command "$command"
  else
    run gcloud compute tpus tpu-vm ssh "$name" --zone "$zone" --worker=all --command "$command"
  fi
}

copy_to_workers() {
  local name=$1 zone=$2 src=$3 dst=$4
  if [[ "$SLICES" -gt 1 ]]; then
    run gcloud compute tpus queued-resources scp "$src" "$name:$dst" --zone "$zone" --node=all \
      --worker=all
  else
    run gcloud compute tpus tpu-vm scp "$src" "$name:$dst" --zone "$zone" --worker=all
  fi
}
