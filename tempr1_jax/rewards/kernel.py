"""Batched localisation rewards in jnp on padded arrays with masks (DESIGN §2).

`loc_rewards` = `run(prepare(...))`. `prepare` groups a batch's rows by reward family (Type 1,
Type 2, Type 3, tIoU) and by the power-of-two buckets (>= 8) of their prediction and ground-truth
counts, so that short rows do not pay for long ones, and pads each group (rows bucketed too);
`run` = `collect(dispatch(...))` calls one jitted function per group, which compiles once per
(family, padded shape): repeated calls reuse it. `dispatch` returns at once, so a caller can
parse more rows on the host while the kernel runs (`compute_rewards` does). `total_rewards` combines format, localisation and
classification terms with per-row weights.

Layout: inside the jitted function arrays are segment-major, [N, B] (batch minor), so that the
sorting network, the sweep and the DP row recurrence work on contiguous batch vectors, and a
group larger than `TILE` rows is processed tile by tile (`lax.map`) so that each tile's working
set stays in cache.

It runs on the host CPU backend in float64 (scoped `jax.enable_x64`): completions are host text
anyway, and float32 cannot hold 1e-6 agreement with the reference for short segments in long
videos. Inputs are raw parsed numbers; invalid predictions (non-finite, end < start) count as
predictions with IoU 0 and valid ones are clipped to [0, duration], as in `reference.py`.
"""

from __future__ import annotations

import dataclasses
import functools
import math

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


def _cummax(x):
    """Running maximum along axis 0 as a chain of elementwise maxima over contiguous batch vectors
    (on CPU this beats both `lax.cummax` and a log-depth `associative_scan` at these sizes)."""
    out = [x[0]]
    for row in x[1:]:
        out.append(jnp.maximum(out[-1], row))
    return jnp.stack(out)


def sort_pairs(key, other, first_merge: int = 2):
    """Sort [N, B] columns by (key, other) ascending with a bitonic network (N a power of two).

    Every compare-exchange stage is a reshape and elementwise selects on contiguous batch
    vectors, which XLA's CPU backend runs far faster than its generic comparator sort.
    `first_merge=N` runs only the last merge, which sorts columns that are already bitonic
    (ascending, then descending).
    """
    n, b = key.shape
    k = first_merge
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


def sort_pairs_if_needed(key, other):
    """`sort_pairs`, skipped (`lax.cond`) when every column is already in order, as annotations and
    most model outputs are."""
    in_order = ((key[1:] > key[:-1]) | ((key[1:] == key[:-1]) & (other[1:] >= other[:-1]))).all()
    return lax.cond(in_order, lambda k, o: (k, o), sort_pairs, key, other)


def type1(ps, pe, pv, gs, ge, gv, n_pred, n_gt):
    """Summed IoU of index-aligned pairs / max(n_pred, n_gt); 0 without predictions."""
    k = min(ps.shape[0], gs.shape[0])
    diag = _pair_iou(ps[:k], pe[:k], pv[:k], gs[:k], ge[:k], gv[:k])
    return jnp.where(n_pred > 0, diag.sum(0) / jnp.maximum(jnp.maximum(n_pred, n_gt), 1), 0.0)


def _sweep(start, end):
    """Length of the union of intervals sorted by start per column (empty entries [0, 0]).

    Each interval adds what sticks out past the running maximum end of the earlier ones.
    """
    start, end = lax.optimization_barrier((start, end))  # keeps XLA from re-running the sort per use
    reach = jnp.concatenate([jnp.zeros_like(end[:1]), _cummax(end)[:-1]], axis=0)
    return jnp.maximum(0.0, end - jnp.maximum(start, reach)).sum(0)


