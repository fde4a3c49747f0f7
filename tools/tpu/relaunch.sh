#!/usr/bin/env bash
# Keep a training run going on Spot or queued TPU capacity until it finishes.
#   tools/tpu/relaunch.sh --name tempr1 --accelerator-type v5p-128 [--queued] --gin_file configs/tempr1_7b.gin \
#     --workdir /mnt/shared/run1 [--mesh data=1,fsdp=64,tensor=1] [--dry-run] [-- EXTRA tempr1 train ARGS]
# Each attempt: if the TPU VM is not READY (absent, preempted, ...), delete what is left of it, create it
# again (create_vm.sh, Spot or through a queued resource) and set up its workers (setup_workers.sh); then run
# `tempr1 train` on every worker in the foreground (launch_train.sh --foreground). The trainer resumes from
# the newest checkpoint in --workdir (a file system or bucket every host shares) and, when preempted, saves
# and exits 0 on every host. The loop ends when the run's history (WORKDIR/run_history.jsonl) says it
# finished, or with status 1 when the run fails on a healthy VM or after --max-attempts launches.
# --dry-run prints the commands of one attempt.
set -euo pipefail
# shellcheck source=tools/tpu/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ACCELERATOR_TYPE="v5p-128"
RUNTIME_VERSION=""
QUEUED=0
MAX_ATTEMPTS=100
WAIT_SECONDS=60
WORKDIR=""
LAUNCH_ARGS=()
SETUP_ARGS=()
EXTRA=()

usage() {
  cat <<USAGE
usage: $0 --gin_file FILE --workdir DIR [options] [-- extra tempr1 train arguments]
  --gin_file FILE          gin config, relative to the project (repeatable)
  --workdir DIR            run directory every host shares (a mounted file system or a gs:// bucket path)
  --mesh SPEC              mesh shortcut, e.g. data=1,fsdp=64,tensor=1
  --accelerator-type TYPE  as create_vm.sh (default v5p-128)
  --version VERSION        TPU runtime image (default: create_vm.sh's for the accelerator)
  --queued                 get the VM through a queued resource (waits for capacity) instead of a Spot create
  --jax-version V          pin jax[tpu]==V on the workers (setup_workers.sh)
  --remote-dir DIR         project directory on the workers (default tempr1-jax)
  --max-attempts N         give up after N launches (default 100)
  --wait SECONDS           pause between attempts and between queue polls (default 60)
${COMMON_USAGE}
USAGE
}

while [[ $# -gt 0 ]]; do
  case "$1" in
    --gin_file | --mesh) need_value "$1" $#; LAUNCH_ARGS+=("$1" "$2"); shift 2 ;;
    --workdir) need_value "$1" $#; WORKDIR="$2"; LAUNCH_ARGS+=("$1" "$2"); shift 2 ;;
    --remote-dir) need_value "$1" $#; LAUNCH_ARGS+=("$1" "$2"); SETUP_ARGS+=("$1" "$2"); shift 2 ;;
    --jax-version) need_value "$1" $#; SETUP_ARGS+=("$1" "$2"); shift 2 ;;
    --accelerator-type) need_value "$1" $#; ACCELERATOR_TYPE="$2"; shift 2 ;;
    --version) need_value "$1" $#; RUNTIME_VERSION="$2"; shift 2 ;;
    --queued) QUEUED=1; shift ;;
    --max-attempts) need_value "$1" $#; MAX_ATTEMPTS="$2"; shift 2 ;;
    --wait) need_value "$1" $#; WAIT_SECONDS="$2"; shift 2 ;;
    --) shift; EXTRA=("$@"); break ;;
    *) parse_common "$@"; shift "${CONSUMED}" ;;
  esac
done

[[ " ${LAUNCH_ARGS[*]} " == *" --gin_file "* ]] || die "at least one --gin_file is required"
[[ -n "${WORKDIR}" ]] || die "--workdir is required"
[[ "${MAX_ATTEMPTS}" =~ ^[1-9][0-9]*$ ]] || die "--max-attempts must be a positive integer, got '${MAX_ATTEMPTS}'"
[[ "${WAIT_SECONDS}" =~ ^[0-9]+$ ]] || die "--wait must be a number of seconds, got '${WAIT_SECONDS}'"

tpu_flags
# What every child script takes: the VM, its zone and project, and --dry-run.
COMMON=(--name "${TPU_NAME}" --zone "${TPU_ZONE}")
if [[ -n "${TPU_PROJECT}" ]]; then
  COMMON+=(--project "${TPU_PROJECT}")
