# Shared by tpu_setup.sh and tpu_pod.sh (sourced, not run): how commands reach every worker.
#
# SLICES=1 (default): NAME is a TPU VM (one slice):  gcloud compute tpus tpu-vm ssh|scp
# SLICES=N > 1: NAME is a queued resource of N slices: gcloud compute tpus queued-resources
#   ssh|scp ... --node=all (multi-slice needs queued resources)
# DRY_RUN=1 prints every command (one `+ ` line each, quoted only where needed, as a person
# would type it) and runs none of them.

SLICES=${SLICES:-1}
REMOTE_ROOT=${REMOTE_ROOT:-maskgil_jax}     # code: ~/REMOTE_ROOT/<commit>, venv: ~/REMOTE_ROOT/venv

words() {  # the arguments as one shell line a person can read: quoted only where needed
  local out="" a
  for a in "$@"; do
    if [[ -n "$a" && "$a" =~ ^[A-Za-z0-9_./=:,+@%-]+$ ]]; then
      out+="$a "
    else
      out+="'${a//\'/\'\\\'\'}' "
    fi
  done
  printf '%s' "${out% }"
}
run() {  # print, and run unless DRY_RUN=1
  echo "+ $(words "$@")"
  if [[ "${DRY_RUN:-0}" != "1" ]]; then "$@"; fi
}
ended() {  # the closing line: MESSAGE, or that nothing ran
  if [[ "${DRY_RUN:-0}" == "1" ]]; then echo "dry run: nothing started"; else echo "$1"; fi
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
      --batch-size="${SSH_BATCH_SIZE:-1024}" --command "$command"
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
