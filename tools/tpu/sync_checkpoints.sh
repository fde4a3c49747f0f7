#!/usr/bin/env bash
# Sync a run directory (checkpoints, metrics, operative config) between a bucket and a disk.
#   tools/tpu/sync_checkpoints.sh push --workdir runs/run1 --bucket gs://BUCKET/run1 [--dry-run]
#   tools/tpu/sync_checkpoints.sh pull --workdir runs/run1 --bucket gs://BUCKET/run1
#   tools/tpu/sync_checkpoints.sh push --from-worker 0 --workdir tempr1-jax/runs/run1 --bucket gs://BUCKET/run1
# With --from-worker the copy runs on that TPU worker (its local --workdir), over ssh.
set -euo pipefail
# shellcheck source=tools/tpu/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

DIRECTION=""
WORKDIR=""
BUCKET=""
WORKER=""

usage() {
  cat <<USAGE
usage: $0 push|pull --workdir DIR --bucket gs://BUCKET/PATH [options]
  push                 copy DIR to the bucket;  pull: copy the bucket to DIR
  --workdir DIR        local run directory (on the worker with --from-worker)
  --bucket URL         gs:// destination or source
  --from-worker N      run the sync on TPU worker N (or all) instead of here
${COMMON_USAGE}
USAGE
}

while [[ $# -gt 0 ]]; do
  case "$1" in
    push | pull) DIRECTION="$1"; shift ;;
    --workdir) need_value "$1" $#; WORKDIR="$2"; shift 2 ;;
    --bucket) need_value "$1" $#; BUCKET="$2"; shift 2 ;;
    --from-worker) need_value "$1" $#; WORKER="$2"; shift 2 ;;
    *) parse_common "$@"; shift "${CONSUMED}" ;;
  esac
done

[[ -n "${DIRECTION}" ]] || die "say push or pull"
[[ -n "${WORKDIR}" ]] || die "--workdir is required"
[[ "${BUCKET}" == gs://* ]] || die "--bucket must be a gs:// URL, got '${BUCKET}'"

if [[ "${DIRECTION}" == push ]]; then
  SYNC=(gcloud storage rsync --recursive "${WORKDIR}" "${BUCKET}")
else
  SYNC=(gcloud storage rsync --recursive "${BUCKET}" "${WORKDIR}")
fi

if [[ -z "${WORKER}" ]]; then
  if [[ "${DIRECTION}" == pull ]]; then
    run mkdir -p "${WORKDIR}"
  fi
  run "${SYNC[@]}"
else
  REMOTE_SCRIPT="mkdir -p $(quote "${WORKDIR}") && $(for arg in "${SYNC[@]}"; do printf '%s ' "$(quote "${arg}")"; done)"
  tpu_flags
  run gcloud compute tpus tpu-vm ssh "${TPU_NAME}" --worker="${WORKER}" "${TPU_FLAGS[@]}" \
    --command="${REMOTE_SCRIPT% }"
fi