fi
if [[ "${DRY_RUN}" -eq 1 ]]; then
  COMMON+=(--dry-run)
fi
CREATE_ARGS=(--accelerator-type "${ACCELERATOR_TYPE}")
if [[ -n "${RUNTIME_VERSION}" ]]; then
  CREATE_ARGS+=(--version "${RUNTIME_VERSION}")
fi
if [[ "${QUEUED}" -eq 1 ]]; then
  CREATE_ARGS+=(--queued --spot)
else
  CREATE_ARGS+=(--spot)
fi

say() {
  echo "relaunch: $*" >&2
}

# query CMD...: CMD's output, or nothing if it fails (a resource that does not exist); nothing on --dry-run.
query() {
  if [[ "${DRY_RUN}" -eq 0 ]]; then
    "$@" 2>/dev/null || true
  fi
}

vm_state() {
  query gcloud compute tpus tpu-vm describe "${TPU_NAME}" "${TPU_FLAGS[@]}" --format="value(state)"
}

queue_state() {
  query gcloud compute tpus queued-resources describe "${TPU_NAME}" "${TPU_FLAGS[@]}" --format="value(state.state)"
}

# provision: make the VM READY, re-creating and setting it up if needed; non-zero if that failed (no
# capacity, a failed queued resource). Called as an `if` condition, where `set -e` does not apply.
provision() {
  local state
  state="$(vm_state)"
  if [[ "${state}" == READY ]]; then
    return 0
  fi
  say "TPU VM ${TPU_NAME} is ${state:-absent}; creating it"
  if [[ "${QUEUED}" -eq 1 && -n "$(queue_state)" ]]; then
    run gcloud compute tpus queued-resources delete "${TPU_NAME}" "${TPU_FLAGS[@]}" --force --quiet || return 1
  elif [[ -n "${state}" ]]; then
    run gcloud compute tpus tpu-vm delete "${TPU_NAME}" "${TPU_FLAGS[@]}" --quiet || return 1
  fi
  bash "${HERE}/create_vm.sh" "${COMMON[@]}" "${CREATE_ARGS[@]}" || return 1
  if [[ "${QUEUED}" -eq 1 && "${DRY_RUN}" -eq 0 ]]; then
    while true; do
      state="$(queue_state)"
      case "${state}" in
        ACTIVE) break ;;
        FAILED | SUSPENDED | "") say "queued resource ${TPU_NAME} is ${state:-gone}"; return 1 ;;
        *) say "queued resource ${TPU_NAME} is ${state}; waiting"; sleep "${WAIT_SECONDS}" ;;
      esac
    done
  fi
  bash "${HERE}/setup_workers.sh" "${COMMON[@]}" "${SETUP_ARGS[@]}" || return 1
}

# last_event: the last line of the run's history (read on worker 0, or from the bucket).
last_event() {
  if [[ "${WORKDIR}" == gs://* ]]; then
    query gcloud storage cat "${WORKDIR%/}/run_history.jsonl" | tail -n 1
  else
    query gcloud compute tpus tpu-vm ssh "${TPU_NAME}" --worker=0 "${TPU_FLAGS[@]}" \
      --command="tail -n 1 $(quote "${WORKDIR%/}/run_history.jsonl")"
  fi
}

for ((attempt = 1; attempt <= MAX_ATTEMPTS; attempt++)); do
  say "attempt ${attempt} of ${MAX_ATTEMPTS}"
  if provision; then
    status=0
    bash "${HERE}/launch_train.sh" "${COMMON[@]}" --foreground "${LAUNCH_ARGS[@]}" -- "${EXTRA[@]}" || status=$?
    if [[ "${DRY_RUN}" -eq 1 ]]; then
      exit 0
    fi
    if [[ "${status}" -eq 0 && "$(last_event)" == *'"event": "finished"'* ]]; then
      say "the run finished"
      exit 0
    fi
    if [[ "${status}" -ne 0 && "$(vm_state)" == READY ]]; then
      say "the run failed (status ${status}) on a READY VM: not a preemption; see ~/tempr1-train.log on the workers"
      exit 1
    fi
    say "the run stopped before its last step (status ${status}); relaunching"
  fi
  if [[ "${DRY_RUN}" -eq 1 ]]; then
    exit 0
  fi
  sleep "${WAIT_SECONDS}"
done
say "gave up after ${MAX_ATTEMPTS} attempts"
exit 1
