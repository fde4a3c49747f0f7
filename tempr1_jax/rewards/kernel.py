"""Batched localisation rewards in jnp on padded arrays with masks (DESIGN §2).

`loc_rewards` groups a batch's rows by reward family (Type 1, Type 2, Type 3, tIoU), pads each
group to buckets (powers of two >= 8 for the rows and the segment counts) and calls one jitted
function per group, which compiles once per (family, padded shape): repeated calls reuse it.
`total_rewards` combines format, localisation and classification terms with per-row weights.

Layout: inside the jitted function arrays are segment-major, [N, B] (batch minor), so that the
sorting network, the sweep and the DP row recurrence work on contiguous batch vectors.

It runs on the host CPU backend in float64 (scoped `jax.enable_x64`): completions are host text
anyway, and float32 cannot hold 1e-6 agreement with the reference for short segments in long
videos. Inputs are raw parsed numbers; invalid predictions (non-finite, end < start) count as
predictions with IoU 0 and valid ones are clipped to [0, duration], as in `reference.py`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

KINDS: dict[str, int] = {"exact": 0, "type1": 1, "type2": 2, "type3": 3, "tiou": 4}


def bucket(n: int, minimum: int = 1) -> int:
    """The smallest power of two >= max(n, minimum)."""
    n = max(int(n), minimum, 1)
    return 1 << (n - 1).bit_length()


def _clip(start, end, mask, duration):
    """Validity mask and [0, duration]-clipped starts and ends, [N, B] (invalid entries become 0)."""
    valid = mask & jnp.isfinite(start) & jnp.isfinite(end) & (end >= start)
    start = jnp.where(valid, jnp.clip(jnp.where(valid, start, 0.0), 0.0, duration), 0.0)
    end = jnp.where(valid, jnp.clip(jnp.where(valid, end, 0.0), 0.0, duration), 0.0)
    return start, end, valid


def _pair_iou(ps, pe, pv, gs, ge, gv):
    """IoU of broadcast pairs of clipped segments (0 if either is invalid or the union is empty)."""
    inter = jnp.maximum(0.0, jnp.minimum(pe, ge) - jnp.maximum(ps, gs))
    union = (pe - ps) + (ge - gs) - inter
    ok = pv & gv & (union > 0)
    return jnp.where(ok, inter / jnp.where(ok, union, 1.0), 0.0)


def iou_matrix(ps, pe, pv, gs, ge, gv):
    """IoU of every prediction with every ground truth: [P, B] x [G, B] -> [P, G, B]."""
    return _pair_iou(ps[:, None], pe[:, None], pv[:, None], gs[None], ge[None], gv[None])


def _cummax(x):
    """Running maximum along axis 0 (log-depth scan; lax.cummax lowers slowly on CPU)."""
    return lax.associative_scan(jnp.maximum, x, axis=0)


def sort_pairs(key, other):
    """Sort [N, B] columns by (key, other) ascending with a bitonic network (N a power of two).

    Every compare-exchange stage is a reshape and elementwise selects on contiguous batch
    vectors, which XLA's CPU backend runs far faster than its generic comparator sort.
    """
    n, b = key.shape
    k = 2
    while k <= n:
        j = k // 2
        while j > 0:
            shape = (n // (2 * j), 2, j, b)
            key4, other4 = key.reshape(shape), other.reshape(shape)
            lo_k, hi_k, lo_o, hi_o = key4[:, 0], key4[:, 1], other4[:, 0], other4[:, 1]
            # blocks of 2j elements whose index has bit k clear sort ascending, the others descending
            ascending = ((np.arange(n // (2 * j)) * 2 * j) & k) == 0
            hi_first = (hi_k < lo_k) | ((hi_k == lo_k) & (hi_o < lo_o))
            lo_first = (lo_k < hi_k) | ((lo_k == hi_k) & (lo_o < hi_o))
            swap = jnp.where(ascending[:, None, None], hi_first, lo_first)
            key = jnp.stack([jnp.where(swap, hi_k, lo_k), jnp.where(swap, lo_k, hi_k)], 1).reshape(n, b)
            other = jnp.stack([jnp.where(swap, hi_o, lo_o), jnp.where(swap, lo_o, hi_o)], 1).reshape(n, b)
            j //= 2
        k *= 2
    return key, other


def type1(ps, pe, pv, gs, ge, gv, n_pred, n_gt):
    """Summed IoU of index-aligned pairs / max(n_pred, n_gt); 0 without predictions."""
    k = min(ps.shape[0], gs.shape[0])
    diag = _pair_iou(ps[:k], pe[:k], pv[:k], gs[:k], ge[:k], gv[:k])
    return jnp.where(n_pred > 0, diag.sum(0) / jnp.maximum(jnp.maximum(n_pred, n_gt), 1), 0.0)


def union_length(start, end):
    """Length of the union of possibly overlapping intervals per column (empty entries [0, 0]).

    Sweep: sorted by start, each interval adds what sticks out past the running maximum end.
    """
    start, end = sort_pairs(start, end)
    reach = jnp.concatenate([jnp.zeros_like(end[:1]), _cummax(end)[:-1]], axis=0)
    return jnp.maximum(0.0, end - jnp.maximum(start, reach)).sum(0)


def type2(ps, pe, gs, ge):
    """IoU of union(pred) and union(gt): |Up n Ug| = |Up| + |Ug| - |Up u Ug|."""
    lp, lg = union_length(ps, pe), union_length(gs, ge)
    both_s, both_e = jnp.concatenate([ps, gs]), jnp.concatenate([pe, ge])
    pad = bucket(both_s.shape[0]) - both_s.shape[0]  # [0, 0] entries add nothing to a union
    lpg = union_length(jnp.pad(both_s, ((0, pad), (0, 0))), jnp.pad(both_e, ((0, pad), (0, 0))))
    inter = jnp.maximum(0.0, lp + lg - lpg)
    return jnp.where(lpg > 0, inter / jnp.where(lpg > 0, lpg, 1.0), 0.0)


def chronological(start, end, valid):
    """Columns sorted by (start, end), invalid/padded entries last: (start, end, valid)."""
    key_s, key_e = sort_pairs(jnp.where(valid, start, jnp.inf), jnp.where(valid, end, jnp.inf))
    valid = jnp.isfinite(key_s)
    return jnp.where(valid, key_s, 0.0), jnp.where(valid, key_e, 0.0), valid


def dp_siou(iou):
    """Largest summed IoU of an order-preserving one-to-one matching, [P, G, B] -> [B].

    Row recurrence of Algorithm 1: D[i, j] = max(D[i, j-1], D[i-1, j], D[i-1, j-1] + I[i, j])
    equals cummax over j of max(D[i-1, j], D[i-1, j-1] + I[i, j]), so one `lax.scan` over rows,
    vectorised along the row (and the batch), fills the table (D[i, 0] = 0; all terms are >= 0).
    """
    _, g, b = iou.shape

    def row(prev, iou_row):
        cand = jnp.maximum(prev[1:], prev[:-1] + iou_row)
        return jnp.concatenate([jnp.zeros((1, b), prev.dtype), _cummax(cand)], axis=0), None

    final, _ = lax.scan(row, jnp.zeros((g + 1, b), iou.dtype), iou)
    return final[-1]


def type3(ps, pe, pv, gs, ge, gv, n_pred, n_gt, sigma):
    """R_num + R_match (F1 of sIoU / N_pred and sIoU / N_gt) on sorted lists; 0 without predictions."""
    pred, gt = chronological(ps, pe, pv), chronological(gs, ge, gv)
    # The matching is symmetric: scan over the shorter side (fewer sequential steps).
    s = dp_siou(iou_matrix(*pred, *gt) if ps.shape[0] <= gs.shape[0] else iou_matrix(*gt, *pred))
    r_num = jnp.exp(-jnp.abs(n_pred - n_gt) / (jnp.maximum(jnp.minimum(n_gt, 3), 1) * sigma))
    r_match = jnp.where(s > 0, 2 * s / jnp.maximum(n_pred + n_gt, 1), 0.0)
    return jnp.where(n_pred > 0, r_num + r_match, 0.0)


def tiou(ps, pe, pv, gs, ge, gv, duration):
    """Time-R1 tIoU of the first prediction and first ground truth."""
    iou = _pair_iou(ps[0], pe[0], pv[0], gs[0], ge[0], gv[0])
    factor = (1 - jnp.abs(ps[0] - gs[0]) / duration) * (1 - jnp.abs(pe[0] - ge[0]) / duration)
    return jnp.where(pv[0], iou * factor, 0.0)


@functools.partial(jax.jit, static_argnames="family")
def _loc_rewards(pred, pred_mask, gt, gt_mask, duration, sigma, family):
    """The `family` reward (a `KINDS` code, static) of every row (inputs batch-major, as given)."""
    ps, pe, pv = _clip(pred[..., 0].T, pred[..., 1].T, pred_mask.T, duration)
    gs, ge, gv = _clip(gt[..., 0].T, gt[..., 1].T, gt_mask.T, duration)
    n_pred = pred_mask.sum(-1).astype(duration.dtype)
    n_gt = gt_mask.sum(-1).astype(duration.dtype)
    if family == KINDS["type1"]:
        return type1(ps, pe, pv, gs, ge, gv, n_pred, n_gt)
    if family == KINDS["type2"]:
        return type2(ps, pe, gs, ge)
    if family == KINDS["type3"]:
        return type3(ps, pe, pv, gs, ge, gv, n_pred, n_gt, sigma)
    return tiou(ps, pe, pv, gs, ge, gv, duration)


def _pad(x: np.ndarray, shape: tuple[int, ...], fill) -> np.ndarray:
    if x.shape == shape:
        return x
    out = np.full(shape, fill, dtype=x.dtype)
    out[tuple(slice(0, n) for n in x.shape)] = x
    return out


@functools.cache
def _cpu():
    return jax.devices("cpu")[0]


def loc_rewards(
    pred: np.ndarray,
    pred_mask: np.ndarray,
    gt: np.ndarray,
    gt_mask: np.ndarray,
    duration: np.ndarray,
    kind: np.ndarray,
    sigma: float = 1.0,
) -> np.ndarray:
    """Localisation reward per row, float64 numpy [B].

    pred [B, P, 2] raw parsed (start, end) (NaN/inf allowed), pred_mask [B, P] (True = a parsed
    prediction, counted in N_pred even if invalid); gt [B, G, 2] validated, gt_mask [B, G];
    duration [B] > 0; kind [B] int codes from `KINDS` ("exact" rows get 0). Rows are grouped by
    kind, each group trimmed to its own longest row (short TG rows do not pay for long TAL rows)
    and padded to buckets; the jitted function compiles once per (kind, padded shape).
    """
    kind = np.asarray(kind, np.int32)
    pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    pred_mask, gt_mask = np.asarray(pred_mask, bool), np.asarray(gt_mask, bool)
    duration = np.asarray(duration, np.float64)
    out = np.zeros(len(kind), np.float64)
    for code in np.unique(kind):
        if code == KINDS["exact"]:
            continue
        rows = np.flatnonzero(kind == code)
        b = len(rows)
        p = max(int(pred_mask[rows].sum(1).max()), 1)
        g = max(int(gt_mask[rows].sum(1).max()), 1)
        # A small batch pads every group to the batch's own bucket (up to 256 rows), so the
        # varying task mix of training batches does not compile one variant per group size.
        bb, pb, gb = bucket(b, min(bucket(len(kind), 8), 256)), bucket(p, 8), bucket(g, 8)
        args = (
            _pad(pred[rows, :p], (bb, pb, 2), 0.0),
            _pad(pred_mask[rows, :p], (bb, pb), False),
            _pad(gt[rows, :g], (bb, gb, 2), 0.0),
            _pad(gt_mask[rows, :g], (bb, gb), False),
            _pad(duration[rows], (bb,), 1.0),
            np.float64(sigma),
        )
        with jax.enable_x64(True), jax.default_device(_cpu()):
            out[rows] = np.asarray(_loc_rewards(*args, family=int(code)))[:b]
    return out


@jax.jit
def _total(terms, weights):
    return (terms * weights).sum(-1)


def total_rewards(format_ok: np.ndarray, loc: np.ndarray, cls: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Eq. 11 generalised: w_format * R_format + w_loc * R_loc + w_cls * R_cls per row, float64 [B].

    `weights` is [B, 3] (format, loc, cls) so that a mixed batch uses each row's task weights;
    `cls` is the classification term (answer letter or order string matched on the host, 0 where
    the task has none). Padded to a power-of-two batch like `loc_rewards`.
    """
    b = len(loc)
    terms = np.stack([format_ok, loc, cls], -1).astype(np.float64)
    bb = bucket(b, 8)
    with jax.enable_x64(True), jax.default_device(_cpu()):
        out = _total(_pad(terms, (bb, 3), 0.0), _pad(np.asarray(weights, np.float64), (bb, 3), 0.0))
    return np.asarray(out)[:b]
