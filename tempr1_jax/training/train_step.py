"""A generic jitted update for any loss written as (sum, count): accumulation, clipping, AdamW, NaN skips.

`loss_fn(params, frozen, batch) -> (total, count, aux)` returns the loss *sum* over the micro-batch, its
normaliser (sequences or tokens) and a dict of metric sums. `TrainStep.accumulate` adds the gradient of
`total` into an `Accumulator` (float32), micro-batch by micro-batch; `TrainStep.apply` divides by the
summed count, so K micro-batches give the full batch's gradient whatever the split. An update whose loss
or gradient is not finite leaves params and optimizer state untouched and increments `skipped`; an
update with count 0 (every sequence filtered) is not applied either.

Sharding: params and optimizer state live on the mesh with the NamedShardings they were placed with;
`apply` is jitted with those shardings as in/out shardings and donates the old state; `accumulate`
donates the accumulator and constrains gradients to the parameter shardings. The same code runs on one
device or any (data, fsdp, tensor) mesh.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

LossFn = Callable[[Any, Any, Any], tuple[jax.Array, jax.Array, dict[str, jax.Array]]]


@flax.struct.dataclass
class TrainState:
    """What an update changes: trainable params, optimizer state and counters (int32 scalars)."""

    step: jax.Array  # updates applied
    skipped: jax.Array  # updates skipped because the loss or gradient was not finite
    params: Any
    opt_state: Any


@flax.struct.dataclass
class Accumulator:
    """Running sums over micro-batches: gradients of the loss sum, the loss sum, the count, metric sums."""

    grads: Any
    total: jax.Array
    count: jax.Array
    aux: dict[str, jax.Array]


def shardings_of(tree: Any) -> Any:
    """The sharding of every array leaf of `tree` (for jit in/out shardings)."""
    return jax.tree.map(lambda x: x.sharding, tree)


class TrainStep:
    """Jitted `accumulate` / `apply` for `loss_fn` and an optax optimizer; see the module docstring."""

    def __init__(self, loss_fn: LossFn, optimizer: optax.GradientTransformation) -> None:
        self.loss_fn = loss_fn
        self.optimizer = optimizer
        self.value_and_grad = jax.value_and_grad(lambda p, f, b: _split_aux(loss_fn(p, f, b)), has_aux=True)
        self._accumulate = jax.jit(self._accumulate_impl, donate_argnums=(3,))
        self._apply: Callable | None = None
        self._state_shardings: Any = None
        self._param_shardings: Any = None
        self._zeros: Callable | None = None

    def init_state(self, params: Any) -> TrainState:
        """A fresh TrainState; optimizer state is created on the params' shardings (moments sharded
        like their parameters, everything else replicated), never gathered on one device."""
        opt_state = jax.jit(self.optimizer.init, out_shardings=_opt_shardings(self.optimizer, params))(params)
        state = TrainState(
            step=jnp.zeros((), jnp.int32), skipped=jnp.zeros((), jnp.int32), params=params, opt_state=opt_state
        )
        return self.place_state(state, params)

    def place_state(self, state: TrainState, params_like: Any) -> TrainState:
        """Replicate every leaf that is not already on the params' mesh (counters, optimizer counts)
        so that the state's shardings are stable from the first update on; fix the jit shardings."""
        leaf = jax.tree.leaves(params_like)[0]
        sharding = getattr(leaf, "sharding", None)
        if isinstance(sharding, jax.sharding.NamedSharding):
            replicated = jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec())
            state = jax.tree.map(
                lambda x: x if isinstance(x.sharding, jax.sharding.NamedSharding) else jax.device_put(x, replicated),
                state,
            )
        self._set_shardings(shardings_of(state))
        return state

    def _set_shardings(self, state_shardings: Any) -> None:
        self._state_shardings = state_shardings
        named = all(isinstance(x, jax.sharding.NamedSharding) for x in jax.tree.leaves(state_shardings.params))
        self._param_shardings = state_shardings.params if named else None
        self._apply = None  # re-jitted on the next apply with the new shardings

    def zeros(self, params: Any, frozen: Any, batch: Any) -> Accumulator:
        """An all-zero accumulator shaped like the gradients and metric sums of `loss_fn`.

        Its shapes depend only on the params, so the jitted constructor is built once.
        """
        if self._zeros is None:
            (_, (_, aux)), grads = jax.eval_shape(self.value_and_grad, params, frozen, batch)

            def make() -> Accumulator:
                return Accumulator(
                    grads=jax.tree.map(lambda g: jnp.zeros(g.shape, jnp.float32), grads),
                    total=jnp.zeros((), jnp.float32),
                    count=jnp.zeros((), jnp.float32),
                    aux=jax.tree.map(lambda a: jnp.zeros(a.shape, jnp.float32), aux),
                )

            out_shardings = None
            if self._param_shardings is not None:
                mesh = jax.tree.leaves(self._param_shardings)[0].mesh
                rep = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
                out_shardings = Accumulator(
                    grads=self._param_shardings, total=rep, count=rep, aux=jax.tree.map(lambda _: rep, aux)
                )
            self._zeros = jax.jit(make, out_shardings=out_shardings)
        return self._zeros()

    def accumulate(self, state: TrainState, frozen: Any, batch: Any, acc: Accumulator | None = None) -> Accumulator:
        """Add one micro-batch's loss sum, count, metric sums and gradient to `acc` (donated)."""
        if acc is None:
            acc = self.zeros(state.params, frozen, batch)
        return self._accumulate(state.params, frozen, batch, acc)

    def _accumulate_impl(self, params, frozen, batch, acc: Accumulator) -> Accumulator:
        (total, (count, aux)), grads = self.value_and_grad(params, frozen, batch)
        grads = jax.tree.map(lambda a, g: a + g.astype(jnp.float32), acc.grads, grads)
        if self._param_shardings is not None:
            grads = jax.lax.with_sharding_constraint(grads, self._param_shardings)
        return Accumulator(
            grads=grads,
            total=acc.total + total.astype(jnp.float32),
            count=acc.count + count.astype(jnp.float32),
            aux=jax.tree.map(lambda a, x: a + x.astype(jnp.float32), acc.aux, aux),
        )

    def apply(self, state: TrainState, acc: Accumulator) -> tuple[TrainState, dict[str, jax.Array]]:
        """Turn the accumulated sums into one optimizer update (or a counted skip); `state` is donated."""
        if self._state_shardings is None:
            self._set_shardings(shardings_of(state))
        if self._apply is None:
            shardings = (self._state_shardings, shardings_of(acc))
            self._apply = jax.jit(
                self._apply_impl,
                donate_argnums=(0,),
                in_shardings=shardings,
                out_shardings=(self._state_shardings, None),
            )
        return self._apply(state, acc)

    def _apply_impl(self, state: TrainState, acc: Accumulator):
        denom = jnp.maximum(acc.count, 1.0)
        loss = acc.total / denom
        grads = jax.tree.map(lambda g: g / denom, acc.grads)
        grad_norm = optax.tree.norm(grads)
        grads = jax.tree.map(lambda g, p: g.astype(p.dtype), grads, state.params)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        ok = finite & (acc.count > 0)
        updates, opt_state = self.optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)

        def keep(new, old):
            return jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, old)

        new_state = TrainState(
            step=state.step + ok.astype(jnp.int32),
            skipped=state.skipped + jnp.logical_not(finite).astype(jnp.int32),
            params=keep(params, state.params),
            opt_state=keep(opt_state, state.opt_state),
        )
        metrics = {"loss": loss, "grad_norm": grad_norm, "count": acc.count, "applied": ok, **acc.aux}
        return new_state, metrics

    def __call__(
        self, state: TrainState, frozen: Any, microbatches: Sequence[Any]
    ) -> tuple[TrainState, dict[str, jax.Array]]:
        """Accumulate over `microbatches`, then apply one update."""
        acc = None
        for batch in microbatches:
            acc = self.accumulate(state, frozen, batch, acc)
        if acc is None:
            raise ValueError("TrainStep needs at least one micro-batch")
        return self.apply(state, acc)


def _opt_shardings(optimizer: optax.GradientTransformation, params: Any) -> Any:
    """Out shardings of `optimizer.init(params)`: every sub-tree shaped like `params` (AdamW's mu and
    nu) takes the params' shardings, other leaves (counts) are replicated; None off a mesh."""
    shardings = shardings_of(params)
    leaves = jax.tree.leaves(shardings)
    if not leaves or not all(isinstance(s, jax.sharding.NamedSharding) for s in leaves):
        return None
    replicated = jax.sharding.NamedSharding(leaves[0].mesh, jax.sharding.PartitionSpec())
    structure = jax.tree.structure(params)

    def like_params(x: Any) -> bool:
        return not isinstance(x, jax.ShapeDtypeStruct) and jax.tree.structure(x) == structure

    return jax.tree.map(
        lambda x: shardings if like_params(x) else replicated,
        jax.eval_shape(optimizer.init, params),
        is_leaf=like_params,
    )


def _split_aux(out: tuple[jax.Array, jax.Array, dict[str, jax.Array]]):
    total, count, aux = out
    return total, (count, aux)
