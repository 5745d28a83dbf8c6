"""Exact transitions of piecewise-linear CNNs along closed polygons (Novak et al. 2018, §3.2).

The CNN twin of ``exact_transitions_polygons`` (mlp_walk_batched.py). It applies to networks
whose every nonlinearity is piecewise linear: a ReLU-family activation (relu, relu6, hard_tanh,
hard_sigmoid) and max-pooling, with batch norm in eval mode (a fixed affine map), i.e.
``inception_small`` (with or without batch norm) and ``wrn`` of workflow_src/nets/cnns.py. Such a
network is affine on each region of constant code (``activation_codes`` of
workflow_src/nets/cnn_codes.py: every activation unit's piece, every max-pool output's argmax
in its window), so along a segment x(t) = a + t (b - a), t in [0, 1], every pre-activation
z_u(t) and every max-pool window entry v(t) is affine in t inside a region.

The walk, per segment: at the current t, one forward pass with a forward-mode JVP along
b - a (``torch.autograd.forward_ad`` dual tensors, float64) gives every z_u, v and their
t-derivatives. Every leaf module's forward is temporarily replaced by a dual rule
(``_Walker._dual_modules``): affine maps (conv, linear, eval batch norm) push the tangent
through their linear part; the activations and max-pools are one-sided, choosing the piece /
argmax *ahead* along the path before pushing the tangent through it (autograd would use a
fixed sub-gradient at a kink, or the first of tied maxima, whatever the direction of
travel). The primal values are the module's own forward, so the codes are
``activation_codes``'s (the concatenations, sums and means between modules run on dual
tensors natively). The next event t* > t is the nearest of: a unit reaching the breakpoint
it moves towards (``mlp_walk_batched.segment_exits``), or another entry of a max-pool window
overtaking the chosen one, at (v_c - v_k) / (v_k' - v_c') for every entry k rising faster
than the chosen c. The walk steps to t*, evaluates the region there (codes chosen ahead),
and counts the code changes from the previous region: for a unit the number of breakpoints
between its two pieces, for a window 1 if its argmax changed, so simultaneous events each
count. Segment ends are joined as in the MLP walk: the code arriving at vertex i + 1 against
the code leaving it along the next segment, and the code returning to vertex 0 against the
one that left it. Zero-length segments are skipped.

Ties ("ahead" rules, matching what ``activation_codes`` gives just after the current point):
- a pre-activation within ``ATOL * (1 + |p|)`` of breakpoint p is placed by the sign of its
  derivative (``mlp_walk.codes_ahead``); one with zero derivative sitting on p gets the
  lower piece, as ``activation_codes`` (bucketize, right=False) does;
- in a max-pool window, the entries within ``ATOL * (1 + |max|)`` of the maximum are tied; among
  them those whose derivative is within ``DERIV_RTOL * (|v_k'| + |v_max'|)`` of the largest
  derivative, and among those the lowest row-major position, which is PyTorch's own choice
  among exactly equal maxima (entries tied for a whole region, e.g. several dead ReLUs at 0 or
  saturated hard_tanh units at 1, keep it); an entry whose derivative exceeds the chosen one's
  by no more than that tolerance never overtakes it (it runs parallel to it); padding (-inf)
  never wins;
- events within ``mlp_walk.SAME_VERTEX`` of a segment's end are resolved at the vertex.
``ATOL`` (1e-9) and ``DERIV_RTOL`` (1e-7) are mlp_walk.py's: float64 passes at the point
reached put a unit that is crossing within ~1e-14 of its breakpoint, far inside ATOL, while
a unit that is not crossing lies ~1e-9 or closer to a breakpoint only with probability ~1e-9
per unit and region; were one so placed, it is counted a step early, not twice or never.

Cost: one dual pass (about two forwards) per region, and regions are many: on 1 x 28 x 28
inputs a translation polygon crosses ~5e5 code changes of a WRN-10-1 (~5 ms per region on
one CPU thread: ~40 min per point) and ~3e6 of inception_small (~50 ms per region: ~40 h per
point), estimated from walks of part of one segment.

Many segments (of one or several polygons) are walked in lockstep: one batched dual pass per
step for every segment still walking, up to ``batch_size`` at a time, a finished segment's slot
refilled from the queue. Each segment's decisions do not depend on the others in its batch.
"""

from __future__ import annotations

import copy
import math
from contextlib import contextmanager

import numpy as np
import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch import nn

