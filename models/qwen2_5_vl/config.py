"""Qwen2.5-VL configuration: frozen dataclasses read from (and written to) a Hugging Face config.json.

Two on-disk forms exist and both are read:

* the flat hub form of the published checkpoints (text fields at the top level, `rope_scaling`
  holding `mrope_section`, `vision_config` nested), which is also what `to_hf_dict` writes, and
* the transformers-5 form (text fields under `text_config`, `rope_parameters` instead of
  `rope_scaling`).

Nothing that changes the computation is defaulted silently: a missing structural field, an unknown
`model_type` or a missing `mrope_section` raises ValueError naming it.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from collections.abc import Mapping
from typing import Any

MODEL_TYPE = "qwen2_5_vl"
# Vision rotary base: not stored in the published configs, fixed by the architecture.
VISION_ROPE_THETA = 10000.0
# RMSNorm epsilon of the vision tower and merger (hard coded in the reference implementation).
VISION_RMS_EPS = 1e-6
# Where text after an image/video continues (see rope_index.py). The default is the rule the
# published checkpoints were trained with; "transformers5" is transformers 5.x's, the test oracle's.
TEXT_AFTER_VISION = ("max_plus_one", "transformers5")
DEFAULT_TEXT_AFTER_VISION = "max_plus_one"


@dataclasses.dataclass(frozen=True)
class VisionConfig:
    """The vision tower (ViT with window attention and a 2x2 patch merger)."""

    depth: int
    hidden_size: int
    intermediate_size: int
    num_heads: int
    out_hidden_size: int
    patch_size: int
    temporal_patch_size: int
    spatial_merge_size: int
    window_size: int
    fullatt_block_indexes: tuple[int, ...]
    tokens_per_second: float
    in_channels: int = 3
    hidden_act: str = "silu"
    rope_theta: float = VISION_ROPE_THETA

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def patch_dim(self) -> int:
        """Width of one row of `pixel_values`: C * temporal_patch * patch * patch."""
        return self.in_channels * self.temporal_patch_size * self.patch_size**2

    @property
    def merge_unit(self) -> int:
        """Patches merged into one language token (spatial_merge_size ** 2)."""
        return self.spatial_merge_size**2

    @property
    def window_merged(self) -> int:
        """Side of an attention window counted in merged tokens."""
        return self.window_size // self.spatial_merge_size // self.patch_size


@dataclasses.dataclass(frozen=True)
class TextConfig:
    """The Qwen2 language decoder with multimodal (chunked) rotary embeddings."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    rms_norm_eps: float
    rope_theta: float
    mrope_section: tuple[int, ...]
    max_position_embeddings: int
    hidden_act: str = "silu"

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


