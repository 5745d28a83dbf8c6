"""Transitions along closed trajectories (Novak et al. 2018, arXiv 1802.08760, §3.2).

A unit's *code* is the index of the linear piece of its activation that its pre-activation
lies in; the network's code c(z) concatenates every hidden unit's code. A transition is a
unit changing piece along a trajectory z(s), s in [0, 1).

Two estimators, each importable from here:
- ``sampled_transitions`` (this module): the paper's t = sum_{i<k} ||c(z_i) != c(z_{(i+1) mod
  k})||_1 over k equally spaced parameters, in bounded memory (chunks of s values);
  ``sampled_transitions_polygon`` the same along a polygon, the first layer run once per vertex;
- ``exact_transitions_polygon`` / ``exact_transitions_ellipse`` (mlp_walk.py): the k -> infinity
  limit, found by walking from activation region to region. Inside one region every
  pre-activation is affine in the input, so along a straight segment it is affine in t and
  along an ellipse it is e + alpha cos(theta) + beta sin(theta); the next breakpoint crossing
  is closed-form. mlp_walk.py's docstring lists how the walk resolves degenerate cases;
- ``exact_transitions_polygons`` / ``exact_transitions_ellipses`` (mlp_walk_batched.py): the
  same walks for many paths of one network in lockstep, one batched region pass per step for
  every path still walking (a path leaves the batch when it is back at its start). They take
  the same decisions as the one-path walks, which stay as their reference (tests compare them
  path by path), and run many times faster: one pass over B paths costs about what one
  path's does, as a region pass on one path is dominated by per-call overhead.
The exact walk of piecewise-linear CNNs is metrics/cnn_walk.py.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..nets.models import MLP
from ..nets.spec import breakpoints
from .mlp_walk import WalkResult, Walker, exact_transitions_ellipse, exact_transitions_polygon
from .mlp_walk_batched import exact_transitions_ellipses, exact_transitions_polygons

__all__ = ["WalkResult", "activation_codes", "exact_transitions_ellipse",
           "exact_transitions_ellipses", "exact_transitions_polygon", "exact_transitions_polygons",
           "sampled_transitions", "sampled_transitions_polygon"]

# The region pass's name in tests/test_transitions.py, which compares it with torch.func.jvp.
_Walker = Walker


@torch.no_grad()
def activation_codes(model: MLP, x: torch.Tensor) -> torch.Tensor:
    """c(x) of Novak §3.2: (B, ...) inputs -> (B, depth * width) int8 piece indices.

    A unit's code is the number of its activation's breakpoints strictly below its
    pre-activation (``torch.bucketize`` with ``right=False``), so relu gives 0 for z <= 0 and
    1 for z > 0; a pre-activation exactly on a breakpoint belongs to the lower piece.
    """
    pre = torch.cat(model.preactivations(x), dim=1)  # (B, U)
    bp = breakpoints(model.spec.activation, pre.dtype, pre.device)  # (P,)
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
    bp = breakpoints(model.spec.activation, param.dtype, param.device)

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
