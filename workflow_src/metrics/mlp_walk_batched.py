"""Batched exact walks: many paths of one MLP in lockstep (Novak et al. 2018, §3.2).

Every function here is the batched twin of the one-path function of mlp_walk.py it names,
with a leading batch axis B (the paths still walking) and the same decisions, so each path's
count equals its one-path walk's (tests compare them path by path). Each step runs one
batched region pass for every path still walking; a path leaves the batch when it is back at
its start. One pass over B paths costs about what one path's does, as a region pass on one
path is dominated by per-call overhead.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..nets.models import MLP
from .mlp_walk import ATOL, DERIV_RTOL, SAME_ANGLE, SAME_VERTEX, WalkResult, Walker


def _codes_ahead_batch(pre, derivs, bp, atol) -> torch.Tensor:
    """``codes_ahead`` for B paths: pre (B, U), derivs (B, m, U) -> codes (B, U)."""
    diff = pre[:, None, :] - bp[None, :, None]  # (B, P, U)
    side = torch.where(diff.abs() <= atol * (1 + bp.abs())[None, :, None], 0.0, diff).sign()
    for j in range(derivs.shape[1]):
        side = torch.where(side == 0, derivs[:, j, None, :].sign(), side)
    return (side > 0).sum(dim=1)


def _batch_codes(walker: Walker, pre, tan, deriv_coeffs) -> torch.Tensor:
    """``Walker._codes`` for B paths: pre (B, W), tangents (B, D, W), coeffs (B, m, D).

    deriv_coeffs None means the one tangent is the only derivative (a segment): then the
    relative zero test below is |d| <= DERIV_RTOL |d|, true only for d = 0, and is skipped.
    """
    if deriv_coeffs is None:
        return _codes_ahead_batch(pre, tan, walker.bp, walker.atol)
    derivs = deriv_coeffs @ tan  # (B, m, W)
    small = derivs.abs() <= DERIV_RTOL * tan.norm(dim=1)[:, None, :]
    return _codes_ahead_batch(pre, torch.where(small, 0.0, derivs), walker.bp, walker.atol)


@torch.no_grad()
def _batch_regions(walker: Walker, pre, tan, deriv_coeffs):
    """``Walker.region`` for B paths: first-layer pre (B, U1), tangents (B, D, U1) ->
    pre (B, U), tangents (B, D, U), codes (B, U); one linear pass per layer for all paths.
    deriv_coeffs (B, m, D) as in ``region``, or None along segments (see ``_batch_codes``)."""
    pres, tans, codes = [pre], [tan], []
    for layer in walker.model.hidden[1:]:
        codes.append(_batch_codes(walker, pre, tan, deriv_coeffs))
        slope = walker.slopes[codes[-1]]  # (B, W) slope of each unit's piece ahead
        pre = layer(walker.model.activation(pre))
        tan = (tan * slope[:, None, :]) @ layer.weight.T  # the bias has no tangent
        pres.append(pre)
        tans.append(tan)
    codes.append(_batch_codes(walker, pre, tan, deriv_coeffs))
    return torch.cat(pres, dim=1), torch.cat(tans, dim=2), torch.cat(codes, dim=1)


class _BatchTally:
    """``Tally`` for paths 0..N-1 walked in lockstep, each step touching a subset of them."""

    def __init__(self, n_paths: int, device):
        self.count = torch.zeros(n_paths, dtype=torch.long, device=device)
        self.regions = torch.zeros(n_paths, dtype=torch.long, device=device)
        # (paths (A,), s (A,), breakpoints crossed (A,)) of every step, from an empty one
        empty = torch.zeros(0, dtype=torch.long, device=device)
        self.steps = [(empty, torch.zeros(0, dtype=torch.float64, device=device), empty)]

    def leave(self, paths, steps: int) -> None:
        """paths (A,) are done after visiting one region per step of the walk."""
        self.regions[paths] = steps

    def step(self, paths, old, new, s) -> None:
        """paths (A,) moved from codes old (A, U) to new (A, U) at path parameters s (A,)."""
        n = (new - old).abs().sum(dim=1)  # breakpoints between the two pieces, summed over units
        self.count.index_add_(0, paths, n)
        self.steps.append((paths, s, n))

    def results(self, passes_per_region: int, first_layer_evaluations) -> list[WalkResult]:
        """One WalkResult per path; first_layer_evaluations (N,) ints."""
        paths, where, n = (torch.cat(parts).cpu().numpy() for parts in zip(*self.steps))
        paths, where = np.repeat(paths, n), np.repeat(where, n)  # one entry per crossing
        order = np.lexsort((where, paths))  # by path, then by s
        bounds = np.searchsorted(paths[order], np.arange(len(self.count) + 1))
        crossings = np.split(where[order], bounds[1:-1])
        return [WalkResult(int(count), passes_per_region * int(regions), crossed,
                           int(first))
                for count, regions, crossed, first in zip(
                    self.count.tolist(), self.regions.tolist(), crossings,
                    first_layer_evaluations)]


def segment_exits(pre, slope, codes, bounds) -> torch.Tensor:
    """``_segment_exit`` for B paths: pre, slope, codes (B, U) -> largest steps t' (B,)."""
    target = torch.where(slope > 0, bounds[codes + 1], bounds[codes])  # (B, U)
    step = (target - pre) / slope
    step = torch.where((slope != 0) & step.isfinite(), step, math.inf)
    return step.amin(dim=1)


