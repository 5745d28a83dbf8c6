"""Transitions along closed trajectories (Novak et al. 2018, arXiv 1802.08760, §3.2).

A unit's *code* is the index of the linear piece of its activation that its pre-activation
lies in; the network's code c(z) concatenates every hidden unit's code. A transition is a
unit changing piece along a trajectory z(s), s in [0, 1).

Two estimators:
- ``sampled_transitions``: the paper's t = sum_{i<k} ||c(z_i) != c(z_{(i+1) mod k})||_1 over
  k equally spaced parameters, in bounded memory (chunks of s values);
- ``exact_transitions_polygon`` / ``exact_transitions_ellipse``: the k -> infinity limit,
  found by walking from activation region to region. Inside one region every pre-activation
  is affine in the input, so along a straight segment it is affine in t and along an ellipse
  it is e + alpha cos(theta) + beta sin(theta); the next breakpoint crossing is closed-form.
- ``exact_transitions_polygons`` / ``exact_transitions_ellipses``: the same walks for many
  paths of one network in lockstep, one batched region pass per step for every path still
  walking (a path leaves the batch when it is back at its start). They take the same
  decisions as the one-path walks, which stay as their reference (tests compare them path
  by path), and run many times faster: one pass over B paths costs about what one path's
  does, as a region pass on one path is dominated by per-call overhead.

Degenerate cases in the walk (all resolved by ``_codes_ahead`` and by counting code changes):
- the code used for a region is the piece the unit is in *just after* the current parameter:
  a pre-activation within ``atol * (1 + |p|)`` of a breakpoint p is placed by the sign of its
  first non-zero derivative along the path (value, then slope, then curvature);
- transitions are counted as the number of breakpoints between a unit's code before and after
  each step, so several units crossing at one parameter all count, and a unit that only
  touches a breakpoint (tangency, or a kink of the polygon exactly on a breakpoint) keeps its
  code and counts 0;
- a pre-activation that is constant along the path (zero slope) never crosses; if it sits
  exactly on a breakpoint it is given the lower piece, as ``activation_codes`` does;
- crossings at a vertex or at the start point are counted when the walk compares the code
  arriving at the vertex with the code leaving it (the start point: with the code on return);
- zero-length polygon segments (repeated vertices) are skipped.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from workflow_src.models import BREAKPOINTS, MLP

# A pre-activation within ATOL * (1 + |p|) of breakpoint p counts as lying on it.
ATOL = 1e-9
# A derivative below DERIV_RTOL times the unit's tangent norm counts as zero; on an ellipse
# this makes a pair of crossings less than ~1e-7 rad apart a tangency (counted 0).
DERIV_RTOL = 1e-7
# On an ellipse, a crossing root closer than this (rad) to the current angle is the touching
# point of a tangency just visited, not a crossing ahead; it also guarantees progress.
SAME_ANGLE = 1e-7
# Segment crossings within this fraction of a segment's end are resolved at the vertex.
SAME_VERTEX = 1e-12


@dataclass(frozen=True)
class WalkResult:
    """Outcome of an exact walk along a closed trajectory."""

    count: int  # number of unit breakpoint crossings (Novak §3.2 transitions)
    evaluations: int  # region passes from the second hidden layer on: a forward plus a JVP
    # per tangent direction, for each region visited
    crossings: np.ndarray  # (count,) path parameter s in [0, 1) of every crossing, sorted
    # Passes of the first hidden layer alone: a forward plus a JVP per tangent direction,
    # once per polygon segment or ellipse (``_Walker.first_layer``); for a wide input it
    # costs most of a network pass, so a cost comparison adds it to ``evaluations``.
    first_layer_evaluations: int = 0


def _breakpoints(model: MLP, dtype, device) -> torch.Tensor:
    """Sorted breakpoints of the model's activation, (P,); tanh has none and is refused."""
    name = model.spec.activation
    if not BREAKPOINTS[name]:
        raise ValueError(
            f"activation {name!r} is smooth and has no linear pieces, so activation codes "
            f"and transitions (Novak §3.2) are undefined; use one of "
            f"{sorted(k for k, v in BREAKPOINTS.items() if v)}"
        )
    return torch.tensor(sorted(BREAKPOINTS[name]), dtype=dtype, device=device)


