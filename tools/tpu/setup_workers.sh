#!/usr/bin/env bash
# Copy this checkout to every worker of a TPU VM and install jax[tpu] and the project there.
#   tools/tpu/setup_workers.sh --name tempr1 --zone us-east5-a [--jax-version 0.10.2] [--dry-run]
set -euo pipefail
# shellcheck source=tools/tpu/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

SRC_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
REMOTE_DIR="tempr1-jax"
JAX_VERSION=""
ARCHIVE="${TMPDIR:-/tmp}/tempr1-jax-src.tar.gz"

usage() {
  cat <<USAGE
usage: $0 [options]
  --src DIR          project checkout to copy (default: this repository)
  --remote-dir DIR   directory on each worker, relative to the home directory (default tempr1-jax)
  --jax-version V    pin jax[tpu]==V (default: the newest release)
${COMMON_USAGE}
USAGE
}

while [[ $# -gt 0 ]]; do
  case "$1" in
    --src) need_value "$1" $#; SRC_DIR="$2"; shift 2 ;;
    --remote-dir) need_value "$1" $#; REMOTE_DIR="$2"; shift 2 ;;
    --jax-version) need_value "$1" $#; JAX_VERSION="$2"; shift 2 ;;
    *) parse_common "$@"; shift "${CONSUMED}" ;;
  esac
done

JAX_SPEC="jax[tpu]"
if [[ -n "${JAX_VERSION}" ]]; then
  JAX_SPEC="jax[tpu]==${JAX_VERSION}"
fi
tpu_flags

if git -C "${SRC_DIR}" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  # A checkout ships what git tracks or would track: no virtualenvs, runs or other ignored files.
  FILE_LIST="${ARCHIVE%.tar.gz}.files"
  if [[ "${DRY_RUN}" -eq 0 ]]; then
    git -C "${SRC_DIR}" ls-files -z --cached --others --exclude-standard |
      while IFS= read -r -d '' f; do
        if [[ -e "${SRC_DIR}/${f}" ]]; then printf '%s\0' "${f}"; fi
      done >"${FILE_LIST}"
  fi
  run tar --create --gzip --file="${ARCHIVE}" --directory="${SRC_DIR}" --null --files-from="${FILE_LIST}"
else
  run tar --create --gzip --file="${ARCHIVE}" --directory="${SRC_DIR}" \
    --exclude=.git --exclude=runs --exclude=__pycache__ --exclude='*.egg-info' --exclude='*venv' .
fi
run gcloud compute tpus tpu-vm scp "${ARCHIVE}" "${TPU_NAME}:~/tempr1-jax-src.tar.gz" \
  --worker=all "${TPU_FLAGS[@]}"
# One venv per worker; the project is installed editable so that launch_train.sh can run `tempr1`.
REMOTE_SCRIPT="set -e; mkdir -p ~/${REMOTE_DIR}; tar --extract --gzip --file ~/tempr1-jax-src.tar.gz --directory ~/${REMOTE_DIR}; \
python3 -m venv ~/tempr1-venv; ~/tempr1-venv/bin/pip install --quiet --upgrade pip; \
~/tempr1-venv/bin/pip install --quiet \"${JAX_SPEC}\" -f https://storage.googleapis.com/jax-releases/libtpu_releases.html; \
~/tempr1-venv/bin/pip install --quiet -e ~/${REMOTE_DIR}; \
~/tempr1-venv/bin/python -c \"import jax; print(jax.process_index(), jax.local_device_count(), jax.device_count())\""
run gcloud compute tpus tpu-vm ssh "${TPU_NAME}" --worker=all "${TPU_FLAGS[@]}" --command="${REMOTE_SCRIPT}"