@dataclasses.dataclass(frozen=True)
class Qwen2_5_VLConfig:
    """Whole-model configuration: the two towers plus the special token ids."""

    vision: VisionConfig
    text: TextConfig
    image_token_id: int
    video_token_id: int
    vision_start_token_id: int
    vision_end_token_id: int
    tie_word_embeddings: bool = False
    vision_token_id: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | tuple[int, ...] | None = None
    pad_token_id: int | None = None
    torch_dtype: str | None = None
    # Where text after an image/video continues (see rope_index.py); written to config.json only when
    # not the default (published configs have no such key):
    # "max_plus_one" = max(previous ids) + 1 (original Qwen2.5-VL code, transformers 4.x, vLLM; the
    #   rule the published weights were trained with),
    # "transformers5" = start + max(h, w) / merge (transformers 5.x, the test oracle).
    text_after_vision: str = DEFAULT_TEXT_AFTER_VISION

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def eos_token_ids(self) -> tuple[int, ...]:
        """EOS ids as a tuple (the hub stores an int or a list)."""
        if self.eos_token_id is None:
            return ()
        if isinstance(self.eos_token_id, int):
            return (self.eos_token_id,)
        return tuple(self.eos_token_id)

    @classmethod
    def from_hf_dict(cls, d: Mapping[str, Any]) -> Qwen2_5_VLConfig:
        """Parse an HF config dict (flat hub form or transformers-5 nested form)."""
        model_type = d.get("model_type")
        if model_type != MODEL_TYPE:
            raise ValueError(f"config model_type must be {MODEL_TYPE!r}, got {model_type!r}")
        text_src = dict(d.get("text_config") or {})
        # Flat hub form: text fields at the top level; nested values win when both exist.
        flat = {k: v for k, v in d.items() if k not in ("text_config", "vision_config")}
        text_d = {**flat, **text_src}
        if "vision_config" not in d or not isinstance(d["vision_config"], Mapping):
            raise ValueError("config is missing field 'vision_config'")
        vision = _parse_vision(d["vision_config"])
        text = _parse_text(text_d)
        tie = bool(d.get("tie_word_embeddings", text_src.get("tie_word_embeddings", False)))
        eos = text_d.get("eos_token_id")
        return cls(
            vision=vision,
            text=text,
            image_token_id=int(_get(d, "image_token_id")),
            video_token_id=int(_get(d, "video_token_id")),
            vision_start_token_id=int(_get(d, "vision_start_token_id")),
            vision_end_token_id=int(_get(d, "vision_end_token_id")),
            tie_word_embeddings=tie,
            vision_token_id=_opt_int(d.get("vision_token_id")),
            bos_token_id=_opt_int(text_d.get("bos_token_id")),
            eos_token_id=tuple(int(e) for e in eos) if isinstance(eos, (list, tuple)) else _opt_int(eos),
            pad_token_id=_opt_int(text_d.get("pad_token_id")),
            torch_dtype=d.get("torch_dtype", d.get("dtype")),
            text_after_vision=d.get("text_after_vision", DEFAULT_TEXT_AFTER_VISION),
        )

    @classmethod
    def from_pretrained(cls, directory: str | pathlib.Path) -> Qwen2_5_VLConfig:
        """Read `<directory>/config.json` (or a path to a config file)."""
        path = pathlib.Path(directory)
        if path.is_dir():
            path = path / "config.json"
        if not path.is_file():
            raise ValueError(f"no config.json at {path}")
        return cls.from_hf_dict(json.loads(path.read_text()))

    def to_hf_dict(self) -> dict[str, Any]:
        """The flat hub form (as published), which transformers 4.x and 5.x both load."""
        v, t = self.vision, self.text
        out: dict[str, Any] = {
            "architectures": ["Qwen2_5_VLForConditionalGeneration"],
            "model_type": MODEL_TYPE,
            "attention_dropout": 0.0,
            "hidden_act": t.hidden_act,
            "hidden_size": t.hidden_size,
            "intermediate_size": t.intermediate_size,
            "max_position_embeddings": t.max_position_embeddings,
            "max_window_layers": t.num_hidden_layers,
            "num_attention_heads": t.num_attention_heads,
            "num_hidden_layers": t.num_hidden_layers,
            "num_key_value_heads": t.num_key_value_heads,
            "rms_norm_eps": t.rms_norm_eps,
            "rope_theta": t.rope_theta,
            "rope_scaling": {"type": "mrope", "mrope_section": list(t.mrope_section)},
            "use_sliding_window": False,
            "tie_word_embeddings": self.tie_word_embeddings,
            "vocab_size": t.vocab_size,
            "image_token_id": self.image_token_id,
            "video_token_id": self.video_token_id,
            "vision_start_token_id": self.vision_start_token_id,
            "vision_end_token_id": self.vision_end_token_id,
            "vision_config": {
                "depth": v.depth,
                "hidden_act": v.hidden_act,
                "hidden_size": v.hidden_size,
                "intermediate_size": v.intermediate_size,
                "num_heads": v.num_heads,
                "in_chans": v.in_channels,
                "in_channels": v.in_channels,
                "out_hidden_size": v.out_hidden_size,
                "patch_size": v.patch_size,
                "spatial_patch_size": v.patch_size,
                "spatial_merge_size": v.spatial_merge_size,
                "temporal_patch_size": v.temporal_patch_size,
                "window_size": v.window_size,
                "fullatt_block_indexes": list(v.fullatt_block_indexes),
                "tokens_per_second": v.tokens_per_second,
                "rope_parameters": {"rope_type": "axial", "rope_theta": v.rope_theta},
            },
        }
        optional = {
            "vision_token_id": self.vision_token_id,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": list(self.eos_token_id) if isinstance(self.eos_token_id, tuple) else self.eos_token_id,
            "pad_token_id": self.pad_token_id,
            "torch_dtype": self.torch_dtype,
        }
        out.update({k: val for k, val in optional.items() if val is not None})
        if self.text_after_vision != DEFAULT_TEXT_AFTER_VISION:
            out["text_after_vision"] = self.text_after_vision  # our extension; transformers ignores it
        return out

    def num_params(self) -> int:
        """Parameter count computed from the shapes (no weights needed)."""
        return sum(_prod(shape) for shape in param_shapes(self).values())