from ..nets.spec import ACTIVATIONS, BREAKPOINTS
from .mlp_walk import ATOL, DERIV_RTOL, SAME_VERTEX, WalkResult, codes_ahead, piece_slopes
from .mlp_walk_batched import segment_exits

# Leaf modules the walk understands: affine maps, and the piecewise-linear nonlinearities
# (the activation class of spec.activation and nn.MaxPool2d). Anything else is refused.
AFFINE_MODULES = (nn.Conv2d, nn.Linear, nn.BatchNorm2d, nn.Identity, nn.Flatten)
SMOOTH_NOTE = (
    "{!r} contains {} (local response normalisation), which is smooth: its regions of fixed "
    "activation / max-pool pattern are not linear regions, so the exact walk's argument does "
    "not hold; use the sampled estimator (transitions.sampled_transitions) for it")
BATCH_SIZE = 8  # segments per dual pass


def walk_problem(model: nn.Module) -> str | None:
    """None if every nonlinearity of ``model`` is piecewise linear (its activation,
    ``model.spec.activation``, has breakpoints and every leaf module is affine, that
    activation, or a max-pool), else a one-line message saying why the walk does not apply."""
    spec = model.spec
    name = getattr(spec, "architecture", type(model).__name__)
    if name == "mlp":
        return "an MLP: use transitions.exact_transitions_polygons"
    if any(isinstance(m, nn.LocalResponseNorm) for m in model.modules()):
        return SMOOTH_NOTE.format(name, "nn.LocalResponseNorm")
    if not BREAKPOINTS[spec.activation]:
        return (f"activation {spec.activation!r} is smooth and has no linear pieces, so "
                f"activation codes and transitions (Novak §3.2) are undefined; use one of "
                f"{sorted(k for k, v in BREAKPOINTS.items() if v)}")
    act_cls = ACTIVATIONS[spec.activation]
    for m in model.modules():
        if next(m.children(), None) is not None:
            continue  # a container: its leaves are checked
        if isinstance(m, nn.Conv2d) and m.padding_mode != "zeros":
            return "the walk needs zero-padded convolutions"
        if isinstance(m, nn.BatchNorm2d) and m.running_var is None:
            return ("the walk needs batch norm with running statistics (in eval mode it is "
                    "then a fixed affine map)")
        if type(m) is act_cls or isinstance(m, AFFINE_MODULES):
            continue
        if isinstance(m, nn.MaxPool2d):
            k, s, p = m.kernel_size, m.stride, m.padding
            if not all(isinstance(v, int) for v in (k, s, p)) or m.dilation != 1 or m.ceil_mode:
                return "the walk needs square, undilated, floor-mode max-pools"
            continue
        return (f"{name!r} contains {type(m).__name__}, not a piecewise-linear module the "
                f"exact walk understands (affine maps, {act_cls.__name__}, MaxPool2d)")
    return None


def check_walkable(model: nn.Module) -> None:
    """Raise ValueError with ``walk_problem``'s message unless the walk applies."""
    problem = walk_problem(model)
    if problem is not None:
        raise ValueError(problem)


class _Region:
    """One region pass for B paths: what the dual rules record, in execution order."""

    def __init__(self):
        self.units = []  # (pre (B, N), slope (B, N), codes (B, N)) per activation layer
        self.pools = []  # (values (B, M, K), slopes (B, M, K), argmax (B, M)) per max-pool
        self.order = []  # the codes of each layer in execution order, as in activation_codes

    def execution_codes(self) -> torch.Tensor:
        """(B, U + M) int16 codes in ``nets/cnn_codes.py``'s ``activation_codes`` order."""
        return torch.cat([c.flatten(1).to(torch.int16) for c in self.order], 1)

    def codes(self):
        """Activation codes (B, U) int8 and max-pool argmax codes (B, M) int8."""
        b = (self.units or self.pools)[0][0].shape[0]
        act = [c.to(torch.int8) for _, _, c in self.units]
        pool = [i.to(torch.int8) for _, _, i in self.pools]
        empty = torch.zeros(b, 0, dtype=torch.int8)
        return (torch.cat(act, 1) if act else empty), (torch.cat(pool, 1) if pool else empty)

    def exits(self, bounds) -> torch.Tensor:
        """Step (B,) to the nearest event ahead of each path, inf where there is none."""
        b = (self.units or self.pools)[0][0].shape[0]
        best = torch.full((b,), math.inf, dtype=torch.float64)
        for pre, slope, codes in self.units:
            best = torch.minimum(best, segment_exits(pre, slope, codes.long(), bounds))
        for v, dv, idx in self.pools:
            vc = v.gather(2, idx[..., None])  # (B, M, 1) the chosen entry
            dc = dv.gather(2, idx[..., None])
            gain = dv - dc
            rising = (gain > DERIV_RTOL * (dv.abs() + dc.abs())) & torch.isfinite(v)
            step = torch.where(rising, (vc - v) / gain, math.inf)
            best = torch.minimum(best, step.flatten(1).amin(1))
        return best