def type2(ps, pe, gs, ge):
    """IoU of union(pred) and union(gt): |Up n Ug| = |Up| + |Ug| - |Up u Ug| (clipped inputs >= 0)."""
    pred, gt = sort_pairs_if_needed(ps, pe), sort_pairs_if_needed(gs, ge)
    lp, lg = _sweep(*pred), _sweep(*gt)
    # Both lists padded in front with [0, 0] (adds nothing, sorts first) to the same power of two:
    # one ascending and the other reversed form a bitonic column, which the last merge sorts.
    m = max(ps.shape[0], gs.shape[0])
    pad = lambda x: jnp.pad(x, ((m - x.shape[0], 0), (0, 0)))
    both = [jnp.concatenate([pad(p), pad(g)[::-1]]) for p, g in zip(pred, gt)]
    lpg = _sweep(*sort_pairs(*both, first_merge=2 * m))
    inter = jnp.maximum(0.0, lp + lg - lpg)
    return jnp.where(lpg > 0, inter / jnp.where(lpg > 0, lpg, 1.0), 0.0)


def chronological(start, end, valid):
    """Columns sorted by (start, end), invalid/padded entries last: (start, end, valid)."""
    key_s, key_e = sort_pairs_if_needed(jnp.where(valid, start, jnp.inf), jnp.where(valid, end, jnp.inf))
    valid = jnp.isfinite(key_s)
    return jnp.where(valid, key_s, 0.0), jnp.where(valid, key_e, 0.0), valid


def _dp(iou_row, xs, width: int):
    """sIoU of Algorithm 1 by rows: `iou_row(x)` is row i's IoUs [width, B] for the scanned `x`.

    Row recurrence: D[i, j] = max(D[i, j-1], D[i-1, j], D[i-1, j-1] + I[i, j]) equals cummax over
    j of max(D[i-1, j], D[i-1, j-1] + I[i, j]), so one `lax.scan` over rows, vectorised along the
    row (and the batch), fills the table (D[i, 0] = 0; all terms are >= 0).
    """
    first = jax.tree.leaves(xs)[0]

    def step(prev, x):
        cand = jnp.maximum(prev[1:], prev[:-1] + iou_row(x))
        return jnp.concatenate([jnp.zeros_like(prev[:1]), _cummax(cand)]), None

    final, _ = lax.scan(step, jnp.zeros((width + 1, first.shape[-1]), first.dtype), xs)
    return final[-1]


def dp_siou(iou):
    """Largest summed IoU of an order-preserving one-to-one matching, [P, G, B] -> [B]."""
    return _dp(lambda row: row, iou, iou.shape[1])


def type3(ps, pe, pv, gs, ge, gv, n_pred, n_gt, sigma, use_count_reward: bool = True, matching: str = "dp"):
    """R_num + R_match (F1 of sIoU / N_pred and sIoU / N_gt) on sorted lists; 0 without predictions.

    use_count_reward=False drops R_num; matching "sequential" matches the k-th sorted prediction with
    the k-th sorted ground truth instead of Algorithm 1 (TempR1 Table 3's ablations).
    """
    pred, gt = chronological(ps, pe, pv), chronological(gs, ge, gv)
    if matching == "sequential":
        k = min(ps.shape[0], gs.shape[0])
        s = _pair_iou(*(x[:k] for x in pred), *(x[:k] for x in gt)).sum(0)
    else:
        # The matching is symmetric: scan over the longer side, so that the running maximum inside
        # each step (a chain of maxima, quadratic once XLA fuses it) runs along the shorter one. Each
        # IoU row is computed inside the scan, so the [P, G, B] matrix is never materialised.
        rows, cols = (pred, gt) if ps.shape[0] >= gs.shape[0] else (gt, pred)
        s = _dp(lambda seg: _pair_iou(*(x[None] for x in seg), *cols), rows, cols[0].shape[0])
    r_num = jnp.exp(-jnp.abs(n_pred - n_gt) / (jnp.maximum(jnp.minimum(n_gt, 3), 1) * sigma))
    r_num = r_num if use_count_reward else jnp.zeros_like(r_num)
    r_match = jnp.where(s > 0, 2 * s / jnp.maximum(n_pred + n_gt, 1), 0.0)
    return jnp.where(n_pred > 0, r_num + r_match, 0.0)


