"""Convert Qwen2.5-VL checkpoints between HF safetensors and orbax (same arguments as `tempr1 convert`).

python tools/convert_checkpoint.py hf-to-orbax IN OUT
python tools/convert_checkpoint.py orbax-to-hf IN OUT [--step N]   # IN: orbax params dir or train workdir
"""

from __future__ import annotations

import argparse
import sys

from tempr1_jax.commands import convert


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="convert_checkpoint", description=convert.HELP)
    convert.add_arguments(parser)
    return convert.run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
