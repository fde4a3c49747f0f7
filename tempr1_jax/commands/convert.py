"""`tempr1 convert`: Hugging Face checkpoints <-> orbax parameter checkpoints.

    tempr1 convert hf-to-orbax IN_HF_DIR OUT_ORBAX_DIR [--dtype bfloat16]
    tempr1 convert orbax-to-hf IN OUT_HF_DIR [--step N] [--dtype bfloat16] [--max-shard-gb 5] [--layout hub]

The orbax side is either a parameter directory (`config.json` + `params/`, `models.qwen2_5_vl.orbax_io`)
or a `tempr1 train` workdir (`checkpoints/` + `model/config.json`, `tempr1_jax.training.export`), whose
checkpoint of `--step` (default: the latest) is exported with the run's tokenizer; only the policy
parameters are read. The HF side is a directory that transformers'
`Qwen2_5_VLForConditionalGeneration.from_pretrained` loads. Parameters are converted one tensor at a
time; the whole model is held once.
"""

from __future__ import annotations

import argparse
import sys

HELP = "Convert checkpoints between Hugging Face and orbax layouts."
DIRECTIONS = ("hf-to-orbax", "orbax-to-hf")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the command's arguments."""
    parser.add_argument("direction", choices=DIRECTIONS, help="conversion direction")
    parser.add_argument("src", type=_path, help="input checkpoint directory (local or a bucket URL)")
    parser.add_argument("dst", type=_path, help="output directory (local or a bucket URL)")
    parser.add_argument(
        "--dtype",
        choices=("float32", "bfloat16", "float16"),
        default=None,
        help="parameter dtype of the output (default: the input's torch_dtype)",
    )
    parser.add_argument(
        "--max-shard-gb", type=float, default=5.0, help="orbax-to-hf: shard safetensors above this size (GiB)"
    )
    parser.add_argument(
        "--layout",
        choices=("hub", "transformers5"),
        default="hub",
        help="orbax-to-hf: tensor name layout of the written safetensors",
    )
    parser.add_argument(
        "--step",
        type=int,
        default=None,
        help="orbax-to-hf from a training workdir: checkpoint step (default: the latest)",
    )


def _path(text: str):
    """A local path or a bucket URL (`data_pipeline.paths`); argparse reports a mangled URL."""
    from data_pipeline.paths import as_path

    return as_path(text)


def run(args: argparse.Namespace) -> int:
    """Run the conversion; returns 0 on success, 2 on a bad input directory or step."""
    try:
        what = _convert(args)
    except ValueError as e:
        print(f"tempr1 convert: {e}", file=sys.stderr)
        return 2
    print(f"tempr1 convert {args.direction}: wrote {args.dst}{what}")
    return 0


def _convert(args: argparse.Namespace) -> str:
    """Do the conversion; returns a note for the summary line; ValueError on bad input."""
    from data_pipeline.paths import local_copy, staged_dir
    from models.qwen2_5_vl import orbax_io

    if not args.src.is_dir():
        raise ValueError(f"input directory {args.src} does not exist")
    if args.dst.exists() and any(args.dst.iterdir()):
        raise ValueError(f"output directory {args.dst} is not empty")
    if args.direction == "hf-to-orbax":
        with staged_dir(args.dst) as dst:  # models/ writes local directories; a bucket gets an upload
            orbax_io.hf_to_orbax(local_copy(args.src), dst, dtype=args.dtype)
        return ""
    save_kwargs = {"max_shard_bytes": int(args.max_shard_gb * 1024**3), "layout": args.layout}
    if (args.src / orbax_io.PARAMS_DIR).is_dir() and (args.src / "config.json").is_file():
        if args.step is not None:
            raise ValueError(f"--step applies to a training workdir, but {args.src} is an orbax parameter directory")
        with staged_dir(args.dst) as dst:
            orbax_io.orbax_to_hf(local_copy(args.src), dst, dtype=args.dtype, **save_kwargs)
        return ""
    from tempr1_jax.training import export
    from tempr1_jax.training.checkpoints import CHECKPOINTS_DIR

    if not export.is_run_dir(args.src):
        raise ValueError(
            f"{args.src} is neither an orbax parameter directory (config.json + {orbax_io.PARAMS_DIR}/) nor a "
            f"training workdir ({CHECKPOINTS_DIR}/ + {export.MODEL_DIR}/config.json, written by `tempr1 train`)"
        )
    step = export.run_to_hf(args.src, args.dst, step=args.step, dtype=args.dtype, **save_kwargs)
    return f" (policy of the checkpoint of step {step})"
