"""Qwen2.5-VL in Flax NNX: configuration, host-side input preparation, the model, checkpoints.

`Qwen2_5_VLForConditionalGeneration` is imported lazily so that host-side users (the data loader's
use of `rope_index` / `inputs`) do not pay for building the model modules.
"""

from .config import Qwen2_5_VLConfig, TextConfig, VisionConfig, tiny_config
from .inputs import ModelInputs, build_model_inputs, collate_model_inputs
from .rope_index import completion_position_ids, get_rope_index

__all__ = [
    "ModelInputs",
    "Qwen2_5_VLConfig",
    "Qwen2_5_VLForConditionalGeneration",
    "TextConfig",
    "VisionConfig",
    "build_model_inputs",
    "collate_model_inputs",
    "completion_position_ids",
    "get_rope_index",
    "tiny_config",
]


def __getattr__(name: str):
    if name == "Qwen2_5_VLForConditionalGeneration":
        from .modeling import Qwen2_5_VLForConditionalGeneration

        return Qwen2_5_VLForConditionalGeneration
    raise AttributeError(name)