def _polygon_segments(walker: Walker, polygons, dtype):
    """Every polygon's non-degenerate segments, concatenated (S of them in all).

    Returns first-layer pre-activations at each segment's start (S, U1) and slopes along it
    (S, U1), each segment's vertex index i (S,) as a float, and per polygon its vertex count
    (N,) and the range [begin, end) of its segments, (N,) and (N,). Repeated vertices give
    zero-length segments, skipped as the one-path walk does.
    """
    starts, ends, index, n_vertices, n_segments = [], [], [], [], []
    for vertices in polygons:
        verts = vertices.to(device=walker.bp.device, dtype=dtype).flatten(1)  # (V, d)
        following = verts.roll(-1, dims=0)
        moving = (verts != following).any(dim=1)  # not torch.equal(u, v)
        starts.append(verts[moving])
        ends.append(following[moving])
        index.append(torch.nonzero(moving).flatten())
        n_vertices.append(len(verts))
        n_segments.append(int(moving.sum()))
    starts, ends = torch.cat(starts), torch.cat(ends)  # (S, d)
    layer = walker.model.hidden[0]
    with torch.no_grad():
        pre, slope = layer(starts), (ends - starts) @ layer.weight.T  # (S, U1) each
    counts = torch.tensor(n_segments, device=pre.device)
    end = counts.cumsum(0)
    n_vertices = torch.tensor(n_vertices, dtype=dtype, device=pre.device)
    return pre, slope, torch.cat(index).to(dtype), n_vertices, end - counts, end


def exact_transitions_polygons(
    model: MLP, polygons, dtype: torch.dtype = torch.float64, atol: float = ATOL
) -> list[WalkResult]:
    """``exact_transitions_polygon`` for every polygon of ``polygons`` in lockstep.

    polygons: a sequence of N vertex tensors (V_n, ...) of one input shape (V_n may differ),
    or one (N, V, ...) tensor. Each step runs one region pass for every polygon still
    walking; a polygon leaves the batch when it has walked its last segment. Memory is
    O(N V d) for the vertices in ``dtype`` plus O(N V U1) for their first-layer passes: chunk
    the polygons if that is too much. Returns one WalkResult per polygon, in order.
    """
    if not len(polygons):
        return []
    walker = Walker(model, dtype, atol)
    seg_pre, seg_slope, seg_index, n_vertices, seg, seg_end = _polygon_segments(
        walker, polygons, dtype)
    tally = _BatchTally(len(n_vertices), seg_pre.device)
    first_layer = (2 * (seg_end - seg)).tolist()
    paths = torch.nonzero(seg < seg_end).flatten()  # polygons with a segment to walk
    seg, seg_end = seg[paths], seg_end[paths]
    t = torch.zeros(len(paths), dtype=dtype, device=seg_pre.device)
    codes = start = None
    steps = 0
    while len(paths):
        slope = seg_slope[seg]  # (A, U1)
        pre, tan, new = _batch_regions(walker, seg_pre[seg] + t[:, None] * slope,
                                       slope[:, None, :], None)
        steps += 1
        if codes is None:
            start = new
        else:
            tally.step(paths, codes, new, (seg_index[seg] + t) / n_vertices[paths])
        codes = new
        t_exit = t + segment_exits(pre, tan[:, 0], codes, walker.bounds)
        leaving = t_exit >= 1 - SAME_VERTEX
        if (~leaving & (t_exit <= t)).any():  # cannot happen with codes chosen ahead
            raise RuntimeError(f"region walk stalled on polygons {paths[~leaving & (t_exit <= t)]}")
        t, seg = torch.where(leaving, 0.0, t_exit), seg + leaving
        done = seg == seg_end
        if done.any():  # back at vertex 0: the code arriving there against leaving it
            tally.step(paths[done], codes[done], start[done], torch.zeros_like(t[done]))
            tally.leave(paths[done], steps)
            keep = ~done
            paths, seg, seg_end, t = paths[keep], seg[keep], seg_end[keep], t[keep]
            codes, start = codes[keep], start[keep]
    return tally.results(passes_per_region=2, first_layer_evaluations=first_layer)