@torch.no_grad()
def activation_codes(model: MLP, x: torch.Tensor) -> torch.Tensor:
    """c(x) of Novak §3.2: (B, ...) inputs -> (B, depth * width) int8 piece indices.

    A unit's code is the number of its activation's breakpoints strictly below its
    pre-activation (``torch.bucketize`` with ``right=False``), so relu gives 0 for z <= 0 and
    1 for z > 0; a pre-activation exactly on a breakpoint belongs to the lower piece.
    """
    pre = torch.cat(model.preactivations(x), dim=1)  # (B, U)
    bp = _breakpoints(model, pre.dtype, pre.device)  # (P,)
    return torch.bucketize(pre, bp, right=False).to(torch.int8)


@torch.no_grad()
def sampled_transitions(
    model: MLP,
    path: Callable[[torch.Tensor], torch.Tensor],
    k: int,
    chunk_size: int = 4096,
    codes: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> int:
    """The paper's sampled estimator t = sum_i ||c(z_i) != c(z_{(i+1) mod k})||_1 (Novak §3.2).

    ``path`` maps float64 parameters s (m,) in [0, 1) to points (m, ...); it is called on
    s_i = i / k chunk by chunk, so memory is O(chunk_size) for any k (the paper used 2^20).
    A unit counts 1 whenever its piece differs between neighbouring samples, however many
    breakpoints lie between them. Uses k forward passes, in the model's dtype. ``codes``
    maps points to their codes (B, U); by default the MLP's ``activation_codes``.
    """
    param = next(model.parameters())
    code_of = codes or (lambda x: activation_codes(model, x))
    return _sampled_count(lambda s: code_of(path(s).to(param)), k, chunk_size)


@torch.no_grad()
def sampled_transitions_polygon(model: MLP, vertices: torch.Tensor, k: int,
                                chunk_size: int = 4096) -> int:
    """``sampled_transitions`` along the closed polygon through ``vertices`` (V, ...), the
    path ``trajectories.polygon_points`` samples, without forming the k sample points.

    The first layer is affine, so at s = (i + t) / V its pre-activation is
    (1 - t) z1(v_i) + t z1(v_{i+1}): the first layer runs once per vertex instead of once per
    sample (for 784-input networks most of the work), and the rest of the network on the
    interpolated pre-activations. Equal to ``sampled_transitions`` up to the rounding of the
    two ways of forming z1 (tests compare the counts). Runs in the model's dtype.
    """
    param = next(model.parameters())
    n = len(vertices)
    z1 = model.hidden[0](vertices.to(param).flatten(start_dim=1))  # (V, width)
    bp = _breakpoints(model, param.dtype, param.device)

    def codes(s: torch.Tensor) -> torch.Tensor:
        u = s.to(device=param.device, dtype=torch.float64) * n
        seg = u.floor().long().clamp(0, n - 1)
        t = (u - seg).to(param.dtype)[:, None]
        z = (1 - t) * z1[seg] + t * z1[(seg + 1) % n]
        pre = [z]
        for layer in model.hidden[1:]:
            z = layer(model.activation(z))
            pre.append(z)
        return torch.bucketize(torch.cat(pre, dim=1), bp, right=False).to(torch.int8)

    return _sampled_count(codes, k, chunk_size)


def _sampled_count(codes_at: Callable[[torch.Tensor], torch.Tensor], k: int,
                   chunk_size: int) -> int:
    """Sum of code changes between neighbouring samples s_i = i / k, the closing pair
    included; ``codes_at`` maps parameters (m,) to codes (m, U)."""
    count = 0
    first = last = None  # (U,) codes of z_0 and of the previous chunk's last point
    for start in range(0, k, chunk_size):
        s = torch.arange(start, min(start + chunk_size, k), dtype=torch.float64) / k
        codes = codes_at(s)  # (m, U)
        count += int((codes[1:] != codes[:-1]).sum())
        if last is None:
            first = codes[0]
        else:
            count += int((codes[0] != last).sum())
        last = codes[-1]
    return count + int((first != last).sum())  # the pair (z_{k-1}, z_0) closes the loop


def _codes_ahead(pre, derivs, bp, atol) -> torch.Tensor:
    """Pieces just ahead along the path: pre (U,), derivs (m, U) successive path derivatives.

    Each unit is above breakpoint p when the first of (pre - p, derivs...) that is not zero
    (within tolerance) is positive; the code is the number of breakpoints it is above.
    """
    diff = pre[None, :] - bp[:, None]  # (P, U)
    side = torch.where(diff.abs() <= atol * (1 + bp.abs())[:, None], 0.0, diff).sign()
    for d in derivs:  # a derivative is the same for every breakpoint
        side = torch.where(side == 0, d.sign()[None, :], side)
    return (side > 0).sum(dim=0)


def piece_slopes(act, bp: torch.Tensor) -> torch.Tensor:
    """The activation's slope on each of its P + 1 pieces (P breakpoints ``bp``), as a secant
    between two points well inside each piece: autograd's slope of hardsigmoid is 1/6 rounded
    to float32, which would put the predicted crossings of deeper layers ~1e-8 off their
    breakpoints. (Also the CNN walk's, metrics/cnn_walk.py.)"""
    gaps = (bp[1:] - bp[:-1]) / 4
    left = torch.cat([bp[:1] - 2, bp[:-1] + gaps, bp[-1:] + 1])
    right = torch.cat([bp[:1] - 1, bp[1:] - gaps, bp[-1:] + 2])
    return (act(right) - act(left)) / (right - left)


class _Walker:
    """Evaluates one activation region: a forward pass with one-sided JVPs.

    ``torch.func.jvp`` differentiates relu at 0 with a fixed sub-gradient, whatever the
    direction of travel; the walk needs the slope of the region *ahead*, so this pass
    chooses each unit's piece with ``_codes_ahead`` before pushing tangents through it.
    At any point off the breakpoints it equals ``torch.func.jvp`` (checked in the tests).
    """

    def __init__(self, model: MLP, dtype: torch.dtype, atol: float):
        param = next(model.parameters())
        self.bp = _breakpoints(model, dtype, param.device)  # (P,)
        self.model = copy.deepcopy(model).to(dtype)
        self.atol = atol
        self.slopes = piece_slopes(self.model.activation, self.bp)
        inf = torch.tensor([math.inf], dtype=dtype, device=param.device)
        self.bounds = torch.cat([-inf, self.bp, inf])  # piece c spans (bounds[c], bounds[c+1])

    @torch.no_grad()
    def first_layer(self, z, dirs):
        """Pre-activations (U1,) at z (d,) and tangents (D, U1) along dirs (D, d) of the first
        hidden layer. It is affine in the input in every region, so along a segment or an
        ellipse it is computed once and the per-region passes start at the second layer."""
        layer = self.model.hidden[0]
        return layer(z.reshape(1, -1))[0], dirs.reshape(len(dirs), -1) @ layer.weight.T

    def _codes(self, pre, tan, deriv_coeffs):
        """Codes ahead (W,) of one layer from its pre-activations (W,) and tangents (D, W)."""
        derivs = deriv_coeffs @ tan  # (m, W)
        derivs = torch.where(derivs.abs() <= DERIV_RTOL * tan.norm(dim=0), 0.0, derivs)
        return _codes_ahead(pre, derivs, self.bp, self.atol)

    @torch.no_grad()
    def region(self, pre, tan, deriv_coeffs):
        """First-layer pre (U1,), tangents (D, U1) -> pre (U,), tangents (D, U), codes (U,)
        of every hidden layer, each layer's pieces chosen ahead along the path.

        ``deriv_coeffs`` (m, D) gives the path's successive derivatives of a pre-activation
        as linear combinations of its tangents.
        """
        pres, tans, codes = [pre], [tan], []
        for layer in self.model.hidden[1:]:
            codes.append(self._codes(pre, tan, deriv_coeffs))
            slope = self.slopes[codes[-1]]  # (W,) slope of each unit's piece ahead
            pre = layer(self.model.activation(pre)[None])[0]
            tan = (tan * slope) @ layer.weight.T  # the bias has no tangent
            pres.append(pre)
            tans.append(tan)
        codes.append(self._codes(pre, tan, deriv_coeffs))
        return torch.cat(pres), torch.cat(tans, dim=1), torch.cat(codes)


class _Tally:
    """Counts code changes between consecutive regions and where they happen."""

    def __init__(self):
        self.count, self.evaluations, self.first_layer_evaluations, self.where = 0, 0, 0, []

    def step(self, old, new, s: float) -> None:
        n = int((new - old).abs().sum())  # breakpoints between the two pieces, per unit
        self.count += n
        self.where += [s] * n

    def result(self) -> WalkResult:
        return WalkResult(self.count, self.evaluations, np.sort(np.asarray(self.where)),
                          self.first_layer_evaluations)


def _segment_exit(pre, slope, codes, bounds) -> float:
    """Largest step t' with every unit inside its piece on [t, t + t') of a segment.

    pre, slope, codes (U,): a unit moving up leaves through its upper breakpoint, one moving
    down through its lower; a constant unit (slope 0) never leaves.
    """
    target = torch.where(slope > 0, bounds[codes + 1], bounds[codes])  # (U,)
    step = (target - pre) / slope
    step = torch.where((slope != 0) & step.isfinite(), step, math.inf)
    return float(step.min())


def exact_transitions_polygon(
    model: MLP, vertices: torch.Tensor, dtype: torch.dtype = torch.float64, atol: float = ATOL
) -> WalkResult:
    """Exact transitions along the closed chain vertices[0] -> ... -> vertices[V-1] -> vertices[0].

    vertices (V, ...). Segment i is traversed as z = u + t (v - u), t in [0, 1]; crossings
    are reported at s = (i + t) / V, the parameter of ``trajectories.polygon_points``.
    ``evaluations`` counts one forward and one JVP per region visited, both from the second
    hidden layer on; ``first_layer_evaluations`` counts the first layer's, two per segment.
    """
    walker = _Walker(model, dtype, atol)
    verts = vertices.to(device=walker.bp.device, dtype=dtype).flatten(1)  # (V, d)
    n_vertices = len(verts)
    ones = torch.ones(1, 1, dtype=dtype, device=verts.device)  # slope = the tangent itself
    tally, start, codes = _Tally(), None, None
    for i in range(n_vertices):
        u, v = verts[i], verts[(i + 1) % n_vertices]
        if torch.equal(u, v):
            continue  # no direction to decide the region ahead, and nothing to cross
        first, slope = walker.first_layer(u, (v - u)[None])  # (U1,), (1, U1)
        tally.first_layer_evaluations += 2
        t = 0.0
        while True:
            pre, tan, new = walker.region(first + t * slope[0], slope, ones)
            tally.evaluations += 2
            if codes is None:
                start = new
            else:
                tally.step(codes, new, (i + t) / n_vertices)
            codes = new
            t_exit = t + _segment_exit(pre, tan[0], codes, walker.bounds)
            if t_exit >= 1 - SAME_VERTEX:
                break
            if t_exit <= t:  # cannot happen with codes chosen ahead; never loop forever
                raise RuntimeError(f"region walk stalled on segment {i} at t = {t}")
            t = t_exit
    if codes is not None:
        tally.step(codes, start, 0.0)  # arriving back at vertex 0 against leaving it
    return tally.result()


def _ellipse_exit(pre, alpha, beta, theta: float, codes, bounds) -> float:
    """Angle to the first piece exit ahead, inside a region where pre(theta') = e + alpha
    cos(theta') + beta sin(theta') (all (U,)). With R, phi the amplitude and phase,
    pre = e + R cos(theta' - phi) rises through level p at phi - acos((p - e) / R) and falls
    through it at phi + acos((p - e) / R); only the exit in the right direction counts."""
    e = pre - alpha * math.cos(theta) - beta * math.sin(theta)
    amp, phase = torch.hypot(alpha, beta), torch.atan2(beta, alpha)
    best = math.inf
    for level, sign in ((bounds[codes + 1], -1.0), (bounds[codes], 1.0)):
        q = (level - e) / amp  # inf / nan for an unbounded side or a constant unit
        root = phase + sign * torch.acos(q.clamp(-1, 1))
        delta = torch.remainder(root - theta, 2 * math.pi)
        ok = (q.abs() <= 1) & (delta > SAME_ANGLE) & (delta < 2 * math.pi - SAME_ANGLE)
        if ok.any():
            best = min(best, float(delta[ok].min()))
    return best


def exact_transitions_ellipse(
    model: MLP,
    center: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    dtype: torch.dtype = torch.float64,
    atol: float = ATOL,
) -> WalkResult:
    """Exact transitions along z(theta) = c + a cos(theta) + b sin(theta), theta in [0, 2 pi).

    center, a, b (...) of one input's shape. In a region with linear map L (the region's
    Jacobian of pre-activations), alpha = L a and beta = L b are the JVPs along a and b, and
    e = pre(theta) - alpha cos(theta) - beta sin(theta). Crossings are reported at
    s = theta / (2 pi). ``evaluations`` counts one forward and two JVPs per region visited
    (from the second hidden layer on, as for polygons); the first layer's three passes are
    in ``first_layer_evaluations``.
    """
    walker = _Walker(model, dtype, atol)
    c, a, b = (v.to(device=walker.bp.device, dtype=dtype).flatten() for v in (center, a, b))
    first, tan_ab = walker.first_layer(c, torch.stack([a, b]))  # (U1,), (2, U1)
    tally, start, codes, theta = _Tally(), None, None, 0.0
    tally.first_layer_evaluations = 3
    while True:
        cos, sin = math.cos(theta), math.sin(theta)
        # rows: d/dtheta = -sin * L a + cos * L b, then d2/dtheta2 = -cos * L a - sin * L b
        coeffs = torch.tensor([[-sin, cos], [-cos, -sin]], dtype=dtype, device=c.device)
        pre, tan, new = walker.region(first + cos * tan_ab[0] + sin * tan_ab[1], tan_ab, coeffs)
        tally.evaluations += 3
        if codes is None:
            start = new
        else:
            tally.step(codes, new, theta / (2 * math.pi))
        codes = new
        theta += _ellipse_exit(pre, tan[0], tan[1], theta, codes, walker.bounds)
        if theta >= 2 * math.pi - SAME_ANGLE:
            break
    tally.step(codes, start, 0.0)  # the code on return to theta = 2 pi against leaving 0
    return tally.result()


# ---------------------------------------------------------------------------------------------
# Batched walks: many paths of one network in lockstep. Every function below is the batched
# twin of the one-path function it names, with a leading batch axis B (the paths still
# walking) and the same decisions, so each path's count equals its one-path walk's.


def _codes_ahead_batch(pre, derivs, bp, atol) -> torch.Tensor:
    """``_codes_ahead`` for B paths: pre (B, U), derivs (B, m, U) -> codes (B, U)."""
    diff = pre[:, None, :] - bp[None, :, None]  # (B, P, U)
    side = torch.where(diff.abs() <= atol * (1 + bp.abs())[None, :, None], 0.0, diff).sign()
    for j in range(derivs.shape[1]):
        side = torch.where(side == 0, derivs[:, j, None, :].sign(), side)
    return (side > 0).sum(dim=1)


def _batch_codes(walker: _Walker, pre, tan, deriv_coeffs) -> torch.Tensor:
    """``_Walker._codes`` for B paths: pre (B, W), tangents (B, D, W), coeffs (B, m, D).

    deriv_coeffs None means the one tangent is the only derivative (a segment): then the
    relative zero test below is |d| <= DERIV_RTOL |d|, true only for d = 0, and is skipped.
    """
    if deriv_coeffs is None:
        return _codes_ahead_batch(pre, tan, walker.bp, walker.atol)
    derivs = deriv_coeffs @ tan  # (B, m, W)
    small = derivs.abs() <= DERIV_RTOL * tan.norm(dim=1)[:, None, :]
    return _codes_ahead_batch(pre, torch.where(small, 0.0, derivs), walker.bp, walker.atol)


@torch.no_grad()
def _batch_regions(walker: _Walker, pre, tan, deriv_coeffs):
    """``_Walker.region`` for B paths: first-layer pre (B, U1), tangents (B, D, U1) ->
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
    """``_Tally`` for paths 0..N-1 walked in lockstep, each step touching a subset of them."""

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


def _segment_exits(pre, slope, codes, bounds) -> torch.Tensor:
    """``_segment_exit`` for B paths: pre, slope, codes (B, U) -> largest steps t' (B,)."""
    target = torch.where(slope > 0, bounds[codes + 1], bounds[codes])  # (B, U)
    step = (target - pre) / slope
    step = torch.where((slope != 0) & step.isfinite(), step, math.inf)
    return step.amin(dim=1)


def _polygon_segments(walker: _Walker, polygons, dtype):
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
    walker = _Walker(model, dtype, atol)
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
        t_exit = t + _segment_exits(pre, tan[:, 0], codes, walker.bounds)
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
    walker = _Walker(model, dtype, atol)
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
