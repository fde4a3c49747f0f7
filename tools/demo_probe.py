"""What the demo's tiny model can learn, measured in seconds: `python tools/demo_probe.py [options]`.

A stand-alone probe behind README "The demo / What it shows today". It trains the demo's tiny
Qwen2.5-VL (the repo's model code, M-RoPE positions of a real run) on synthetic clips rendered in
memory (`data_pipeline.synthetic`: 28x28 pixels at 4 FPS, one visual token per 0.5 s, new clips every
step) and asks one question per clip as a classification at the last position:

* `start`: the tick (0.5 s) at which the event of the named colour starts (binding + time readout);
* `order`: whether the event of the named colour is the first (0) or the second (1) (binding alone);
* `colour`: the colour of the first event (pixels to words);
* `kth`: the tick at which the k-th event starts, k named by an ordinal token instead of the colour
  (the readout a list answer needs: no binding of words to pixels, but counting events in time).

The prompt is 12 fixed tokens, the clip, then 10-20 filler tokens with the colour word among them.
`--naming F` asks the `colour` question of a fraction F of the training clips besides the main one.
`--clock` draws a progress bar into every frame (`synthetic.render_frame`'s `clock_seconds`), so that
the time can be read from the pixels as well as from the positions.
Prints one JSON line per evaluation (held-out clips): step, training loss, accuracy, and for `start`
the share within one tick and the correlation of predicted and true ticks.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from data_pipeline import synthetic
from data_pipeline.vision_inputs import patchify_video
from models.qwen2_5_vl.config import tiny_config
from models.qwen2_5_vl.inputs import build_model_inputs
from tempr1_jax.training.model_setup import init_model

SPEC = synthetic.SyntheticSpec(
    frame_size=(28, 28),
    fps=4,
    tick=0.5,
    clip_ticks=(10, 19),
    event_ticks={"appears": (2, 5), "moves": (3, 5), "flashes": (1, 2)},
    shape_scale=1.75,
)
COLOURS = list(synthetic.COLOURS)
PREFIX, COLOUR0, ASK, ASK_COLOUR, FILLER, ORDINAL0 = 200, 100, 110, 111, 120, 90  # token ids of the tiny vocabulary
CLASSES = COLOUR0 + len(COLOURS)  # logits read: answer classes 0.. and the colour words
MAX_GROUPS, MAX_FILLER = 40, 20


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--question", choices=("start", "order", "colour", "kth"), default="start")
    p.add_argument("--distractors", type=int, default=1, help="events besides the named one")
    p.add_argument("--naming", type=float, default=0.0, help="share of training clips asked for a colour")
    p.add_argument("--clock", action="store_true", help="a progress bar in the frames (`render_frame`'s clock)")
    p.add_argument("--tie", action="store_true", help="tie input and output embeddings")
    p.add_argument("--init", choices=("fan_in", "hf"), default="fan_in", help="1/sqrt(fan-in) or N(0, 0.02^2)")
    p.add_argument("--actions", default="appears", help="comma-separated: appears, moves, flashes")
    p.add_argument("--shapes", default="square", help="comma-separated: square, circle, triangle")
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--eval_every", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def model_config(args: argparse.Namespace):
    """The demo's tiny model at `args.layers` x `args.width` (4 heads; M-RoPE sections 1:1.5:1.5)."""
    half = args.width // 8  # head_dim / 2 with 4 heads
    temporal = max(1, half // 4)
    height = (half - temporal) // 2
    return tiny_config(
        num_hidden_layers=args.layers,
        hidden_size=args.width,
        intermediate_size=2 * args.width,
        mrope_section=(temporal, height, half - temporal - height),
        vision_depth=2,
        vision_fullatt_block_indexes=(1,),
        tie_word_embeddings=args.tie,
    )


def make_sample(rng: np.random.Generator, args: argparse.Namespace, config, naming: bool):
    """(token ids, pixel values, grid, seconds per group, label) of one new clip."""
    actions, shapes = args.actions.split(","), args.shapes.split(",")
    events, duration = synthetic.random_events(rng, 1 + args.distractors, SPEC, actions, shapes)
    asked = events[int(rng.integers(len(events)))]
    clock = dataclasses.replace(SPEC, clock=args.clock).clock_seconds
    frames = np.stack(
        [
            synthetic.render_frame(i / SPEC.fps, events, *SPEC.frame_size, SPEC.shape_scale, clock)
            for i in range(round(duration * SPEC.fps))
        ]
    )
    pixels, grid, seconds = patchify_video(frames, float(SPEC.fps))
    groups = int(grid[0, 0])
    if groups > MAX_GROUPS:
        raise ValueError(f"a clip of {groups} groups exceeds MAX_GROUPS={MAX_GROUPS}")
    filler = list(FILLER + rng.integers(0, 60, int(rng.integers(MAX_FILLER // 2, MAX_FILLER + 1))))
    question = "colour" if naming else args.question
    # k is drawn only for `kth`, so the other questions keep the random stream (and results) they had.
    k = int(rng.integers(len(events))) if question == "kth" else None
    named = ORDINAL0 + k if k is not None else COLOUR0 + COLOURS.index(asked["colour"])
    filler.insert(int(rng.integers(len(filler) + 1)), named)
    video = [config.vision_start_token_id, *[config.video_token_id] * groups, config.vision_end_token_id]
    ids = [*range(PREFIX, PREFIX + 12), *video, *filler, ASK_COLOUR if naming else ASK]
    first = min(events, key=lambda e: e["start"])
    starts = sorted(e["start"] for e in events)
    label = {
        "start": round(asked["start"] / SPEC.tick),
        "order": starts.index(asked["start"]),
        "colour": COLOUR0 + COLOURS.index(first["colour"]),
        "kth": None if k is None else round(starts[k] / SPEC.tick),
    }[question]
    return ids, pixels, grid, seconds, label


def make_batch(samples: list, config):
    """Left-padded `ModelInputs` of fixed shapes and the labels."""
    length = 12 + MAX_GROUPS + 2 + MAX_FILLER + 2
    ids = np.full((len(samples), length), config.pad_token_id, np.int32)
    mask = np.zeros_like(ids)
    for row, (tokens, *_) in enumerate(samples):
        ids[row, length - len(tokens) :] = tokens
        mask[row, length - len(tokens) :] = 1
    inputs = build_model_inputs(
        config,
        ids,
        mask,
        pixel_values_videos=np.concatenate([s[1] for s in samples]),
        video_grid_thw=np.concatenate([s[2] for s in samples]),
        second_per_grid_ts=np.asarray([s[3] for s in samples], np.float32),
        pad_patches_to=4 * MAX_GROUPS,
    )
    return inputs, np.asarray([s[4] for s in samples], np.int32)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    config = model_config(args)
    model = init_model(config, args.seed, std=None if args.init == "fan_in" else 0.02)
    optimizer = nnx.Optimizer(model, optax.adamw(args.lr, weight_decay=0.0), wrt=nnx.Param)

    def last_logits(m, inputs):
        return m.logits_from_hidden(m.hidden_states(inputs)[:, -1])[:, :CLASSES]

    @nnx.jit
    def train_step(m, opt, inputs, labels):
        def loss_fn(m):
            return optax.softmax_cross_entropy_with_integer_labels(last_logits(m, inputs), labels).mean()

        loss, grads = nnx.value_and_grad(loss_fn)(m)
        opt.update(m, grads)
        return loss

    @nnx.jit
    def predict(m, inputs):
        return jnp.argmax(last_logits(m, inputs), axis=-1)

    held_out_rng = np.random.default_rng(10_000 + args.seed)
    held_out = [
        make_batch([make_sample(held_out_rng, args, config, False) for _ in range(64)], config) for _ in range(2)
    ]
    rng = np.random.default_rng(args.seed)
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        samples = [make_sample(rng, args, config, rng.random() < args.naming) for _ in range(args.batch)]
        loss = train_step(model, optimizer, *make_batch(samples, config))
        if step % args.eval_every and step != args.steps:
            continue
        predicted = np.concatenate([np.asarray(predict(model, inputs)) for inputs, _ in held_out])
        true = np.concatenate([labels for _, labels in held_out])
        row = {"step": step, "loss": round(float(loss), 4), "accuracy": round(float(np.mean(predicted == true)), 3)}
        if args.question in ("start", "kth"):
            row["within_one"] = round(float(np.mean(np.abs(predicted - true) <= 1)), 3)
            row["corr"] = round(float(np.corrcoef(predicted, true)[0, 1]), 3) if predicted.std() > 0 else 0.0
        row["seconds"] = round(time.perf_counter() - start, 1)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