class _Walker:
    """A float64 eval-mode copy of the network and its one-sided dual pass."""

    def __init__(self, model: nn.Module, dtype: torch.dtype, atol: float):
        check_walkable(model)
        self.model = copy.deepcopy(model).to(dtype).eval()
        self.dtype, self.atol = dtype, atol
        self.act_cls = ACTIVATIONS[model.spec.activation]
        self.bp = torch.tensor(sorted(BREAKPOINTS[model.spec.activation]), dtype=dtype)
        self.slopes = piece_slopes(self.act_cls(), self.bp)
        inf = torch.tensor([math.inf], dtype=dtype)
        self.bounds = torch.cat([-inf, self.bp, inf])

    # Each leaf module's dual forward: (primal, tangent) in, (primal, tangent) out. The primal
    # is what the module itself computes; affine maps push the tangent through their linear
    # part. (PyTorch's own forward-mode rules for eval batch norm run through a slow Python
    # decomposition: patching the modules keeps one pass near the cost of two forwards.)

    def _act(self, module, region, x, dx):
        flat, dflat = x.flatten(1), dx.flatten(1)
        codes = codes_ahead(flat.reshape(-1), dflat.reshape(1, -1), self.bp, self.atol)
        codes = codes.reshape(flat.shape)
        region.units.append((flat, dflat, codes))
        region.order.append(codes)
        return type(module).forward(module, x), self.slopes[codes].reshape(x.shape) * dx

    def _pool(self, module, region, x, dx):
        k, s, p = module.kernel_size, module.stride, module.padding
        v = F.pad(x, (p, p, p, p), value=-math.inf).unfold(2, k, s).unfold(3, k, s)
        shape = v.shape[:4]  # (B, C, Ho, Wo)
        v = v.reshape(shape[0], -1, k * k)  # (B, M, K), row-major within each window
        dv = F.pad(dx, (p, p, p, p)).unfold(2, k, s).unfold(3, k, s).reshape(v.shape)
        vmax = v.amax(2, keepdim=True)
        tied = v >= vmax - self.atol * (1 + vmax.abs())
        dmax = torch.where(tied, dv, -math.inf).amax(2, keepdim=True)
        best = tied & (dv >= dmax - DERIV_RTOL * (dv.abs() + dmax.abs()))
        idx = best.to(torch.uint8).argmax(2)  # the first candidate: the lowest position
        region.pools.append((v, dv, idx))
        region.order.append(idx)
        return (v.gather(2, idx[..., None]).reshape(shape),
                dv.gather(2, idx[..., None]).reshape(shape))

    @staticmethod
    def _conv(module, region, x, dx):
        return (module._conv_forward(x, module.weight, module.bias),
                module._conv_forward(dx, module.weight, None))

    @staticmethod
    def _linear(module, region, x, dx):
        return F.linear(x, module.weight, module.bias), F.linear(dx, module.weight)

    @staticmethod
    def _batch_norm(module, region, x, dx):
        scale = torch.rsqrt(module.running_var + module.eps)
        if module.weight is not None:
            scale = scale * module.weight
        return type(module).forward(module, x), dx * scale[:, None, None]

    @staticmethod
    def _same(module, region, x, dx):
        return type(module).forward(module, x), type(module).forward(module, dx)

    def _rule(self, m):
        if type(m) is self.act_cls:
            return self._act
        for cls, rule in ((nn.MaxPool2d, self._pool), (nn.Conv2d, self._conv),
                          (nn.Linear, self._linear), (nn.BatchNorm2d, self._batch_norm),
                          ((nn.Identity, nn.Flatten), self._same)):
            if isinstance(m, cls):
                return rule
        return None

    @contextmanager
    def _dual_modules(self, region):
        patched = []
        for m in self.model.modules():
            rule = self._rule(m)
            if rule is None:
                continue

            def forward(x, m=m, rule=rule):
                primal, tangent = fwAD.unpack_dual(x)
                tangent = torch.zeros_like(primal) if tangent is None else tangent
                return fwAD.make_dual(*rule(m, region, primal, tangent))

            m.forward = forward  # an instance attribute: shadows the class's forward
            patched.append(m)
        try:
            yield
        finally:
            for m in patched:
                del m.forward

    @torch.no_grad()
    def region(self, x: torch.Tensor, d: torch.Tensor) -> _Region:
        """The region ahead of points x (B, C, H, W) along directions d (B, C, H, W)."""
        region = _Region()
        with self._dual_modules(region), fwAD.dual_level():
            self.model(fwAD.make_dual(x, d))
        return region


