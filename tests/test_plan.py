"""`tempr1 plan`: analytic FLOPs, chips, and compiling the GRPO update and the rollout for abstract
inputs on a small config; the paper's 7B configs in a fresh process (`pytest -m full_plan`)."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

from models.qwen2_5_vl.config import Qwen2_5_VLConfig, tiny_config
from tempr1_jax.apps import plan

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHAPES = plan.StepShapes(prompts=4, group=2, prompt_len=64, completion_len=8, patches=16, micro_batch=2)


def test_chips():
    assert plan.get_chip("v5p").peak_tflops == 459.0
    assert {c: plan.get_chip(c).peak_tflops for c in ("v5e", "v4", "v6e")} == {"v5e": 197.0, "v4": 275.0, "v6e": 918.0}
    with pytest.raises(ValueError, match="unknown chip"):
        plan.get_chip("v9")


def test_analytic_flops_by_hand():
    cfg = tiny_config()
    text, vision = plan._matmul_params(cfg)
    t = cfg.text
    width = t.num_attention_heads * t.head_dim
    fwd = lambda tokens, ctx: tokens * (2 * text + 4 * t.num_hidden_layers * width * ctx)
    seq = fwd(72, 72) + 2 * vision * 16
    flops = plan.analytic_flops(cfg, SHAPES)
    # Train: forward + backward (3x forward) of the policy plus one reference forward, for 8 sequences.
    assert flops["train"] == pytest.approx(8 * seq * 4)
    assert flops["prefill"] == pytest.approx(4 * (fwd(64, 64) + 2 * vision * 16))
    assert flops["decode"] == pytest.approx(8 * fwd(8, 64 + 4))
    no_kl = plan.analytic_flops(cfg, plan.StepShapes(**{**SHAPES.__dict__, "kl": False}))
    assert no_kl["train"] == pytest.approx(8 * seq * 3)


def test_seven_b_param_count(hf_configs_dir):
    cfg = Qwen2_5_VLConfig.from_pretrained(hf_configs_dir / "qwen2_5_vl_7b_instruct.config.json")
    text, vision = plan._matmul_params(cfg)
    assert 8.2e9 < cfg.num_params() < 8.4e9
    assert 0.6e9 < vision < 0.7e9


def test_published_config_when_the_checkpoint_is_absent(hf_configs_dir, tmp_path):
    shipped = plan._checkpoint_config(str(tmp_path / "Qwen2.5-VL-7B-Instruct"))
    assert shipped.endswith("published/qwen2_5_vl_7b_instruct.config.json")
    assert json.loads(pathlib.Path(shipped).read_text()) == json.loads(
        (hf_configs_dir / "qwen2_5_vl_7b_instruct.config.json").read_text()
    )
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "config.json").write_text("{}")
    assert plan._checkpoint_config(str(tmp_path / "mine")) == str(tmp_path / "mine" / "config.json")


@pytest.mark.slow
def test_plan_compiles_a_small_config_on_a_mesh():
    import jax

    assert len(jax.devices()) == 8, f"needs 8 fake CPU devices (tests/conftest.py), have {len(jax.devices())}"
    report = plan.plan(
        tiny_config(num_hidden_layers=1, vision_depth=2, vision_fullatt_block_indexes=(1,)),
        SHAPES,
        (2, 2, 2),
        plan.get_chip("v5e"),
        dtype="float32",
        layout="fsdp_tensor_sequence",
        remat=True,
        reference_dtype="bfloat16",
        text_attn_block=32,
        cast_weights=True,
        decoder_chunks=2,
        prefill_chunks=2,
    )
    assert report["choices"] == {
        "layout": "fsdp_tensor_sequence",
        "remat": True,
        "micro_batches": 2,
        "micro_batch_sequences": 4,
        "reference_dtype": "bfloat16",
        "moment_dtype": "float32",
        "cast_weights": True,
        "decoder_chunks": 2,
        "prefill_chunks": 2,
        "text_attn_block": 32,
        "vision_attn_block": 256,
    }
    # "auto" resolves for the TPU chip: the splash kernel, compiled here in Pallas interpret mode.
    assert report["attention"]["impl"] == "splash"
    # Per device (batch over 4, heads over 2): 1 of 4 sequences x 2 of 4 heads x 32 of 72 queries x 72 keys,
    # 1 of 2 prompts x 1 of 2 vision heads x 16 x 16 patches; float32.
    assert report["attention"]["score_bytes"] == {"text": 1 * 2 * 32 * 72 * 4, "vision": 1 * 1 * 16 * 16 * 4}
    # The bfloat16 reference is half the float32 params.
    assert 2 * report["resident"]["reference"] == report["resident"]["params"]
    assert set(report["programs"]) == {
        "update_accumulate",
        "update_apply",
        "logprobs",
        "rollout_prefill",
        "rollout_decode",
    }
    for prog in report["programs"].values():
        mem = prog["memory"]
        assert mem["peak_bytes"] >= mem["resident_bytes"] > 0
        assert prog["compile_seconds"] > 0
    assert report["fits"] and 0 < report["mfu"] < 1
    text = plan.format_report(report)
    assert "FITS" in text and "choices: layout fsdp_tensor_sequence, remat on, 2 micro-batches of 4 sequences" in text
    assert all(f"\n{name} " in text for name in report["programs"])
    assert "attention: splash (Pallas kernel, for v5e; compiled here in interpret mode): no score arrays" in text


@pytest.mark.full_plan
def test_plan_command_seven_b_on_64_devices(tmp_path):
    """The paper's 7B config on a 64-device v5p mesh must fit in 90 GiB per device (no weights). About
    3 min on 2 idle cores (five programs compiled for 64 virtual devices): outside the default run, as the
    16 / 32 GiB configs below; the small config above exercises the same code."""
    out = tmp_path / "plan.json"
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tempr1_jax.cli",
            "plan",
            "--gin_file",
            "configs/tempr1_7b.gin",  # shipped config
            "--mesh",
            "data=1,fsdp=16,tensor=4",
            "--devices",
            "64",
            "--chip",
            "v5p",
            "--json",
            str(out),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    report = json.loads(out.read_text())
    assert report["devices"] == 64 and report["params"] > 8e9
    assert result.returncode == 0 and report["fits"], result.stdout[-2000:]


@pytest.mark.full_plan
@pytest.mark.parametrize(
    ("config", "chip", "devices"), [("tempr1_7b_v5e64.gin", "v5e", 64), ("tempr1_7b_v6e16.gin", "v6e", 16)]
)
def test_shipped_16_and_32_gib_configs_fit(tmp_path, config, chip, devices):
    """The paper's 64 prompts x G = 8 step on v5e-64 (15 GiB budget) and v6e-16 (30 GiB), the mesh from
    the config's MeshConfig. About 5 min each on 2 cores: outside the default run (`pytest -m full_plan`)."""
    out = tmp_path / "plan.json"
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    cmd = ["plan", "--gin_file", f"configs/{config}", "--chip", chip, "--devices", str(devices), "--json", str(out)]
    result = subprocess.run(
        [sys.executable, "-m", "tempr1_jax.cli", *cmd], cwd=ROOT, env=env, capture_output=True, text=True, check=False
    )
    report = json.loads(out.read_text())
    assert report["devices"] == devices and report["shapes"]["prompts"] * report["shapes"]["group"] == 512
    assert report["choices"]["layout"] == "fsdp_tensor_sequence"
    assert result.returncode == 0 and report["fits"], result.stdout[-3000:]


def test_use_cpu_devices_after_jax_started(monkeypatch):
    import jax

    from tempr1_jax.commands import plan as plan_command

    monkeypatch.setenv("XLA_FLAGS", os.environ.get("XLA_FLAGS", ""))
    n = len(jax.devices())
    plan_command.use_cpu_devices(n)  # enough devices already: nothing to do
    assert f"--xla_force_host_platform_device_count={n}" in os.environ["XLA_FLAGS"]
    with pytest.raises(ValueError, match="fresh process"):
        plan_command.use_cpu_devices(n + 1)


def test_plan_rejects_bad_mesh():
    from tempr1_jax import cli

    with pytest.raises(ValueError, match="--mesh"):
        cli.main(["plan", "--mesh", "data=two"])
