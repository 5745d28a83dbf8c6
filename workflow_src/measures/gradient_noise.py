"""Gradient noise of the training loss at the trained weights: the trace of the covariance
of the per-example gradients.

With ℓ_i(w) the cross-entropy of training point i (labels as trained on, possibly
corrupted), g_i = ∇_w ℓ_i(w) over all n parameters w, N the first ``n_points`` training
points and ḡ = (1/N) Σ_i g_i the full-batch gradient:

    gradient_noise            tr Σ = (1/N) Σ_i ‖g_i − ḡ‖²          (the indicator)
    gradient_mean_norm_sq     ‖ḡ‖²
    gradient_noise_scale      tr Σ / ‖ḡ‖²  (+inf if ḡ = 0)

Σ is the covariance of one example's gradient when the example is drawn uniformly from the
N points (a population covariance: 1/N, not 1/(N − 1)), the noise SGD with batch size 1
adds to the full-batch gradient; a batch of B points drawn with replacement has noise
covariance Σ / B, so every batch size ranks networks alike. tr Σ is the numerator of
McCandlish, Kaplan, Amodei et al. 2018 ("An Empirical Model of Large-Batch Training", arXiv
1812.06162, §2.2), whose simple noise scale B_simple = tr Σ / ‖ḡ‖² is gradient_noise_scale;
Jiang, Neyshabur, Mobahi, Krishnan & Bengio 2020 ("Fantastic Generalization Measures", arXiv
1912.02178) evaluate the variance of the gradients at the end of training among their
optimization-based measures. Expected sign +1, the hypothesis under test: a network whose
examples pull its weights apart at the end of training (memorised, low-margin points, as
with label noise) is expected to generalize worse.

Computation: a float64 copy of the network in eval mode (batch norm uses its running
statistics, so each example's gradient is its own), per-example gradients by
``torch.func.vmap(grad(functional_call))`` in chunks of ``chunk_size`` points, combined over
chunks with Chan et al.'s pairwise update of the mean and the sum of squared deviations
(exact, one pass, no cancellation of ‖g‖² against N‖ḡ‖²). The model passed in is left as
it is. Memory: about chunk_size × n float64 numbers.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
import xarray as xr
from torch.func import functional_call, grad, vmap

METRIC = {
    "name": "gradient_noise",
    "order": 110,
    "description": "Gradient noise of the training loss at the trained weights: the trace of "
                   "the covariance of the per-example gradients over the first training "
                   "points, labels as trained on (McCandlish et al. 2018, arXiv 1812.06162; "
                   "cf. Jiang et al. 2020, arXiv 1912.02178), float64.",
    "section": "gradient_noise",
    "switch": "enabled",
    "settings": {
        "enabled": {"type": "boolean", "default": False, "hash": False,
                    "description": "Measure the gradient noise (in the shard's measure job; "
                                   "~5 s per network of the default study)."},
        "n_points": {"type": "integer", "minimum": 2, "default": 1000,
                     "at_most": ["data.n_train"],
                     "description": "Training points whose per-example gradients are "
                                    "taken (the first ones; capped at data.n_train)."},
        "chunk_size": {"type": "integer", "minimum": 1, "default": 64, "hash": "default",
                       "description": "Points per vmap chunk: bounds memory (about chunk x "
                                      "parameters float64 numbers), no effect on results."},
    },
    "needs": ["weights", "training_data"],
    "variables": {
        "gradient_noise": {"dims": [], "sign": 1,
                           "units": "tr of the per-example gradient covariance (nats^2 per "
                                    "squared parameter unit)",
                           "description": "(1/N) sum_i ||g_i - mean g||^2, g_i the gradient "
                                          "of training point i's cross-entropy"},
        "gradient_mean_norm_sq": {"dims": [], "units": "||full-batch gradient||^2",
                                  "description": "||(1/N) sum_i g_i||^2"},
        "gradient_noise_scale": {"dims": [], "units": "points (McCandlish's B_simple)",
                                 "description": "gradient_noise / gradient_mean_norm_sq"},
    },
    "code": [],
    "cost": 5.0,
    "snapshots": True,
    "measure": "measure",
}


def _per_example_gradients(model64):
    """x (B, ...), y (B,) -> (B, n) float64 gradients of each point's cross-entropy."""
    params = {k: v.detach() for k, v in model64.named_parameters()}
    buffers = {k: v.detach() for k, v in model64.named_buffers()}

    def loss(p, x, y):
        logits = functional_call(model64, (p, buffers), (x.unsqueeze(0),))
        return F.cross_entropy(logits, y.unsqueeze(0))

    one = grad(loss)

    def gradients(x, y):
        per_point = vmap(one, in_dims=(None, 0, 0))(params, x, y)
        return torch.cat([g.reshape(x.shape[0], -1) for g in per_point.values()], dim=1)

    return gradients


def gradient_noise(model, x: torch.Tensor, y: torch.Tensor, chunk_size: int = 64) -> dict:
    """The module doc's three values for the network on (x, y), as Python floats."""
    if x.shape[0] < 2 or x.shape[0] != len(y):
        raise ValueError(f"need as many labels as points, at least two: got {x.shape[0]} "
                         f"points and {len(y)} labels")
    model64 = copy.deepcopy(model).double().eval()
    device = next(model64.parameters()).device
    gradients = _per_example_gradients(model64)
    count, mean, m2 = 0, None, 0.0
    for start in range(0, x.shape[0], chunk_size):
        xc = x[start:start + chunk_size].to(device=device, dtype=torch.float64)
        yc = y[start:start + chunk_size].to(device=device, dtype=torch.long)
        g = gradients(xc, yc)
        chunk_mean = g.mean(dim=0)
        chunk_m2 = float(((g - chunk_mean) ** 2).sum())
        n = g.shape[0]
        if mean is None:
            count, mean, m2 = n, chunk_mean, chunk_m2
            continue
        delta = chunk_mean - mean  # Chan et al.'s update of the pooled mean and M2
        total = count + n
        mean = mean + delta * (n / total)
        m2 = m2 + chunk_m2 + float((delta ** 2).sum()) * count * n / total
        count = total
    noise = m2 / count
    mean_sq = float((mean ** 2).sum())
    return {"gradient_noise": noise, "gradient_mean_norm_sq": mean_sq,
            "gradient_noise_scale": noise / mean_sq if mean_sq > 0 else float("inf")}


def measure(model, data, settings, job):
    x, y = job.train_points(data, settings["n_points"])
    values = gradient_noise(model, x, y, settings["chunk_size"])
    return xr.Dataset({name: ((), np.float64(value)) for name, value in values.items()})
