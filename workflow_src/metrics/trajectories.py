"""Closed trajectories through input space (Novak et al. 2018, arXiv 1802.08760, §4.1 and
appendix) along which transitions and Jacobian norms are measured.

- an ellipse through three anchors p0, p1, p2 at theta = 0, 2 pi / 3, 4 pi / 3, with anchors
  drawn off the data manifold (random), between classes, or within one class;
- the translation polygon of an image: its horizontal cyclic shifts joined in order.
Every trajectory is also offered as a map s in [0, 1) -> points, the form
``transitions.sampled_transitions`` takes.
"""

from __future__ import annotations

import math

import torch

ANCHOR_KINDS = ("random", "different_class", "same_class")


def ellipse_from_anchors(p0: torch.Tensor, p1: torch.Tensor, p2: torch.Tensor):
    """(c, a, b) with z(theta) = c + a cos(theta) + b sin(theta) through p0, p1, p2.

    c = (p0 + p1 + p2) / 3, a = p0 - c, b = (p1 - p2) / sqrt(3): then z(0) = p0 and, since
    cos(2 pi / 3) = -1/2 and sin(2 pi / 3) = sqrt(3) / 2, z(2 pi / 3) = p1, z(4 pi / 3) = p2.
    """
    c = (p0 + p1 + p2) / 3
    return c, p0 - c, (p1 - p2) / math.sqrt(3)


def ellipse_points(c, a, b, angles: torch.Tensor) -> torch.Tensor:
    """z(theta) = c + a cos(theta) + b sin(theta): angles (m,), c, a, b (...) -> (m, ...)."""
    shape = (-1,) + (1,) * c.dim()  # broadcast each angle over one input
    angles = angles.to(c).reshape(shape)
    return c + torch.cos(angles) * a + torch.sin(angles) * b


def translation_polygon(image: torch.Tensor, W: int | None = None) -> torch.Tensor:
    """Vertices (W, C, H, width) of the translation trajectory of an image (C, H, width).

    Vertex i is the image cyclically shifted right by (i * width) // W pixels
    (``torch.roll`` on the last axis); joined in order and back to vertex 0 they form a
    closed polygon. W defaults to the image width: every one-pixel shift, as the paper's
    28 translations of a 28 x 28 image.
    """
    width = image.shape[-1]
    W = width if W is None else W
    return torch.stack([torch.roll(image, (i * width) // W, dims=-1) for i in range(W)])


def polygon_points(vertices: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Points at parameters s (m,) in [0, 1) of the closed chain through vertices (V, ...).

    Every segment gets an equal share 1/V of the parameter; s = (i + t) / V lies at
    (1 - t) vertices[i] + t vertices[(i + 1) mod V]. Returns (m, ...).
    """
    n = len(vertices)
    u = s.to(device=vertices.device, dtype=torch.float64) * n
    seg = u.floor().long().clamp(0, n - 1)  # (m,)
    t = (u - seg).to(vertices.dtype).reshape((-1,) + (1,) * (vertices.dim() - 1))
    return (1 - t) * vertices[seg] + t * vertices[(seg + 1) % n]


def _pick_distinct(n_available: int, n: int, generator: torch.Generator) -> torch.Tensor:
    return torch.randperm(n_available, generator=generator)[:n]


def choose_anchors(
    kind: str,
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    n_ellipses: int,
    generator: torch.Generator,
    pixel_mean: torch.Tensor,
    pixel_std: torch.Tensor,
) -> torch.Tensor:
    """Anchor triples (n_ellipses, 3, ...) for the ellipses of Novak §4.1.

    kind "random": i.i.d. Gaussian with the training set's per-pixel mean and std (shape of
    one input, or broadcastable to it), off the data manifold; "different_class": three
    training points of three distinct classes; "same_class": three distinct training points
    of one class (drawn among classes with at least three points). train_x (N, ...),
    train_y (N,). All draws use ``generator``.
    """
    if kind not in ANCHOR_KINDS:
        raise ValueError(f"anchor kind {kind!r} is not one of {list(ANCHOR_KINDS)}")
    shape = (n_ellipses, 3) + tuple(train_x.shape[1:])
    if kind == "random":
        noise = torch.randn(shape, generator=generator, dtype=train_x.dtype)
        return pixel_mean + pixel_std * noise
    classes, counts = train_y.unique(return_counts=True)
    if kind == "same_class":
        classes = classes[counts >= 3]
    if len(classes) < (3 if kind == "different_class" else 1):
        raise ValueError(f"not enough classes in train_y for {kind!r} anchors")
    triples = []
    for _ in range(n_ellipses):
        if kind == "different_class":
            chosen = classes[_pick_distinct(len(classes), 3, generator)]
            members = [torch.nonzero(train_y == k).flatten() for k in chosen]
            idx = [m[_pick_distinct(len(m), 1, generator)] for m in members]
        else:
            k = classes[_pick_distinct(len(classes), 1, generator)]
            members = torch.nonzero(train_y == k).flatten()
            idx = [members[_pick_distinct(len(members), 3, generator)]]
        triples.append(train_x[torch.cat(idx)])
    return torch.stack(triples)


def draw_ellipses(train_x: torch.Tensor, train_y: torch.Tensor, per_kind: int, seed: int):
    """(kinds, ellipses): ``per_kind`` ellipses of each of ANCHOR_KINDS, kind-major, each as
    (c, a, b) of ``ellipse_from_anchors``. Random anchors use the per-pixel mean and std of
    ``train_x``; all draws come from one generator seeded with ``seed``, so the same seed
    gives the same ellipses whichever network is measured along them."""
    generator = torch.Generator().manual_seed(seed)
    pixel_mean, pixel_std = train_x.mean(dim=0), train_x.std(dim=0)  # (C, H, W)
    kinds, ellipses = [], []
    for kind in ANCHOR_KINDS:
        anchors = choose_anchors(kind, train_x, train_y, per_kind, generator, pixel_mean,
                                 pixel_std)  # (E, 3, C, H, W)
        ellipses += [ellipse_from_anchors(p0, p1, p2) for p0, p1, p2 in anchors]
        kinds += [kind] * len(anchors)
    return kinds, ellipses