def param_shapes(config: Qwen2_5_VLConfig) -> dict[str, tuple[int, ...]]:
    """Hub-layout tensor name -> shape for every weight of the model (torch layout)."""
    v, t = config.vision, config.text
    shapes: dict[str, tuple[int, ...]] = {
        "visual.patch_embed.proj.weight": (
            v.hidden_size,
            v.in_channels,
            v.temporal_patch_size,
            v.patch_size,
            v.patch_size,
        ),
    }
    dv, iv = v.hidden_size, v.intermediate_size
    for i in range(v.depth):
        p = f"visual.blocks.{i}."
        shapes.update(
            {
                p + "norm1.weight": (dv,),
                p + "norm2.weight": (dv,),
                p + "attn.qkv.weight": (3 * dv, dv),
                p + "attn.qkv.bias": (3 * dv,),
                p + "attn.proj.weight": (dv, dv),
                p + "attn.proj.bias": (dv,),
                p + "mlp.gate_proj.weight": (iv, dv),
                p + "mlp.gate_proj.bias": (iv,),
                p + "mlp.up_proj.weight": (iv, dv),
                p + "mlp.up_proj.bias": (iv,),
                p + "mlp.down_proj.weight": (dv, iv),
                p + "mlp.down_proj.bias": (dv,),
            }
        )
    dm = dv * v.merge_unit
    shapes.update(
        {
            "visual.merger.ln_q.weight": (dv,),
            "visual.merger.mlp.0.weight": (dm, dm),
            "visual.merger.mlp.0.bias": (dm,),
            "visual.merger.mlp.2.weight": (v.out_hidden_size, dm),
            "visual.merger.mlp.2.bias": (v.out_hidden_size,),
        }
    )
    h, it, hd = t.hidden_size, t.intermediate_size, t.head_dim
    nq, nkv = t.num_attention_heads * hd, t.num_key_value_heads * hd
    shapes["model.embed_tokens.weight"] = (t.vocab_size, h)
    for i in range(t.num_hidden_layers):
        p = f"model.layers.{i}."
        shapes.update(
            {
                p + "input_layernorm.weight": (h,),
                p + "post_attention_layernorm.weight": (h,),
                p + "self_attn.q_proj.weight": (nq, h),
                p + "self_attn.q_proj.bias": (nq,),
                p + "self_attn.k_proj.weight": (nkv, h),
                p + "self_attn.k_proj.bias": (nkv,),
                p + "self_attn.v_proj.weight": (nkv, h),
                p + "self_attn.v_proj.bias": (nkv,),
                p + "self_attn.o_proj.weight": (h, nq),
                p + "mlp.gate_proj.weight": (it, h),
                p + "mlp.up_proj.weight": (it, h),
                p + "mlp.down_proj.weight": (h, it),
            }
        )
    shapes["model.norm.weight"] = (h,)
    if not config.tie_word_embeddings:
        shapes["lm_head.weight"] = (t.vocab_size, h)
    return shapes