def _changes(old, new) -> int:
    """Code changes between two regions: breakpoints between pieces, argmax changes."""
    return int((new[0].long() - old[0].long()).abs().sum()) + int((new[1] != old[1]).sum())


def exact_transitions_cnn_polygons(
    model: nn.Module, polygons, dtype: torch.dtype = torch.float64, atol: float = ATOL,
    batch_size: int = BATCH_SIZE,
) -> list[WalkResult]:
    """Exact transitions of a piecewise-linear CNN along each closed polygon of ``polygons``
    (a sequence of vertex tensors (V_n, C, H, W), or one (N, V, C, H, W) tensor), the chain
    vertices[0] -> ... -> vertices[V-1] -> vertices[0] of ``trajectories.polygon_points``.

    Crossings are reported at s = (i + t) / V on segment i. ``evaluations`` counts a forward
    and a JVP (one dual pass) per region visited per segment: 2 per region. Raises ValueError
    for a network with a smooth part (alexnet_small's LRN, tanh). See the module docstring.
    """
    walker = _Walker(model, dtype, atol)
    segments = []  # (polygon n, vertex i, start (C, H, W), direction)
    moving = []  # per polygon, the vertex index of each non-degenerate segment, in order
    for n, vertices in enumerate(polygons):
        verts = vertices.to(dtype)
        moving.append([])
        for i in range(len(verts)):
            u, v = verts[i], verts[(i + 1) % len(verts)]
            if not torch.equal(u, v):
                segments.append((n, i, u, v - u))
                moving[n].append(i)
    n_vertices = [len(v) for v in polygons]
    counts = [0] * len(polygons)
    regions = [0] * len(polygons)
    where = [[] for _ in polygons]
    ends = {}  # (n, i) -> (codes leaving vertex i along segment i, codes arriving at i + 1)

    queue = list(range(len(segments)))[::-1]
    active = []  # per slot: [segment index, t, previous codes, first codes]
    while queue or active:
        while queue and len(active) < batch_size:
            active.append([queue.pop(), 0.0, None, None])
        x = torch.stack([segments[a[0]][2] + a[1] * segments[a[0]][3] for a in active])
        d = torch.stack([segments[a[0]][3] for a in active])
        region = walker.region(x, d)
        act, pool = region.codes()
        steps = region.exits(walker.bounds).tolist()
        still = []
        for j, slot in enumerate(active):
            seg, t, prev, first = slot
            n, i = segments[seg][:2]
            codes = (act[j], pool[j])
            regions[n] += 1
            if prev is None:
                first = codes
            else:
                c = _changes(prev, codes)
                counts[n] += c
                where[n] += [(i + t) / n_vertices[n]] * c
            t_exit = t + steps[j]
            if t_exit >= 1 - SAME_VERTEX:
                ends[(n, i)] = (first, codes)
                continue
            if t_exit <= t:  # cannot happen with codes chosen ahead; never loop forever
                raise RuntimeError(f"region walk stalled on polygon {n}, segment {i}, t = {t}")
            still.append([seg, t_exit, codes, first])
        active = still

    results = []
    for n, order in enumerate(moving):
        for j, i in enumerate(order):  # arriving at the start of the next moving segment
            nxt = order[(j + 1) % len(order)]
            c = _changes(ends[(n, i)][1], ends[(n, nxt)][0])
            counts[n] += c
            where[n] += [(nxt / n_vertices[n]) if nxt > i else 0.0] * c
        results.append(WalkResult(counts[n], 2 * regions[n], np.sort(np.asarray(where[n]))))
    return results


def exact_transitions_cnn_polygon(model: nn.Module, vertices: torch.Tensor,
                                  dtype: torch.dtype = torch.float64, atol: float = ATOL,
                                  batch_size: int = BATCH_SIZE) -> WalkResult:
    """``exact_transitions_cnn_polygons`` for one polygon, vertices (V, C, H, W)."""
    return exact_transitions_cnn_polygons(model, [vertices], dtype, atol, batch_size)[0]
