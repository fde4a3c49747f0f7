"""SFT cold start: the answer-only loss against a direct computation, and a short run that learns,
exports a loadable HF checkpoint and resumes from its checkpoint."""

from __future__ import annotations

import json

import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from models.qwen2_5_vl.config import tiny_config
from models.qwen2_5_vl.inputs import build_model_inputs, collate_model_inputs
from models.qwen2_5_vl.modeling import Qwen2_5_VLForConditionalGeneration
from tempr1_jax import tasks
from tempr1_jax.apps import sft


@pytest.fixture(autouse=True)
def _clear_gin():
    """Leave no gin bindings behind for other tests in this process."""
    yield
    gin.clear_config()


@pytest.fixture(scope="module")
def tiny_model():
    cfg = tiny_config(num_hidden_layers=1, vision_depth=2, vision_fullatt_block_indexes=(1,))
    return Qwen2_5_VLForConditionalGeneration(cfg, rngs=nnx.Rngs(0))


def test_answer_nll_matches_direct_cross_entropy(tiny_model):
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 280, size=(2, 12)).astype(np.int32)
    mask = np.zeros((2, 12), np.int32)
    mask[0, 7:] = 1
    mask[1, 4:9] = 1
    inputs = build_model_inputs(tiny_model.config, ids)
    starts, window = sft.answer_window(mask, multiple=4)
    # Spans of 5 -> 8 positions; row 0's window moved back so that it ends at the last token.
    assert window.shape == (2, 8) and starts.tolist() == [3, 3]
    nll, count, correct = sft.answer_nll(tiny_model, inputs, starts, window, chunk=5)

    logp = jax.nn.log_softmax(tiny_model.forward(inputs), axis=-1)
    picked = np.take_along_axis(np.asarray(logp[:, :-1]), ids[:, 1:, None], axis=-1)[..., 0]
    m = mask[:, 1:]
    np.testing.assert_allclose(float(nll), -(picked * m).sum(), rtol=1e-5)
    assert float(count) == m.sum()
    argmax = np.asarray(jnp.argmax(logp[:, :-1], axis=-1))
    assert float(correct) == ((argmax == ids[:, 1:]) * m).sum()
    # Chunking the LM head changes nothing.
    np.testing.assert_allclose(
        float(sft.answer_nll(tiny_model, inputs, starts, window, chunk=256)[0]), float(nll), rtol=1e-6
    )
    # A wider window (all positions) gives the same sums.
    wide = sft.answer_nll(tiny_model, inputs, *sft.answer_window(mask, width=11), chunk=256)
    np.testing.assert_allclose([float(x) for x in wide], [float(nll), float(count), float(correct)], rtol=1e-6)
    # loss_mean = "sample": each row's mean NLL summed, over the number of rows; the same correct tokens.
    per_row, rows, same = sft.answer_nll(tiny_model, inputs, starts, sft.sample_weights(window), chunk=5)
    np.testing.assert_allclose(float(per_row), -((picked * m).sum(axis=1) / m.sum(axis=1)).sum(), rtol=1e-5)
    assert float(rows) == pytest.approx(2.0) and float(same) == float(correct)


def test_answer_window_rows_and_errors():
    mask = np.zeros((3, 10), np.int32)
    mask[0, 8:] = 1  # left padded: the answer ends the row
    mask[1, 2:5] = 1  # right padded
    starts, window = sft.answer_window(mask)  # row 2 has no answer
    assert window.shape == (3, 9)  # 16 capped at L - 1
    for row in range(3):
        targets = np.zeros(10, np.float32)
        targets[starts[row] + 1 : starts[row] + 10] = window[row]
        np.testing.assert_array_equal(targets, mask[row])
    with pytest.raises(ValueError, match="shorter than an answer span"):
        sft.answer_window(mask, width=2)
    mask[2, 0] = 1
    with pytest.raises(ValueError, match="prompt token"):
        sft.answer_window(mask)


def test_answer_builders_give_reference_answers():
    sample = {"id": "x", "task": "tg", "duration": 10.0, "segments": [[1.0, 2.5]], "query": "q"}
    builders = sft.answer_builders(think=False)
    assert builders["tg"](sample) == "<answer>1 to 2.5</answer>"
    assert builders["tg"](sample) == tasks.get_task("tg").reference_answer(sample)
    assert set(builders) == set(tasks.TASKS)


