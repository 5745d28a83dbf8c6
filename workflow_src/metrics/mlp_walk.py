"""The exact transition walk of an MLP along one closed path (Novak et al. 2018, §3.2).

``exact_transitions_polygon`` / ``exact_transitions_ellipse``: the k -> infinity limit of the
sampled estimator (transitions.py), found by walking from activation region to region. Inside
one region every pre-activation is affine in the input, so along a straight segment it is
affine in t and along an ellipse it is e + alpha cos(theta) + beta sin(theta); the next
breakpoint crossing is closed-form. The batched walks (mlp_walk_batched.py) and the CNN walk
(cnn_walk.py) share this module's tolerances, ``codes_ahead`` and ``piece_slopes``.

Degenerate cases in the walk (all resolved by ``codes_ahead`` and by counting code changes):
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
from dataclasses import dataclass

import numpy as np
import torch

from ..nets.models import MLP
from ..nets.spec import breakpoints

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
    # once per polygon segment or ellipse (``Walker.first_layer``); for a wide input it
    # costs most of a network pass, so a cost comparison adds it to ``evaluations``.
    first_layer_evaluations: int = 0


def codes_ahead(pre, derivs, bp, atol) -> torch.Tensor:
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


class Walker:
    """Evaluates one activation region: a forward pass with one-sided JVPs.

    ``torch.func.jvp`` differentiates relu at 0 with a fixed sub-gradient, whatever the
    direction of travel; the walk needs the slope of the region *ahead*, so this pass
    chooses each unit's piece with ``codes_ahead`` before pushing tangents through it.
    At any point off the breakpoints it equals ``torch.func.jvp`` (checked in the tests).
    """

    def __init__(self, model: MLP, dtype: torch.dtype, atol: float):
        param = next(model.parameters())
        self.bp = breakpoints(model.spec.activation, dtype, param.device)  # (P,)
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
        return codes_ahead(pre, derivs, self.bp, self.atol)

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


class Tally:
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
    walker = Walker(model, dtype, atol)
    verts = vertices.to(device=walker.bp.device, dtype=dtype).flatten(1)  # (V, d)
    n_vertices = len(verts)
    ones = torch.ones(1, 1, dtype=dtype, device=verts.device)  # slope = the tangent itself
    tally, start, codes = Tally(), None, None
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
    walker = Walker(model, dtype, atol)
    c, a, b = (v.to(device=walker.bp.device, dtype=dtype).flatten() for v in (center, a, b))
    first, tan_ab = walker.first_layer(c, torch.stack([a, b]))  # (U1,), (2, U1)
    tally, start, codes, theta = Tally(), None, None, 0.0
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
