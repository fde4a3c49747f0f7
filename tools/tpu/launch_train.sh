#!/usr/bin/env bash
# Start `tempr1 train` on every worker of a TPU VM, with JAX's distributed initialisation on.
#   tools/tpu/launch_train.sh --name tempr1 --gin_file configs/tempr1_7b.gin --workdir /mnt/shared/run1 \
#     [--mesh data=1,fsdp=64,tensor=1] [--foreground] [--dry-run] [-- EXTRA tempr1 train ARGS]
# The run is started in the background (nohup) on each worker; its log is ~/tempr1-train.log there.
# With --foreground the command waits for the run and exits with its status (relaunch.sh uses it).
set -euo pipefail
# shellcheck source=tools/tpu/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

REMOTE_DIR="tempr1-jax"
GIN_FILES=()
WORKDIR=""
MESH=""
FOREGROUND=0
EXTRA=()

usage() {
  cat <<USAGE
usage: $0 --gin_file FILE --workdir DIR [options] [-- extra tempr1 train arguments]
  --gin_file FILE    gin config, relative to the project (repeatable)
  --workdir DIR      run directory, the same path on every host; on a pod it must be a shared
                     file system (e.g. a bucket mounted with gcsfuse, or Filestore): every host
                     writes its shards of each checkpoint there
  --mesh SPEC        mesh shortcut, e.g. data=1,fsdp=64,tensor=1
  --remote-dir DIR   project directory on the workers (default tempr1-jax)
  --foreground       wait for the run (log appended to ~/tempr1-train.log) and exit with its status
${COMMON_USAGE}
USAGE
}

while [[ $# -gt 0 ]]; do
  case "$1" in
    --gin_file) need_value "$1" $#; GIN_FILES+=("$2"); shift 2 ;;
    --workdir) need_value "$1" $#; WORKDIR="$2"; shift 2 ;;
    --mesh) need_value "$1" $#; MESH="$2"; shift 2 ;;
    --remote-dir) need_value "$1" $#; REMOTE_DIR="$2"; shift 2 ;;
    --foreground) FOREGROUND=1; shift ;;
    --) shift; EXTRA=("$@"); break ;;
    *) parse_common "$@"; shift "${CONSUMED}" ;;
  esac
done

[[ ${#GIN_FILES[@]} -gt 0 ]] || die "at least one --gin_file is required"
[[ -n "${WORKDIR}" ]] || die "--workdir is required"

TRAIN_ARGS=()
for gin_file in "${GIN_FILES[@]}"; do
  TRAIN_ARGS+=(--gin_file "${gin_file}")
done
# --distributed: every host calls jax.distributed.initialize() before building the mesh.
TRAIN_ARGS+=(--workdir "${WORKDIR}" --distributed)
if [[ -n "${MESH}" ]]; then
  TRAIN_ARGS+=(--mesh "${MESH}")
fi
TRAIN_ARGS+=("${EXTRA[@]}")

TRAIN_COMMAND="$(for arg in "${TRAIN_ARGS[@]}"; do printf ' %s' "$(quote "${arg}")"; done)"
if [[ "${FOREGROUND}" -eq 1 ]]; then
  REMOTE_SCRIPT="cd ~/${REMOTE_DIR} && ~/tempr1-venv/bin/tempr1 train${TRAIN_COMMAND} >> ~/tempr1-train.log 2>&1"
else
  REMOTE_SCRIPT="cd ~/${REMOTE_DIR} && nohup ~/tempr1-venv/bin/tempr1 train${TRAIN_COMMAND} > ~/tempr1-train.log 2>&1 &"
fi
tpu_flags
run gcloud compute tpus tpu-vm ssh "${TPU_NAME}" --worker=all "${TPU_FLAGS[@]}" --command="${REMOTE_SCRIPT}"