_TINY_VISION = dict(
    depth=4,
    hidden_size=32,
    intermediate_size=48,
    num_heads=2,
    out_hidden_size=64,
    patch_size=14,
    temporal_patch_size=2,
    spatial_merge_size=2,
    window_size=56,
    fullatt_block_indexes=(1, 3),
    tokens_per_second=2,
)
_TINY_TEXT = dict(
    vocab_size=300,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    rms_norm_eps=1e-6,
    rope_theta=1000000.0,
    mrope_section=(2, 3, 3),
    max_position_embeddings=4096,
)
_TINY_TOP = dict(
    image_token_id=290,
    video_token_id=291,
    vision_start_token_id=292,
    vision_end_token_id=293,
    vision_token_id=294,
    bos_token_id=295,
    eos_token_id=296,
    pad_token_id=297,
    tie_word_embeddings=False,
)


def tiny_config(**overrides: Any) -> Qwen2_5_VLConfig:
    """A tiny config for tests (vocab 300, real special tokens remapped to 290..297).

    Overrides are routed by name: `vision_<field>` sets a `VisionConfig` field (e.g. `vision_depth=2`),
    a `TextConfig` field name sets the text field (e.g. `num_hidden_layers=3`), anything else a
    top-level field (e.g. `tie_word_embeddings=True`). An unknown name raises ValueError.
    """
    vision, text, top = dict(_TINY_VISION), dict(_TINY_TEXT), dict(_TINY_TOP)
    vision_fields = {f.name for f in dataclasses.fields(VisionConfig)}
    text_fields = {f.name for f in dataclasses.fields(TextConfig)}
    top_fields = {f.name for f in dataclasses.fields(Qwen2_5_VLConfig)} - {"vision", "text"}
    for key, value in overrides.items():
        if key.startswith("vision_") and key[len("vision_") :] in vision_fields:
            vision[key[len("vision_") :]] = value
        elif key in text_fields:
            text[key] = value
        elif key in top_fields:
            top[key] = value
        else:
            raise ValueError(f"tiny_config: unknown override {key!r}")
    if "hidden_size" in overrides and "vision_out_hidden_size" not in overrides:
        vision["out_hidden_size"] = text["hidden_size"]
    vision["fullatt_block_indexes"] = tuple(vision["fullatt_block_indexes"])
    text["mrope_section"] = tuple(text["mrope_section"])
    return Qwen2_5_VLConfig(vision=VisionConfig(**vision), text=TextConfig(**text), **top)


# ----------------------------------------------------------------------------------------------
# parsing helpers


def _get(d: Mapping[str, Any], key: str, *, where: str = "config") -> Any:
    """d[key], or ValueError naming the missing field."""
    if d.get(key) is None:
        raise ValueError(f"{where} is missing field {key!r}")
    return d[key]


def _opt_int(x: Any) -> int | None:
    return None if x is None else int(x)


