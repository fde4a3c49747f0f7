"""CheckpointManager round trip (arrays, iterator state, meta; keep-last-K) and MetricsLogger on resume."""

import jax
import jax.numpy as jnp
import numpy as np

from tempr1_jax.training.checkpoints import CheckpointConfig, CheckpointManager, abstract_like
from tempr1_jax.training.metrics_log import MetricsLogger, read_metrics


def test_checkpoint_round_trip_and_retention(tmp_path):
    manager = CheckpointManager(tmp_path / "ckpt", CheckpointConfig(save_every=2, keep=2))
    tree = {"w": jnp.arange(6.0).reshape(2, 3), "step": jnp.int32(0), "rng": jax.random.key_data(jax.random.key(3))}
    for step in range(1, 8):
        tree = {**tree, "w": tree["w"] + 1, "step": jnp.int32(step)}
        manager.save(step, tree, data_state=b"\x00state-%d" % step, meta={"step": step}, force=step == 7)
    manager.wait()
    assert manager.all_steps() == [6, 7]
    arrays, data_state, meta = manager.restore(abstract_like(tree))
    manager.close()
    np.testing.assert_array_equal(np.asarray(arrays["w"]), np.arange(6.0).reshape(2, 3) + 7)
    assert int(arrays["step"]) == 7 and data_state == b"\x00state-7" and meta == {"step": 7}
    np.testing.assert_array_equal(np.asarray(arrays["rng"]), np.asarray(tree["rng"]))


def test_metrics_logger_drops_steps_after_the_restored_checkpoint(tmp_path):
    logger = MetricsLogger(tmp_path, tensorboard=True, progress=False)
    for step in (1, 2, 3):
        logger.log(step, {"loss": np.float32(step), "applied": np.bool_(True), "bad": float("nan")})
    logger.close()
    assert read_metrics(tmp_path)[0] == {"step": 1, "loss": 1.0, "applied": True, "bad": None}
    logger = MetricsLogger(tmp_path, start_step=2, tensorboard=False, progress=False)
    logger.log(3, {"loss": 30.0})
    logger.close()
    assert [(r["step"], r["loss"]) for r in read_metrics(tmp_path)] == [(1, 1.0), (2, 2.0), (3, 30.0)]
    assert any((tmp_path / "tensorboard").iterdir())
