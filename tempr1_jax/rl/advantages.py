"""Group-relative advantages (DESIGN §5): A = (r - mean_G) / (std_G + eps) per prompt group.

Host-side numpy: rewards are computed on the host from decoded text, and the result feeds the jitted
loss as a plain [N] array. Completions of one prompt are contiguous (prompt-major order, N = B * G).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

StdForm = Literal["population", "sample", "none"]
STD_FORMS: tuple[str, ...] = ("population", "sample", "none")


def group_advantages(
    rewards: np.ndarray, group_size: int, *, eps: float = 1e-4, std_form: StdForm = "sample"
) -> tuple[np.ndarray, np.ndarray]:
    """Advantages for prompt-major rewards [B * G], and a [B * G] mask of groups whose rewards are all equal.

    `std_form`: "population" (ddof 0), "sample" (ddof 1, as torch.std in the R1 family's code) or "none"
    (no scaling: A = r - mean_G, as Dr. GRPO). A group of equal rewards has r - mean_G = 0 exactly, so its
    advantages are 0 whatever eps is; the mask lets DAPO drop those groups.
    """
    r = np.asarray(rewards, dtype=np.float64)
    if r.ndim != 1:
        raise ValueError(f"rewards must be 1-D [B*G], got shape {r.shape}")
    if group_size < 1 or r.size % group_size:
        raise ValueError(f"{r.size} rewards do not split into groups of size {group_size}")
    if std_form not in STD_FORMS:
        raise ValueError(f"std_form must be one of {STD_FORMS}, got {std_form!r}")
    if not np.all(np.isfinite(r)):
        raise ValueError("rewards contain non-finite values")
    groups = r.reshape(-1, group_size)
    centred = groups - groups.mean(axis=1, keepdims=True)
    equal = np.all(groups == groups[:, :1], axis=1)
    centred[equal] = 0.0
    if std_form == "none":
        adv = centred
    else:
        ddof = 1 if std_form == "sample" and group_size > 1 else 0
        adv = centred / (groups.std(axis=1, ddof=ddof, keepdims=True) + eps)
    return adv.reshape(-1).astype(np.float32), np.repeat(equal, group_size)
