#!/usr/bin/env bash
# Create a TPU VM (single host or pod slice) for tempr1-jax.
#   tools/tpu/create_vm.sh --name tempr1 --zone us-east5-a --accelerator-type v5p-128 [--spot] [--queued] [--dry-run]
# --queued asks for the capacity through a queued resource of the same name (it waits in line; watch it with
# `gcloud compute tpus queued-resources describe NAME`); relaunch.sh waits for it to become ACTIVE.
set -euo pipefail
# shellcheck source=tools/tpu/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

ACCELERATOR_TYPE="v5p-128"
RUNTIME_VERSION=""
PROVISIONING=()
QUEUED=0

usage() {
  cat <<USAGE
usage: $0 [options]
  --accelerator-type TYPE  e.g. v5p-128 (64 chips, the paper-scale mesh), v5litepod-16, v4-32, v6e-8
  --version VERSION        TPU runtime image (default: picked from the accelerator generation)
  --spot                   request Spot capacity
  --reserved               use a reservation
  --queued                 request the VM through a queued resource named like it
${COMMON_USAGE}
USAGE
}

# default_runtime TYPE: the TPU VM software image for an accelerator generation.
default_runtime() {
  case "$1" in
    v5p-*) echo "v2-alpha-tpuv5" ;;
    v5litepod-* | v5e-*) echo "v2-alpha-tpuv5-lite" ;;
    v6e-*) echo "v2-alpha-tpuv6e" ;;
    v4-*) echo "tpu-ubuntu2204-base" ;;
    *) die "no default runtime version for accelerator type $1; pass --version" ;;
  esac
}

while [[ $# -gt 0 ]]; do
  case "$1" in
    --accelerator-type) need_value "$1" $#; ACCELERATOR_TYPE="$2"; shift 2 ;;
    --version) need_value "$1" $#; RUNTIME_VERSION="$2"; shift 2 ;;
    --spot) PROVISIONING=(--spot); shift ;;
    --reserved) PROVISIONING=(--reserved); shift ;;
    --queued) QUEUED=1; shift ;;
    *) parse_common "$@"; shift "${CONSUMED}" ;;
  esac
done

if [[ -z "${RUNTIME_VERSION}" ]]; then
  RUNTIME_VERSION="$(default_runtime "${ACCELERATOR_TYPE}")"
fi
tpu_flags
if [[ "${QUEUED}" -eq 1 ]]; then
  run gcloud compute tpus queued-resources create "${TPU_NAME}" --node-id="${TPU_NAME}" "${TPU_FLAGS[@]}" \
    --accelerator-type="${ACCELERATOR_TYPE}" --runtime-version="${RUNTIME_VERSION}" "${PROVISIONING[@]}"
else
  run gcloud compute tpus tpu-vm create "${TPU_NAME}" "${TPU_FLAGS[@]}" \
    --accelerator-type="${ACCELERATOR_TYPE}" --version="${RUNTIME_VERSION}" "${PROVISIONING[@]}"
fi