# as `reference.CENTER_MIN_LENGTH` (the kernel imports nothing of the reference it is tested against)
CENTER_MIN_LENGTH = 0.5


def tiou(ps, pe, pv, gs, ge, gv, duration, form: str = "tiou"):
    """Time-R1's grounding reward `form` (`reference.time_r1_reward`) of the first prediction against the
    first ground truth; a missing or invalid prediction scores the worst value inside the video."""
    p_s, p_e, valid, g_s, g_e = ps[0], pe[0], pv[0], gs[0], ge[0]
    iou = _pair_iou(p_s, p_e, valid, g_s, g_e, gv[0])
    d_start, d_end = jnp.abs(p_s - g_s), jnp.abs(p_e - g_e)
    if form == "tiou":
        return jnp.where(valid, iou * (1 - d_start / duration) * (1 - d_end / duration), 0.0)
    if form == "iou":
        return iou
    if form == "exact":
        return jnp.where(valid & (p_s == g_s) & (p_e == g_e), 1.0, 0.0)
    d_start = jnp.where(valid, d_start, jnp.maximum(g_s, duration - g_s))
    d_end = jnp.where(valid, d_end, jnp.maximum(g_e, duration - g_e))
    if form == "abs":
        return -(d_start + d_end)
    if form == "rmse":
        return -jnp.sqrt((d_start**2 + d_end**2) / 2)
    center = (g_s + g_e) / 2
    d_center = jnp.where(valid, jnp.abs((p_s + p_e) / 2 - center), jnp.maximum(center, duration - center))
    r_center = 1 - d_center / jnp.maximum(g_e - g_s, CENTER_MIN_LENGTH)
    return r_center if form == "center" else iou + r_center


def _family_rewards(pred, pred_mask, gt, gt_mask, duration, sigma, family: int, variant: tuple):
    """The `family` reward (a `KINDS` code) of every row (inputs batch-major, as given); `variant` =
    (use_count_reward, matching) of Type 3, (form,) of tIoU."""
    ps, pe, pv = _clip(pred[..., 0].T, pred[..., 1].T, pred_mask.T, duration)
    gs, ge, gv = _clip(gt[..., 0].T, gt[..., 1].T, gt_mask.T, duration)
    n_pred = pred_mask.sum(-1).astype(duration.dtype)
    n_gt = gt_mask.sum(-1).astype(duration.dtype)
    if family == KINDS["type1"]:
        return type1(ps, pe, pv, gs, ge, gv, n_pred, n_gt)
    if family == KINDS["type2"]:
        return type2(ps, pe, gs, ge)
    if family == KINDS["type3"]:
        return type3(ps, pe, pv, gs, ge, gv, n_pred, n_gt, sigma, *variant)
    return tiou(ps, pe, pv, gs, ge, gv, duration, *variant)


# Rows per tile: a tile's working set ([N, TILE] float64 vectors) stays in cache, which makes the
# sorting networks and the DP several times faster than on whole 4096-row groups.
TILE = 256


