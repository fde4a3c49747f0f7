# shellcheck shell=bash
# Shared helpers for the TPU VM scripts: option defaults, --dry-run and command echoing.
# Sourced by create_vm.sh, setup_workers.sh, launch_train.sh and sync_checkpoints.sh.

TPU_NAME="${TPU_NAME:-tempr1}"
TPU_ZONE="${TPU_ZONE:-us-east5-a}"
TPU_PROJECT="${TPU_PROJECT:-}"
DRY_RUN=0

die() {
  echo "error: $*" >&2
  exit 2
}

# quote ARG: ARG as a shell word, single-quoted only when it needs to be (readable dry runs).
quote() {
  if [[ "$1" =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then
    printf '%s' "$1"
  else
    local escaped="${1//\'/\'\\\'\'}"
    printf "'%s'" "${escaped}"
  fi
}

# run CMD...: print the command (one line, shell-quoted) and, unless --dry-run, execute it.
run() {
  local line="+" arg
  for arg in "$@"; do
    line+=" $(quote "${arg}")"
  done
  echo "${line}"
  if [[ "${DRY_RUN}" -eq 0 ]]; then
    "$@"
  fi
}

# The options every tpu-vm command takes, as an array in TPU_FLAGS.
tpu_flags() {
  TPU_FLAGS=(--zone="${TPU_ZONE}")
  if [[ -n "${TPU_PROJECT}" ]]; then
    TPU_FLAGS+=(--project="${TPU_PROJECT}")
  fi
}

# parse_common "$@": handle one option shared by all scripts; sets CONSUMED to the
# number of arguments it used, and exits with usage on an unknown option.
parse_common() {
  case "$1" in
    --dry-run)
      DRY_RUN=1
      # shellcheck disable=SC2034  # read by the sourcing script
      CONSUMED=1 ;;
    --name | --zone | --project)
      [[ $# -ge 2 ]] || die "$1 needs a value"
      case "$1" in
        --name) TPU_NAME="$2" ;;
        --zone) TPU_ZONE="$2" ;;
        --project) TPU_PROJECT="$2" ;;
      esac
      # shellcheck disable=SC2034  # read by the sourcing script
      CONSUMED=2 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown option: $1" ;;
  esac
}

# need_value OPT ARGC: fail unless an option that takes a value got one.
need_value() {
  [[ "$2" -ge 2 ]] || die "$1 needs a value"
}

# shellcheck disable=SC2034  # used in the sourcing scripts' usage text
COMMON_USAGE="  --name NAME        TPU VM name (env TPU_NAME, default tempr1)
  --zone ZONE        zone (env TPU_ZONE, default us-east5-a)
  --project PROJECT  GCP project (env TPU_PROJECT, default: gcloud's configured project)
  --dry-run          print the gcloud commands instead of running them"
