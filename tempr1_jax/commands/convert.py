"""`tempr1 convert`: Hugging Face checkpoints <-> orbax parameter checkpoints.

    tempr1 convert hf-to-orbax IN_HF_DIR OUT_ORBAX_DIR [--dtype bfloat16]
    tempr1 convert orbax-to-hf IN_ORBAX_DIR OUT_HF_DIR [--dtype bfloat16] [--max-shard-gb 5] [--layout hub]

The orbax side is the layout the trainer restores (`models.qwen2_5_vl.orbax_io`); the HF side is a
directory that transformers' `Qwen2_5_VLForConditionalGeneration.from_pretrained` loads. Parameters
are converted one tensor at a time; the whole model is held once.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

HELP = "Convert checkpoints between Hugging Face and orbax layouts."
DIRECTIONS = ("hf-to-orbax", "orbax-to-hf")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the command's arguments."""
    parser.add_argument("direction", choices=DIRECTIONS, help="conversion direction")
    parser.add_argument("src", type=pathlib.Path, help="input checkpoint directory")
    parser.add_argument("dst", type=pathlib.Path, help="output directory")
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default=None,
                        help="parameter dtype of the output (default: the input's torch_dtype)")
    parser.add_argument("--max-shard-gb", type=float, default=5.0,
                        help="orbax-to-hf: shard safetensors above this size (GiB)")
    parser.add_argument("--layout", choices=("hub", "transformers5"), default="hub",
                        help="orbax-to-hf: tensor name layout of the written safetensors")


def run(args: argparse.Namespace) -> int:
    """Run the conversion; returns 0 on success, 2 on a bad input directory."""
    from models.qwen2_5_vl import orbax_io

    if not args.src.is_dir():
        print(f"tempr1 convert: input directory {args.src} does not exist", file=sys.stderr)
        return 2
    if args.dst.exists() and any(args.dst.iterdir()):
        print(f"tempr1 convert: output directory {args.dst} is not empty", file=sys.stderr)
        return 2
    if args.direction == "hf-to-orbax":
        orbax_io.hf_to_orbax(args.src, args.dst, dtype=args.dtype)
    else:
        orbax_io.orbax_to_hf(args.src, args.dst, dtype=args.dtype,
                             max_shard_bytes=int(args.max_shard_gb * 1024**3), layout=args.layout)
    print(f"tempr1 convert {args.direction}: wrote {args.dst}")
    return 0
