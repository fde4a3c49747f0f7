"""`TrainStep.init_state` creates AdamW's moments on their parameters' shardings (never on one device)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from models.qwen2_5_vl import sharding as sharding_lib
from tempr1_jax.training.optimizer import OptimizerConfig, make_optimizer
from tempr1_jax.training.train_step import TrainStep


def test_moments_sharded_like_params():
    if len(jax.devices()) < 8:
        pytest.skip("needs 8 devices")
    mesh = sharding_lib.make_mesh(2, 2, 2)
    params = {
        "w": jax.device_put(jnp.ones((8, 4)), NamedSharding(mesh, P(("data", "fsdp"), "tensor"))),
        "b": jax.device_put(jnp.ones((4,)), NamedSharding(mesh, P("tensor"))),
    }
    step = TrainStep(lambda p, f, b: (jnp.sum(p["w"]), jnp.ones(()), {}), make_optimizer(OptimizerConfig(), 10))
    state = step.init_state(params)
    moments = [leaf for leaf in jax.tree.leaves(state.opt_state) if leaf.ndim > 0]
    assert len(moments) == 4  # mu and nu of both params
    for leaf in moments:
        want = params["w"] if leaf.shape == (8, 4) else params["b"]
        assert leaf.sharding.is_equivalent_to(want.sharding, leaf.ndim)
    for leaf in jax.tree.leaves(state.opt_state):
        assert isinstance(leaf.sharding, NamedSharding) and leaf.sharding.mesh == mesh
