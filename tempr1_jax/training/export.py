"""A training run's policy as a Hugging Face directory (config.json + safetensors + tokenizer).

At the start of a run the trainer records in `workdir/model/` what rebuilds its model: `config.json`
(HF hub form), `setup.json` (the `ModelSetup` the model was built from: base checkpoint or seed,
dtypes, frozen vision tower) and the tokenizer in HF form. At the end it writes `workdir/hf/` with
`export_hf`. `run_to_hf` does the same from a workdir's orbax checkpoint of any kept step: it reads
only the trained parameters (no optimizer state) and takes the frozen ones from the base model.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import shutil
from typing import Any

import jax
from flax import nnx

from data_pipeline import paths
from models.qwen2_5_vl.checkpoint import hf_config_dict
from models.qwen2_5_vl.config import Qwen2_5_VLConfig
from models.qwen2_5_vl.modeling import Qwen2_5_VLForConditionalGeneration
from tempr1_jax.training.checkpoints import CHECKPOINTS_DIR, CheckpointManager
from tempr1_jax.training.model_setup import ModelSetup, base_model, trainable_filter

MODEL_DIR = "model"
SETUP_FILE = "setup.json"
HF_DIR = "hf"


def write_run_model(
    workdir: str | pathlib.Path, model: Qwen2_5_VLForConditionalGeneration, tokenizer: Any, setup: ModelSetup
) -> pathlib.Path:
    """Write `workdir/model/` (config.json, setup.json with absolute paths, tokenizer); returns it."""
    out = paths.as_path(workdir) / MODEL_DIR
    with paths.staged_dir(out) as local:
        (local / "config.json").write_text(json.dumps(hf_config_dict(model), indent=2))
        record = {**dataclasses.asdict(setup), "tiny": dict(setup.tiny)}
        for key in ("checkpoint", "tokenizer"):
            if record[key] is not None:
                record[key] = str(paths.absolute(record[key]))
        (local / SETUP_FILE).write_text(json.dumps(record, indent=2))
        tokenizer.save_pretrained(str(local))
    return out


def export_hf(
    model: Qwen2_5_VLForConditionalGeneration, tokenizer: Any, out: str | pathlib.Path, **save_kwargs: Any
) -> pathlib.Path:
    """Write `model` (see `checkpoint.save_pretrained`, which takes `save_kwargs`) and `tokenizer` (if
    not None) to `out`, replacing it whole: files go to a sibling `.tmp` directory renamed at the end.
    A bucket `out` is deleted, then uploaded from a local directory (not atomic)."""
    if paths.is_remote(out):
        paths.remove_tree(out)
        with paths.staged_dir(out) as local:
            model.save_pretrained(local, **save_kwargs)
            if tokenizer is not None:
                tokenizer.save_pretrained(str(local))
        return paths.as_path(out)
    out = pathlib.Path(out)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, **save_kwargs)
    if tokenizer is not None:
        tokenizer.save_pretrained(str(tmp))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def is_run_dir(path: str | pathlib.Path) -> bool:
    """True for a training workdir: a `checkpoints/` directory and `model/config.json`."""
    path = paths.as_path(path)
    return (path / CHECKPOINTS_DIR).is_dir() and (path / MODEL_DIR / "config.json").is_file()


def restore_policy(
    workdir: str | pathlib.Path,
    step: int | None = None,
    param_dtype: str | None = None,
) -> tuple[Qwen2_5_VLForConditionalGeneration, int]:
    """(policy of the checkpoint of `step`, default the latest, on the host CPU; that step).

    Parameters are stored as `param_dtype` (default: the run's `ModelSetup.param_dtype`).
    ValueError if `workdir` is not a training workdir or holds no such checkpoint.
    """
    workdir = paths.as_path(workdir)
    if not is_run_dir(workdir):
        raise ValueError(
            f"{workdir} is not a training workdir: expected {CHECKPOINTS_DIR}/ and "
            f"{MODEL_DIR}/config.json (written by `tempr1 train`)"
        )
    model_dir = workdir / MODEL_DIR
    record = json.loads((model_dir / SETUP_FILE).read_text())
    # Fields added to ModelSetup after the run take their defaults; removed ones are dropped.
    setup = ModelSetup(**{f.name: record[f.name] for f in dataclasses.fields(ModelSetup) if f.name in record})
    if param_dtype is not None:
        setup = dataclasses.replace(setup, dtype=param_dtype, param_dtype=param_dtype)
    config = Qwen2_5_VLConfig.from_pretrained(paths.local_copy(model_dir))
    manager = CheckpointManager(workdir / CHECKPOINTS_DIR)
    try:
        step = manager.resolve_step(step)
        cpu = jax.local_devices(backend="cpu")[0]
        with jax.default_device(cpu):
            abstract = nnx.eval_shape(
                lambda: Qwen2_5_VLForConditionalGeneration(
                    config,
                    dtype=jax.numpy.dtype(setup.dtype),
                    param_dtype=jax.numpy.dtype(setup.param_dtype),
                    rngs=nnx.Rngs(0),
                )
            )
            graphdef, params, frozen = nnx.split(abstract, trainable_filter(setup.freeze_vision), ...)
            if jax.tree.leaves(frozen):
                frozen = _frozen_params(setup, config)
            sharding = jax.sharding.SingleDeviceSharding(cpu)
            params = manager.restore_params(
                jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), params), step
            )
    finally:
        manager.close()
    return nnx.merge(graphdef, params, frozen), step


def _frozen_params(setup: ModelSetup, config: Qwen2_5_VLConfig) -> Any:
    """The parameters a run did not train (not in its checkpoints): those of its base model."""
    if setup.checkpoint is not None and not paths.as_path(setup.checkpoint).is_dir():
        raise ValueError(
            f"the run froze parameters (ModelSetup.freeze_vision) that come from its base "
            f"checkpoint {setup.checkpoint}, which no longer exists"
        )
    _, _, frozen = nnx.split(base_model(setup, config), trainable_filter(setup.freeze_vision), ...)
    return frozen


def run_to_hf(
    workdir: str | pathlib.Path,
    out: str | pathlib.Path,
    step: int | None = None,
    dtype: str | None = None,
    **save_kwargs: Any,
) -> int:
    """Write the policy of `workdir`'s checkpoint of `step` (default: the latest) and the run's tokenizer
    (if recorded) as an HF directory `out`; returns the step exported. See `restore_policy`."""
    import transformers

    model, step = restore_policy(workdir, step, dtype)
    model_dir = paths.as_path(workdir) / MODEL_DIR
    tokenizer = (
        transformers.AutoTokenizer.from_pretrained(str(paths.local_copy(model_dir)))
        if (model_dir / "tokenizer_config.json").is_file()
        else None
    )
    export_hf(model, tokenizer, out, **save_kwargs)
    return step
