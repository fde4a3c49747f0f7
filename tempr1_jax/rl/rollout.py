"""Rollout: G sampled completions per prompt, decoded, scored per task, turned into group advantages.

Generation is jitted (the model's `generate`: one prefill per prompt, the KV cache shared by its G
samples); decoding text and rewards run on the host, vectorised over the whole mixed batch by
`compute_rewards` with one task name per completion. Rows are prompt-major: row p * G + g.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from typing import Any

import gin
import jax
import numpy as np

from models.qwen2_5_vl.generation import generate
from models.qwen2_5_vl.inputs import ModelInputs
from tempr1_jax.rewards import compute_rewards
from tempr1_jax.rl.advantages import STD_FORMS, group_advantages
from tempr1_jax.training.batches import local_rows
from tempr1_jax.training.predictions import decode_completions


@gin.configurable
@dataclasses.dataclass(frozen=True)
class RolloutConfig:
    """Sampling and advantage settings (DESIGN §5 defaults: G = 8, temperature 1.0).

    dynamic_sampling: DAPO's dynamic sampling (`rl.dynamic_sampling`): groups whose rewards are all equal
      are replaced by groups of newly drawn prompts, for at most `max_resample_rounds` extra rollouts a step.
    """

    num_generations: int = 8
    max_new_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    think: bool = True
    advantage_eps: float = 1e-4
    std_form: str = "sample"
    # Extra keyword options of compute_rewards (e.g. {"sigma": 1.0}).
    reward_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    dynamic_sampling: bool = False
    max_resample_rounds: int = 4

    def __post_init__(self) -> None:
        if self.num_generations < 1 or self.max_new_tokens < 1:
            raise ValueError("RolloutConfig.num_generations and max_new_tokens must be >= 1")
        if self.max_resample_rounds < 1:
            raise ValueError(f"RolloutConfig.max_resample_rounds must be >= 1, got {self.max_resample_rounds}")
        if self.std_form not in STD_FORMS:
            raise ValueError(f"RolloutConfig.std_form must be one of {STD_FORMS}, got {self.std_form!r}")


@dataclasses.dataclass
class Rollout:
    """One batch of scored completions (host numpy arrays, N = prompts * G rows)."""

    tokens: np.ndarray  # [N, T] int32, pad after EOS
    mask: np.ndarray  # [N, T] bool, completion tokens up to and including EOS
    texts: list[str]
    tasks: list[str]
    rewards: dict[str, np.ndarray]  # per term ("format", "loc", "total", maybe "cls"), [N]
    advantages: np.ndarray  # [N] float32
    equal_groups: np.ndarray  # [N] bool: the row's group has all-equal total rewards
    generate_s: float = 0.0  # wall time of the jitted generation (tokens on the host)
    score_s: float = 0.0  # wall time of decoding and rewards on the host


def score_completions(
    texts: Sequence[str], samples: Sequence[Mapping[str, Any]], group_size: int, cfg: RolloutConfig
) -> tuple[list[str], dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """(tasks, rewards, advantages, equal-group mask) of prompt-major completions of `samples`."""
    targets = [s for s in samples for _ in range(group_size)]
    tasks = [str(t["task"]) for t in targets]
    rewards = compute_rewards(tasks, list(texts), targets, think=cfg.think, **dict(cfg.reward_options))
    advantages, equal = group_advantages(rewards["total"], group_size, eps=cfg.advantage_eps, std_form=cfg.std_form)
    return tasks, rewards, advantages, equal


def rollout(
    model: Any,
    prompts: ModelInputs,
    samples: Sequence[Mapping[str, Any]],
    tokenizer: Any,
    cfg: RolloutConfig,
    rng: jax.Array,
    *,
    eos_token_id: int | Sequence[int],
    pad_token_id: int,
    mesh: Any = None,
    layout: str = "fsdp_tensor",
) -> Rollout:
    """Sample `cfg.num_generations` completions per prompt with `model.generate`, then score them.

    With `mesh`, the KV cache is sharded over it in `layout` (batch over data x fsdp, heads over tensor).
    """
    rows = prompts.input_ids.shape[0]
    if isinstance(prompts.input_ids, jax.Array) and not prompts.input_ids.is_fully_addressable:
        rows //= jax.process_count()  # `samples` are this process's rows of the global batch (`place_rows`)
    if len(samples) != rows:
        raise ValueError(f"{len(samples)} samples for {rows} prompt rows")
    t0 = time.perf_counter()
    out = generate(
        model,
        prompts,
        max_new_tokens=cfg.max_new_tokens,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        top_k=cfg.top_k,
        num_return_sequences=cfg.num_generations,
        rng=rng,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        return_dict=True,
        mesh=mesh,
        layout=layout,
    )
    tokens = local_rows(out.tokens).astype(np.int32)
    mask = local_rows(out.mask).astype(bool)
    t1 = time.perf_counter()
    eos = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)
    texts = decode_completions(tokenizer, tokens, mask, drop_ids=[*eos, pad_token_id])
    tasks, rewards, advantages, equal = score_completions(texts, samples, cfg.num_generations, cfg)
    return Rollout(tokens, mask, texts, tasks, rewards, advantages, equal, t1 - t0, time.perf_counter() - t1)


def reward_metrics(r: Rollout) -> dict[str, float]:
    """Mean and std of every reward term, overall and per task, plus completion lengths."""
    out: dict[str, float] = {}
    tasks = np.asarray(r.tasks)
    for term, values in r.rewards.items():
        name = "reward" if term == "total" else f"reward_{term}"
        out[f"{name}_mean"] = float(np.mean(values))
        out[f"{name}_std"] = float(np.std(values))
        for task in sorted(set(r.tasks)):
            sel = values[tasks == task]
            out[f"{task}/{name}_mean"] = float(np.mean(sel))
            out[f"{task}/{name}_std"] = float(np.std(sel))
    lengths = r.mask.sum(axis=1)
    out["completion_length_mean"] = float(lengths.mean())
    out["completion_length_max"] = float(lengths.max())
    out["equal_group_fraction"] = float(r.equal_groups.mean())
    return out