def _ellipse_exits(pre, alpha, beta, theta, codes, bounds) -> torch.Tensor:
    """``_ellipse_exit`` for B paths: pre, alpha, beta, codes (B, U), theta (B,) -> the angle
    to each path's first piece exit ahead (B,), inf where there is none."""
    e = pre - alpha * theta.cos()[:, None] - beta * theta.sin()[:, None]
    amp, phase = torch.hypot(alpha, beta), torch.atan2(beta, alpha)
    best = torch.full_like(theta, math.inf)
    for level, sign in ((bounds[codes + 1], -1.0), (bounds[codes], 1.0)):
        q = (level - e) / amp  # inf / nan for an unbounded side or a constant unit
        root = phase + sign * torch.acos(q.clamp(-1, 1))
        delta = torch.remainder(root - theta[:, None], 2 * math.pi)
        ok = (q.abs() <= 1) & (delta > SAME_ANGLE) & (delta < 2 * math.pi - SAME_ANGLE)
        best = torch.minimum(best, torch.where(ok, delta, math.inf).amin(dim=1))
    return best


def exact_transitions_ellipses(
    model: MLP,
    centers: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    dtype: torch.dtype = torch.float64,
    atol: float = ATOL,
) -> list[WalkResult]:
    """``exact_transitions_ellipse`` for E ellipses z_n(theta) = c_n + a_n cos + b_n sin in
    lockstep: centers, a, b (E, ...). Each step runs one region pass (a forward and the JVPs
    along a_n and b_n) for every ellipse still walking; an ellipse leaves the batch when its
    angle reaches 2 pi. Returns one WalkResult per ellipse, in order.
    """
    walker = Walker(model, dtype, atol)
    c, a, b = (v.to(device=walker.bp.device, dtype=dtype).flatten(1) for v in (centers, a, b))
    layer = walker.model.hidden[0]
    with torch.no_grad():  # the first layer at c and along a, b: (E, U1), (E, 2, U1)
        first, tan_ab = layer(c), torch.stack([a, b], dim=1) @ layer.weight.T
    tally = _BatchTally(len(c), c.device)
    paths = torch.arange(len(c), device=c.device)
    theta = torch.zeros(len(c), dtype=dtype, device=c.device)
    codes, start, steps = None, None, 0
    while len(paths):
        cos, sin = theta.cos(), theta.sin()
        # rows: d/dtheta = -sin * L a + cos * L b, then d2/dtheta2 = -cos * L a - sin * L b
        coeffs = torch.stack([torch.stack([-sin, cos], 1), torch.stack([-cos, -sin], 1)], 1)
        tan = tan_ab[paths]  # (A, 2, U1)
        pre1 = first[paths] + cos[:, None] * tan[:, 0] + sin[:, None] * tan[:, 1]
        pre, tan, new = _batch_regions(walker, pre1, tan, coeffs)
        steps += 1
        if codes is None:
            start = new
        else:
            tally.step(paths, codes, new, theta / (2 * math.pi))
        codes = new
        theta = theta + _ellipse_exits(pre, tan[:, 0], tan[:, 1], theta, codes, walker.bounds)
        done = theta >= 2 * math.pi - SAME_ANGLE
        if done.any():  # the code on return to theta = 2 pi against leaving 0
            tally.step(paths[done], codes[done], start[done], torch.zeros_like(theta[done]))
            tally.leave(paths[done], steps)
            keep = ~done
            paths, theta, codes, start = paths[keep], theta[keep], codes[keep], start[keep]
    return tally.results(passes_per_region=3, first_layer_evaluations=[3] * len(c))