def test_sft_config_validation():
    with pytest.raises(ValueError, match="micro_batches"):
        sft.SFTConfig(micro_batches=0)
    with pytest.raises(ValueError, match="loss_mean"):
        sft.SFTConfig(loss_mean="row")


def test_sft_scope_only_for_the_optimizer():
    from tempr1_jax import configurables

    configurables.parse_gin(files=["demo.gin"], bindings=["sft/OptimizerConfig.learning_rate = 0.01"])
    sft.check_sft_scope()
    configurables.parse_gin(files=["demo.gin"], bindings=["sft/LoaderConfig.batch_size = 16"])
    with pytest.raises(ValueError, match="sft/LoaderConfig would be ignored"):
        sft.check_sft_scope()


SFT_BINDINGS = [
    "--gin.DataConfig.synthetic_samples_per_task=2",
    "--gin.DataConfig.synthetic_tasks=['tg', 'vhd']",
    "--gin.RolloutConfig.think=False",
    "--gin.SFTConfig.tensorboard=False",
    "--gin.SFTConfig.progress=False",
    "--gin.sft/OptimizerConfig.learning_rate=0.01",
    "--gin.LoaderConfig.batch_size=4",
    "--gin.ModelSetup.tokenizer_vocab_size=300",
    "--gin.CheckpointConfig.async_save=False",
]


@pytest.mark.slow
def test_sft_learns_exports_and_resumes(tmp_path):
    from tempr1_jax import cli

    work = tmp_path / "sft"
    assert cli.main(["sft", "--gin_file", "demo.gin", "--workdir", str(work), "--steps", "6", *SFT_BINDINGS]) == 0
    records = [json.loads(line) for line in (work / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 7))
    assert records[-1]["loss"] < records[0]["loss"]
    assert all(r["answer_tokens"] > 0 for r in records)
    assert (work / "operative_config.gin").is_file()
    exported = Qwen2_5_VLForConditionalGeneration.from_pretrained(work / "hf")
    assert exported.config.text.vocab_size == 300

    # A second run in the same workdir continues after the last checkpoint.
    assert cli.main(["sft", "--gin_file", "demo.gin", "--workdir", str(work), "--steps", "8", *SFT_BINDINGS]) == 0
    records = [json.loads(line) for line in (work / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 9))


def test_common_shape_takes_the_widest_window_of_all_processes(monkeypatch):
    """On several processes the batch takes the largest shape and answer window of all (one global array,
    one compiled step); each row's window still covers exactly its answer tokens after the padding."""
    cfg = tiny_config()
    rows = []
    for n in (7, 10):
        rows.append(build_model_inputs(cfg, np.arange(1, n + 1, dtype=np.int32)[None]))
    inputs = collate_model_inputs(rows, pad_len_to=10, pad_patches_to=0)
    mask = np.zeros((2, 10), np.int32)
    mask[0, 7:] = 1  # left padded: row 0's 7 tokens end with a 3-token answer
    mask[1, 6:] = 1
    other = (2, 40, 0, *inputs.padded_shape[3:], 39)  # another process: longer rows, a wider window

    def common_shape(shape):
        return tuple(max(a, b) for a, b in zip(shape, other, strict=True))

    monkeypatch.setattr(sft.multihost, "common_shape", common_shape)
    trainer = sft.SFTTrainer.__new__(sft.SFTTrainer)  # only the padding settings are needed
    trainer.padding_side, trainer.pad_id = "left", 0
    batch = trainer._common_shape({"inputs": inputs, "completion_mask": mask})
    assert batch["inputs"].input_ids.shape == (2, 40) and batch["window"].shape == (2, 39)
    padded = batch["completion_mask"]
    assert padded.shape == (2, 40) and padded.sum() == mask.sum()
    for row in range(2):
        targets = np.zeros(40, np.float32)
        targets[batch["starts"][row] + 1 : batch["starts"][row] + 40] = batch["window"][row]
        np.testing.assert_array_equal(targets, padded[row])
