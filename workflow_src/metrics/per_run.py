"""What each measuring rule computes for one trained network, as labelled arrays.

One function per rule; each returns an ``xarray.Dataset`` that the rule writes as its own
Zarr store, so adding a metric or changing one metric's settings never recomputes another.
Smooth activations (tanh) have no linear pieces: their transition counts are stored as NaN
and the store's attrs say why, rather than 0.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
import xarray as xr

from ..nets.models import BREAKPOINTS, MLP, is_mlp
from . import bounds
from .cnn_walk import exact_transitions_cnn_polygons, walk_problem
from .jacobian import jacobian_norms, true_class_jacobian_norm
from .trajectories import draw_ellipses, ellipse_points, polygon_points, translation_polygon
from .transitions import (
    exact_transitions_ellipses,
    exact_transitions_polygons,
    sampled_transitions,
    sampled_transitions_polygon,
)

NO_PIECES = "activation {!r} is smooth: transitions are undefined and stored as NaN"
# A CNN whose every nonlinearity is piecewise linear (inception_small, wrn) can be walked
# exactly along segments by cnn_walk.py, but a translation polygon crosses ~5e5 (WRN-10-1) to
# ~3e6 (inception_small) code changes on 28 x 28 inputs, ~40 min to ~40 h per point on one CPU
# thread: so it is opt-in (measure.transitions.exact_cnn) and transitions_exact is NaN without it.
CNN_EXACT = (
    "architecture {!r}: transitions_exact is exact, the count of code changes of every "
    "activation unit and max-pool argmax along the translation polygon found by walking it "
    "region by region (cnn_walk.py; the k -> infinity limit of transitions_sampled, which "
    "counts the same codes at k points); ellipse_transitions are stored as NaN (ellipses are "
    "curved paths, and the CNN walk follows straight segments only)")
CNN_EXACT_OFF = (
    "architecture {!r}: transitions_exact and ellipse_transitions are stored as NaN: the "
    "exact walk of this piecewise-linear CNN (cnn_walk.py) costs ~40 min (wrn) to ~40 h "
    "(inception_small) per point on 28 x 28 inputs and is switched on by "
    "measure.transitions.exact_cnn: true; transitions_sampled counts changes of the code of "
    "every activation unit and max-pool argmax (cnns.py), a lower bound on the exact count")
# AlexNet's local response normalisation is smooth: no exact walk.
CNN_NOT_PIECEWISE_LINEAR = (
    "architecture {!r}: transitions_exact and ellipse_transitions are stored as NaN: its "
    "local response normalisation (LRN) is smooth, so the regions of fixed activation and "
    "max-pool pattern are not linear regions and the exact walk's argument (cnn_walk.py) "
    "does not hold; transitions_sampled counts changes of the code of every activation unit "
    "and max-pool argmax (cnns.py), a lower bound on the number of code changes")
# Ellipses are curved: no CNN is walked along them.
CNN_ELLIPSES = (
    "architecture {!r}: ellipse_transitions are stored as NaN: the exact walk follows "
    "ellipses for MLPs only (cnn_walk.py walks a piecewise-linear CNN along straight "
    "segments, and ellipses are curved)")
CNN_CHUNK = 256  # sample points per CNN pass (a float64 pass keeps every feature map)
ANCHOR_ANGLES = (0.0, 2 * math.pi / 3, 4 * math.pi / 3)  # where the ellipse meets p0, p1, p2


def _has_pieces(model: MLP) -> bool:
    return bool(BREAKPOINTS[model.spec.activation])


def _walks_exactly(model) -> bool:
    return _has_pieces(model) and is_mlp(model)


def _walks_cnn_exactly(model) -> bool:
    """A CNN whose every nonlinearity is piecewise linear (cnn_walk.py walks its polygons)."""
    return _has_pieces(model) and not is_mlp(model) and walk_problem(model) is None


def _note(model, exact_cnn: bool) -> dict:
    if not _has_pieces(model):
        return {"note": NO_PIECES.format(model.spec.activation)}
    if not is_mlp(model):
        if not _walks_cnn_exactly(model):
            note = CNN_NOT_PIECEWISE_LINEAR
        else:
            note = CNN_EXACT if exact_cnn else CNN_EXACT_OFF
        return {"note": note.format(model.spec.architecture)}
    return {}


def _ellipse_note(model) -> dict:
    if not _has_pieces(model):
        return {"note": NO_PIECES.format(model.spec.activation)}
    if not is_mlp(model):
        return {"note": CNN_ELLIPSES.format(model.spec.architecture)}
    return {}


def _sampled_polygon(model64, vertices: torch.Tensor, k: int) -> int:
    """The sampled estimator along the closed polygon: the MLP's shortcut (its first layer
    once per vertex), or for a CNN its activation codes at every sample point."""
    if is_mlp(model64):
        return sampled_transitions_polygon(model64, vertices, k)
    return sampled_transitions(model64, lambda s: polygon_points(vertices, s), k,
                               chunk_size=CNN_CHUNK, codes=model64.activation_codes)


def translation_metrics(model: MLP, x: torch.Tensor, k_sampled: int,
                        jacobian_positions: int, chunk_size: int,
                        exact_cnn: bool = False) -> xr.Dataset:
    """Per test point, along its translation trajectory (Novak §3.2, §4.1).

    x (P, C, H, W). transitions_exact walks the closed polygon of the W horizontal cyclic
    shifts; transitions_sampled is the paper's estimator with k_sampled points;
    trajectory_jacobian_norm is ‖J‖_F averaged over ``jacobian_positions`` equally spaced
    points of the polygon (the vertices and the points between them).

    ``exact_cnn`` walks a piecewise-linear CNN's polygons exactly too (cnn_walk.py; hours per
    point); without it their transitions_exact is NaN. An MLP is always walked.
    """
    sampled, mean_jac = [], []
    s_jac = torch.arange(jacobian_positions, dtype=torch.float64) / jacobian_positions
    # The sampled estimator runs in float64 like the exact walk, network and points alike:
    # in float32, neighbouring samples 2^-20 apart let rounding flip a unit that sits on a
    # breakpoint, and the estimate can then exceed the exact count.
    model64 = copy.deepcopy(model).double()
    polygons = [translation_polygon(image) for image in x]  # P of (W, C, H, W)
    # Every point's polygon walked in lockstep: one batched region pass per step.
    if _walks_exactly(model):
        exact = [walk.count for walk in exact_transitions_polygons(model, polygons)]
    elif exact_cnn and _walks_cnn_exactly(model):  # on the float64 copy, float64 vertices
        exact = [walk.count for walk in exact_transitions_cnn_polygons(
            model64, [vertices.double() for vertices in polygons])]
    else:
        exact = [np.nan] * len(polygons)
    for vertices in polygons:
        sampled.append(_sampled_polygon(model64, vertices.double(), k_sampled)
                       if _has_pieces(model) else np.nan)
        points = polygon_points(vertices, s_jac)  # (J, C, H, W)
        mean_jac.append(float(jacobian_norms(model, points, chunk_size)[0].mean()))
    return xr.Dataset(
        {"transitions_exact": ("point", np.asarray(exact, dtype=float)),
         "transitions_sampled": ("point", np.asarray(sampled, dtype=float)),
         "trajectory_jacobian_norm": ("point", np.asarray(mean_jac))},
        coords={"point": np.arange(len(x))},
        attrs={"k_sampled": k_sampled, "jacobian_positions": jacobian_positions,
               "n_shifts": int(x.shape[-1]), **_note(model, exact_cnn)},
    )


def ellipse_metrics(model: MLP, train_x: torch.Tensor, train_y: torch.Tensor, per_kind: int,
                    n_positions: int, seed: int, chunk_size: int,
                    initial_model: MLP | None = None) -> xr.Dataset:
    """Jacobian-norm profile and exact transitions along ellipses through three anchors.

    Novak §4.1: anchors off the data manifold (``random``: Gaussian with the training set's
    per-pixel mean and std), between classes, and within one class. Dims: ellipse
    (3 * per_kind, kind-major) and position (n_positions equally spaced angles).

    ``initial_model`` (the same network at its initial weights) is measured along the very
    same ellipses, as ``*_init`` variables: the control that separates what training did
    from what the geometry of the anchors alone gives.
    """
    angles = torch.arange(n_positions, dtype=torch.float64) * (2 * math.pi / n_positions)
    kinds, ellipses = draw_ellipses(train_x, train_y, per_kind, seed)
    variables = {}
    networks = {"": model} if initial_model is None else {"": model, "_init": initial_model}
    for suffix, network in networks.items():
        profiles, counts = _along_ellipses(network, ellipses, angles, train_x.dtype, chunk_size)
        variables[f"ellipse_jacobian_norm{suffix}"] = (("ellipse", "position"), profiles)
        variables[f"ellipse_transitions{suffix}"] = ("ellipse", counts)
    return xr.Dataset(
        variables,
        coords={"ellipse_kind": ("ellipse", kinds), "angle": ("position", angles.numpy())},
        attrs={"anchor_angles": list(ANCHOR_ANGLES), "seed": seed,
               "at_initialization": initial_model is not None, **_ellipse_note(model)},
    )


def _along_ellipses(model: MLP, ellipses, angles, dtype, chunk_size):
    """‖J‖_F at every angle (E, n_positions) and exact transitions (E,) of each (c, a, b)."""
    profiles = [jacobian_norms(model, ellipse_points(c, a, b, angles).to(dtype), chunk_size)[0]
                .cpu().numpy() for c, a, b in ellipses]  # E of (n_positions,)
    if _walks_exactly(model):  # every ellipse walked in lockstep
        centers, a, b = (torch.stack(parts) for parts in zip(*ellipses))  # (E, C, H, W) each
        counts = [walk.count for walk in exact_transitions_ellipses(model, centers, a, b)]
    else:
        counts = [np.nan] * len(ellipses)
    return np.stack(profiles), np.asarray(counts, dtype=float)


def bound_metrics(model: MLP, x: torch.Tensor, y: torch.Tensor, loss: np.ndarray,
                  logit_jacobian_norm: np.ndarray, n_classes: int,
                  chunk_size: int) -> xr.Dataset:
    """Measured ‖J_y‖₂ against the per-point loss bounds (Novak, appendix; docs/science.md §4).

    loss (nats) and logit_jacobian_norm (P,) come from the Jacobian store of the same points;
    the bounds take the loss itself, so that 1 − σ_y keeps its digits at confident points.
    """
    loss = np.asarray(loss, dtype=np.float64)
    M = bounds.bound_M(logit_jacobian_norm, n_classes)
    lower, upper = bounds.bounds_from_loss(loss, M, n_classes)
    measured = true_class_jacobian_norm(model, x, y, chunk_size).cpu().numpy()
    return xr.Dataset(
        {"jacobian_norm_true_class": ("point", measured),
         "bound_lower": ("point", lower), "bound_upper": ("point", upper),
         "bound_approx": ("point", bounds.approx_from_loss(loss, M, n_classes)),
         # float so that runs with fewer points can be NaN-padded in the aggregate
         "within_bounds": ("point", ((measured >= lower) & (measured <= upper)).astype(float)),
         "bound_M": ((), M),
         "n_classes": ((), n_classes)},
        coords={"point": np.arange(len(x))},
        attrs={"n_classes": n_classes},
    )