def _prod(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def _parse_vision(d: Mapping[str, Any]) -> VisionConfig:
    w = "vision_config"
    patch = d.get("patch_size", d.get("spatial_patch_size"))
    if patch is None:
        raise ValueError("vision_config is missing field 'patch_size'")
    rope = d.get("rope_parameters") or {}
    if rope.get("rope_type", "axial") != "axial":
        raise ValueError(f"vision_config rope_type must be 'axial', got {rope.get('rope_type')!r}")
    act = d.get("hidden_act", "silu")
    if act != "silu":
        raise ValueError(f"vision_config hidden_act {act!r} is not supported (only 'silu')")
    return VisionConfig(
        depth=int(_get(d, "depth", where=w)),
        hidden_size=int(_get(d, "hidden_size", where=w)),
        intermediate_size=int(_get(d, "intermediate_size", where=w)),
        num_heads=int(_get(d, "num_heads", where=w)),
        out_hidden_size=int(_get(d, "out_hidden_size", where=w)),
        patch_size=int(patch),
        temporal_patch_size=int(_get(d, "temporal_patch_size", where=w)),
        spatial_merge_size=int(_get(d, "spatial_merge_size", where=w)),
        window_size=int(_get(d, "window_size", where=w)),
        fullatt_block_indexes=tuple(int(i) for i in _get(d, "fullatt_block_indexes", where=w)),
        tokens_per_second=_get(d, "tokens_per_second", where=w),
        in_channels=int(d.get("in_channels", d.get("in_chans", 3))),
        hidden_act=act,
        rope_theta=float(rope.get("rope_theta", VISION_ROPE_THETA)),
    )


def _parse_text(d: Mapping[str, Any]) -> TextConfig:
    rope = d.get("rope_parameters") or d.get("rope_scaling")
    if not isinstance(rope, Mapping) or rope.get("mrope_section") is None:
        raise ValueError("config is missing field 'mrope_section' (in 'rope_scaling' or 'rope_parameters')")
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type not in ("default", "mrope"):
        raise ValueError(f"rope type {rope_type!r} is not supported (only mrope/default)")
    theta = rope.get("rope_theta", d.get("rope_theta"))
    if theta is None:
        raise ValueError("config is missing field 'rope_theta'")
    if d.get("use_sliding_window"):
        raise ValueError("use_sliding_window=true is not supported")
    act = d.get("hidden_act", "silu")
    if act != "silu":
        raise ValueError(f"hidden_act {act!r} is not supported (only 'silu')")
    n_heads = int(_get(d, "num_attention_heads"))
    return TextConfig(
        vocab_size=int(_get(d, "vocab_size")),
        hidden_size=int(_get(d, "hidden_size")),
        intermediate_size=int(_get(d, "intermediate_size")),
        num_hidden_layers=int(_get(d, "num_hidden_layers")),
        num_attention_heads=n_heads,
        num_key_value_heads=int(d.get("num_key_value_heads") or n_heads),
        rms_norm_eps=float(_get(d, "rms_norm_eps")),
        rope_theta=float(theta),
        mrope_section=tuple(int(s) for s in rope["mrope_section"]),
        max_position_embeddings=int(_get(d, "max_position_embeddings")),
        hidden_act=act,
    )


def _validate(c: Qwen2_5_VLConfig) -> None:
    v, t = c.vision, c.text
    if c.text_after_vision not in TEXT_AFTER_VISION:
        raise ValueError(f"text_after_vision must be one of {TEXT_AFTER_VISION}, got {c.text_after_vision!r}")
    if v.hidden_size % v.num_heads:
        raise ValueError(f"vision hidden_size {v.hidden_size} not divisible by num_heads {v.num_heads}")
    if v.head_dim % 4:
        raise ValueError(f"vision head_dim {v.head_dim} must be divisible by 4 (2-D rotary)")
    if t.hidden_size % t.num_attention_heads:
        raise ValueError(f"hidden_size {t.hidden_size} not divisible by num_attention_heads {t.num_attention_heads}")
    if t.num_attention_heads % t.num_key_value_heads:
        raise ValueError("num_attention_heads must be a multiple of num_key_value_heads")
    if len(t.mrope_section) != 3 or sum(t.mrope_section) != t.head_dim // 2:
        raise ValueError(f"mrope_section {t.mrope_section} must have 3 entries summing to head_dim/2={t.head_dim // 2}")
    if v.out_hidden_size != t.hidden_size:
        raise ValueError(f"vision out_hidden_size {v.out_hidden_size} != text hidden_size {t.hidden_size}")
    if v.window_merged < 1:
        raise ValueError(f"vision window_size {v.window_size} smaller than one merged patch")
    if any(not 0 <= i < v.depth for i in v.fullatt_block_indexes):
        raise ValueError(f"fullatt_block_indexes {v.fullatt_block_indexes} out of range for depth {v.depth}")