@functools.partial(jax.jit, static_argnames=("family", "variant"))
def _loc_rewards(pred, pred_mask, gt, gt_mask, duration, sigma, family, variant=(True, "dp")):
    """`_family_rewards` over tiles of at most `TILE` rows (a `lax.map`; the row count is a
    multiple of the tile when it exceeds it)."""
    b = pred.shape[0]
    tile = math.gcd(b, TILE)
    if tile == b:
        return _family_rewards(pred, pred_mask, gt, gt_mask, duration, sigma, family, variant)
    tiles = [x.reshape(b // tile, tile, *x.shape[1:]) for x in (pred, pred_mask, gt, gt_mask, duration)]
    return lax.map(lambda xs: _family_rewards(*xs, sigma, family, variant), tiles).reshape(b)


SMALL_GROUP = 64  # rows; see `prepare`


def _row_bucket(rows: int, batch: int) -> int:
    """Padded row count of a group of `rows` rows in a batch of `batch` rows.

    A training-sized batch (<= 64 rows) pads every group to the batch's own bucket, so that its
    varying task mix does not compile one variant per group size; larger groups pad to a power
    of two up to `TILE` rows and to a multiple of an eighth of their power of two beyond (at most
    12.5 % padding, eight compiled variants per octave).
    """
    if batch <= 64:
        return bucket(batch, 8)
    if rows <= TILE:
        return bucket(rows, 8)
    step = bucket(rows) // 8
    return -(-rows // step) * step


def _take(x: np.ndarray, rows: np.ndarray, shape: tuple[int, ...], fill) -> np.ndarray:
    """`x[rows]` cut or zero-padded (with `fill`) to `shape` along every axis."""
    out = np.full(shape, fill, dtype=x.dtype)
    width = tuple(min(a, b) for a, b in zip(x.shape[1:], shape[1:]))
    out[(slice(0, len(rows)), *(slice(0, w) for w in width))] = x[(rows, *(slice(0, w) for w in width))]
    return out


@functools.cache
def _cpu():
    return jax.local_devices(backend="cpu")[0]


@dataclasses.dataclass(frozen=True)
class Group:
    """Rows of one reward family and one padded shape (host arrays), ready for `dispatch`."""

    family: int
    rows: np.ndarray
    args: tuple[np.ndarray, ...]


@dataclasses.dataclass(frozen=True)
class Prepared:
    """A batch split into `Group`s by `prepare` (rows of other kinds score 0)."""

    size: int
    groups: tuple[Group, ...]


@dataclasses.dataclass(frozen=True)
class Pending:
    """A `Prepared` batch whose jitted calls are running (`collect` waits for them)."""

    prepared: Prepared
    results: tuple[jax.Array, ...]


def prepare(
    pred: np.ndarray,
    pred_mask: np.ndarray,
    gt: np.ndarray,
    gt_mask: np.ndarray,
    duration: np.ndarray,
    kind: np.ndarray,
) -> Prepared:
    """Group rows by (reward family, segment bucket) and pad each group.

    Arguments as in `loc_rewards`. A row's segment buckets are the powers of two (>= 8) that
    hold its predictions and its ground truths, so short rows do not pay for long ones; groups
    pad to `[rows, pred bucket, 2]` and `[rows, gt bucket, 2]`, rows bucketed by `_row_bucket`.
    Groups stay host numpy: the jitted call reads them directly, which on the CPU backend costs
    less than an explicit `device_put`.
    """
    kind = np.asarray(kind, np.int32)
    pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    pred_mask, gt_mask = np.asarray(pred_mask, bool), np.asarray(gt_mask, bool)
    duration = np.asarray(duration, np.float64)
    # log2 of the segment buckets (>= 8) of every row's predictions and ground truths
    log_p = np.maximum(np.ceil(np.log2(np.maximum(pred_mask.sum(1), 1))).astype(np.int64), 3)
    log_g = np.maximum(np.ceil(np.log2(np.maximum(gt_mask.sum(1), 1))).astype(np.int64), 3)
    key = np.where(kind == KINDS["exact"], -1, (kind.astype(np.int64) * 64 + log_p) * 64 + log_g)
    # Rows of small off-square groups join the square group of their longer side if the batch has
    # one (fewer calls and compiled variants for little more padded work).
    uniq, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
    side = np.maximum(log_p, log_g)
    square = (kind.astype(np.int64) * 64 + side) * 64 + side
    join = (counts[inverse] < SMALL_GROUP) & (key >= 0) & np.isin(square, uniq)
    key = np.where(join, square, key)
    order = np.argsort(key, kind="stable")
    uniq, starts = np.unique(key[order], return_index=True)
    groups = []
    for k, rows in zip(uniq, np.split(order, starts[1:])):
        if k < 0:
            continue
        n, p, g = _row_bucket(len(rows), len(kind)), 1 << int(k // 64 % 64), 1 << int(k % 64)
        host = (
            _take(pred, rows, (n, p, 2), 0.0),
            _take(pred_mask, rows, (n, p), False),
            _take(gt, rows, (n, g, 2), 0.0),
            _take(gt_mask, rows, (n, g), False),
            _take(duration, rows, (n,), 1.0),
        )
        groups.append(Group(int(k // 4096), rows, host))
    # the costliest groups first, so that they start first when dispatched
    groups.sort(key=lambda grp: -grp.args[0].shape[0] * grp.args[0].shape[1] * grp.args[2].shape[1])
    return Prepared(len(kind), tuple(groups))


def dispatch(
    prepared: Prepared, sigma: float = 1.0, use_count_reward: bool = True, matching: str = "dp", tvg_form: str = "tiou"
) -> Pending:
    """Start the jitted call of every group and return without waiting (JAX dispatches
    asynchronously, so the host can parse the next rows meanwhile). The Type 3 options are as in `type3`,
    `tvg_form` as `tiou`'s `form`."""
    sigma = np.float64(sigma)
    variants = {KINDS["type3"]: (bool(use_count_reward), matching), KINDS["tiou"]: (tvg_form,)}
    with jax.enable_x64(True), jax.default_device(_cpu()):
        return Pending(
            prepared,
            tuple(
                _loc_rewards(*g.args, sigma, family=g.family, variant=variants.get(g.family, (True, "dp")))
                for g in prepared.groups
            ),
        )


def collect(pending: Pending) -> np.ndarray:
    """Localisation reward per row of a dispatched batch, float64 numpy [B] (waits for the calls)."""
    out = np.zeros(pending.prepared.size, np.float64)
    for g, r in zip(pending.prepared.groups, pending.results):
        out[g.rows] = np.asarray(r)[: len(g.rows)]
    return out


def run(
    prepared: Prepared, sigma: float = 1.0, use_count_reward: bool = True, matching: str = "dp", tvg_form: str = "tiou"
) -> np.ndarray:
    """Localisation reward per row of a `prepare`d batch, float64 numpy [B]: `collect(dispatch(...))`."""
    return collect(dispatch(prepared, sigma, use_count_reward, matching, tvg_form))


def loc_rewards(
    pred: np.ndarray,
    pred_mask: np.ndarray,
    gt: np.ndarray,
    gt_mask: np.ndarray,
    duration: np.ndarray,
    kind: np.ndarray,
    sigma: float = 1.0,
    use_count_reward: bool = True,
    matching: str = "dp",
    tvg_form: str = "tiou",
) -> np.ndarray:
    """Localisation reward per row, float64 numpy [B]: `run(prepare(...), sigma, ...)`.

    pred [B, P, 2] raw parsed (start, end) (NaN/inf allowed), pred_mask [B, P] (True = a parsed
    prediction, counted in N_pred even if invalid; present entries first); gt [B, G, 2]
    validated, gt_mask [B, G]; duration [B] > 0; kind [B] int codes from `KINDS` ("exact" rows
    get 0). The jitted function compiles once per (kind, padded shape).
    """
    return run(prepare(pred, pred_mask, gt, gt_mask, duration, kind), sigma, use_count_reward, matching, tvg_form)


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
    bb = bucket(b, 8)
    terms = np.zeros((bb, 3), np.float64)
    terms[:b] = np.stack([format_ok, loc, cls], -1)
    padded_weights = np.zeros((bb, 3), np.float64)
    padded_weights[:b] = weights
    with jax.enable_x64(True), jax.default_device(_cpu()):
        out = _total(terms, padded_weights)
    return np.asarray(out)[:b]
