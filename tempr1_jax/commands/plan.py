"""`tempr1 plan`: compile the GRPO train step and the rollout for abstract inputs on N virtual CPU
devices and report per-device memory, FLOPs per step and an MFU estimate for a TPU chip.

No weights are read or allocated: the model is built with `nnx.eval_shape` from the gin config's
model config, and every input is a `jax.ShapeDtypeStruct` with its sharding.
"""

from __future__ import annotations

import argparse
import os

from tempr1_jax.commands.train import parse_mesh
from tempr1_jax.config import add_gin_arguments

HELP = "Compile the train step for abstract inputs and report memory, FLOPs and MFU."
DEVICE_FLAG = "--xla_force_host_platform_device_count"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The plan's options plus the gin options (`--gin_file`, `--gin.NAME=VALUE`)."""
    add_gin_arguments(parser)
    parser.add_argument(
        "--mesh",
        default=None,
        help="mesh axis sizes, e.g. data=1,fsdp=64,tensor=1 (default: the gin config's MeshConfig)",
    )
    parser.add_argument(
        "--devices", type=int, default=None, help="number of virtual CPU devices (default: the mesh size)"
    )
    parser.add_argument("--chip", default="v5p", help="TPU generation for the MFU estimate: v4, v5e, v5p, v6e")
    parser.add_argument(
        "--limit_gib",
        type=float,
        default=None,
        help="per-device memory budget to check against (default: the chip's usable HBM)",
    )
    parser.add_argument(
        "--model_config",
        default=None,
        metavar="CONFIG_JSON",
        help="HF config.json of the model (default: ModelSetup.checkpoint/config.json, else the "
        "published config of that model shipped in models/qwen2_5_vl/published)",
    )
    parser.add_argument(
        "--chips_per_host",
        type=int,
        default=4,
        help="devices per host: prompts per step = LoaderConfig.batch_size x hosts",
    )
    parser.add_argument("--prompts", type=int, default=None, help="override the prompts per step")
    parser.add_argument(
        "--prompt_len",
        type=int,
        default=None,
        help="override the padded prompt length (default: the largest token bucket)",
    )
    parser.add_argument(
        "--patches",
        type=int,
        default=None,
        help="override the padded patches per prompt (default: the largest patch bucket)",
    )
    parser.add_argument("--json", default=None, metavar="FILE", help="also write the report as JSON")
    parser.add_argument("--skip_rollout", action="store_true", help="compile only the train step")


def use_cpu_devices(n: int) -> None:
    """Make JAX start with `n` virtual CPU devices; must run before JAX's backend is initialised.

    Sets both `XLA_FLAGS` (for any child process) and `jax_num_cpu_devices` (for this one). If the
    backend already started with fewer devices (e.g. inside a test session) this raises ValueError.
    """
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if not f.startswith(DEVICE_FLAG)]
    os.environ["XLA_FLAGS"] = " ".join([*flags, f"{DEVICE_FLAG}={n}"])
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax
    from jax._src import xla_bridge

    if not xla_bridge.backends_are_initialized():
        jax.config.update("jax_num_cpu_devices", n)
    elif len(jax.devices()) < n:
        raise ValueError(
            f"JAX already started with {len(jax.devices())} devices, {n} needed: run `tempr1 plan` in a fresh process"
        )


def run(args: argparse.Namespace) -> int:
    """Parse gin (the mesh defaults to its `MeshConfig`), set up the virtual devices (before JAX's
    backend starts), then plan."""
    from tempr1_jax import configurables

    configurables.parse_gin(args)
    if args.mesh is None:
        from tempr1_jax.training.model_setup import MeshConfig

        cfg = MeshConfig()
        mesh_shape = (cfg.data, cfg.fsdp, cfg.tensor)
    else:
        sizes = parse_mesh(args.mesh)
        mesh_shape = (sizes.get("data", 1), sizes.get("fsdp", 1), sizes.get("tensor", 1))
    n = args.devices or mesh_shape[0] * mesh_shape[1] * mesh_shape[2]
    use_cpu_devices(n)
    from tempr1_jax.apps import plan

    report = plan.plan_from_args(args, mesh_shape, n)
    print(plan.format_report(report))
    if args.json:
        plan.write_json(report, args.json)
    return 0 if report["fits"] else 1
