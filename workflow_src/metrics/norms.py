"""Norm- and margin-based generalization indicators of one trained network.

After Neyshabur, Bhojanapalli, McAllester, Srebro 2017 ("Exploring Generalization in Deep
Learning", arXiv 1706.08947, §2, norms and margins) and Jiang, Neyshabur, Mobahi, Krishnan,
Bengio 2020 ("Fantastic Generalization Measures and Where to Find Them", arXiv 1912.02178,
appendix C; equation numbers below are that paper's). For the MLP of ``models`` with weight
matrices W_1 … W_depth (hidden) and W_{depth+1} (readout), biases b_l, parameters w and
initial parameters w₀:

    n_parameters          number of trainable parameters, biases included     Jiang (20)
    frobenius_sum         Σ_l ‖W_l‖_F²            (weights only)              Jiang (42)
    spectral_product      Π_l ‖W_l‖₂²             (weights only)              Jiang (32)
    path_norm             Σ_k f̃(1)_k, f̃ = the network with every weight and
                          bias squared and the activation replaced by the
                          identity, 1 the all-ones input                      Jiang (44)
    distance_from_init    ‖w − w₀‖₂ over all parameters, biases included; cf.
                          Jiang (40), its square over the weights only
    margin                γ = 10th percentile over training points of
                          f_y(x) − max_{j≠y} f_j(x)                          Jiang (22)
    frobenius_over_margin frobenius_sum / γ²
    spectral_over_margin  spectral_product / γ²                               Jiang (31)
    path_over_margin      path_norm / γ²                                      Jiang (43)

Conventions:

* Biases. The Frobenius and spectral norms are of the weight matrices only, as in Jiang's
  measures (biases are vectors with no operator norm); distance_from_init and n_parameters
  count every parameter. The path norm treats a bias as the weight of an edge from an extra
  unit whose value is always 1: a path may start at any input coordinate or at any bias
  unit, and its contribution is the product of the squares of the weights (the first one a
  bias, if it starts at a bias unit) along it. This is what the sum of outputs of the
  squared-weight, squared-bias network with identity activation gives on the all-ones
  input; Jiang et al. compute (44) in exactly this way (all parameters squared, ones input).
  Their ReLU networks keep the activation, which is the identity on the non-negative
  values that network carries; the identity is used here so that relu6, hard_tanh,
  hard_sigmoid and tanh (which are not) get the same path sum.
* Without biases the path norm is Neyshabur et al. 2017's ℓ2 path norm
  Σ_{paths} Π_i W_i[j_i, j_{i−1}]², without their per-layer width factors 4 h_i.
* Margin. y are the labels the network was trained on (possibly corrupted). The 10th
  percentile is ``np.percentile(margins, 10)`` with numpy's default linear interpolation
  between order statistics (Jiang et al. take the 10th percentile as a robust stand-in for
  the minimum margin; their reference code takes an order statistic instead).
* A network that does not fit its training set has γ ≤ 0, and norm / γ² is then no
  capacity at all (γ² would reward a large negative margin): the three ratios are stored as
  NaN and attrs["note"] says so.
* frobenius_over_margin is Σ_l ‖W_l‖_F² / γ², the parameter norm (42) normalised like (43).
  Neyshabur's ℓ2-norm capacity and Jiang's (36) use the product Π_l ‖W_l‖_F² instead,
  which is not stored.

Everything is computed in float64 on a float64 copy of the network (the workflow trains
in float32); the model passed in is left as it is.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import xarray as xr
from torch import nn

from ..nets.models import MLP

PERCENTILE = 10

FANTASTIC = "Jiang et al. 2020, Fantastic Generalization Measures, arXiv 1912.02178"
EXPLORING = "Neyshabur et al. 2017, Exploring Generalization in Deep Learning, arXiv 1706.08947"

# +1: a larger value is expected to mean a larger generalization gap; -1: a smaller gap.
EXPECTED_SIGN: dict[str, int] = {
    # +1 as for every VC-dimension-type capacity (more parameters, more capacity, Jiang's
    # measure (20)). Over-parameterised networks are known to defy it (Neyshabur et al.
    # 2017 §2, network size): the sign states the classical expectation, not a finding.
    "n_parameters": +1,
    "frobenius_sum": +1,
    "spectral_product": +1,
    "path_norm": +1,
    "distance_from_init": +1,
    "margin": -1,  # a larger margin: more confident fit, expected smaller gap
    "frobenius_over_margin": +1,
    "spectral_over_margin": +1,
    "path_over_margin": +1,
}

NON_POSITIVE_MARGIN = (
    "the {p}th-percentile training margin is {m!r} <= 0 (the network does not fit its "
    "training labels): norm / margin^2 is not a capacity there, so frobenius_over_margin, "
    "spectral_over_margin and path_over_margin are stored as NaN"
)

_ATTRS = {
    "n_parameters": {
        "definition": "number of trainable parameters, weights and biases",
        "reference": f"{FANTASTIC}, eq. (20) (params)"},
    "frobenius_sum": {
        "definition": "sum_l ||W_l||_F^2 over hidden and readout weight matrices, biases excluded",
        "reference": f"{FANTASTIC}, eq. (42) (param-norm)"},
    "spectral_product": {
        "definition": "prod_l ||W_l||_2^2 (largest singular value squared), biases excluded",
        "reference": f"{FANTASTIC}, eq. (32) (prod-of-spec); {EXPLORING}, §2 spectral norm"},
    "path_norm": {
        "definition": "sum of the outputs, at the all-ones input, of the network with every "
                      "weight and bias squared and identity activation: sum over paths from "
                      "every input or bias unit of the product of squared weights",
        "reference": f"{FANTASTIC}, eq. (44) (path-norm); {EXPLORING}, §2 l2-path norm"},
    "distance_from_init": {
        "definition": "||w - w0||_2 over all parameters, biases included",
        "reference": f"cf. {FANTASTIC}, eq. (40) (its square, weights only); Nagarajan & "
                     "Kolter 2019, arXiv 1901.01672"},
    "margin": {
        "definition": f"{PERCENTILE}th percentile (np.percentile, linear interpolation) over "
                      "training points of f_y(x) - max_(j != y) f_j(x), y the training labels",
        "reference": f"{FANTASTIC}, eq. (22) (inverse-margin = 1 / margin^2); {EXPLORING}, §2"},
    "frobenius_over_margin": {
        "definition": "frobenius_sum / margin^2; NaN where margin <= 0",
        "reference": f"{FANTASTIC}, eq. (42) normalised as (43); cf. {EXPLORING}, §2 l2 norm"},
    "spectral_over_margin": {
        "definition": "spectral_product / margin^2; NaN where margin <= 0",
        "reference": f"{FANTASTIC}, eq. (31) (prod-of-spec/margin); {EXPLORING}, §2"},
    "path_over_margin": {
        "definition": "path_norm / margin^2; NaN where margin <= 0",
        "reference": f"{FANTASTIC}, eq. (43) (path-norm/margin); {EXPLORING}, §2"},
}


MLP_ONLY = (
    "architecture {!r}: spectral_product, path_norm and their ratios are stored as NaN (a "
    "convolution's operator norm is not its kernel's matrix norm, and max-pooling and batch "
    "norm have no path-norm form); frobenius_sum sums every conv and linear weight")


def _weight_matrices(model) -> list[torch.Tensor]:
    """The weight tensors of the norms: an MLP's layers, or every conv and linear weight."""
    if model.spec.architecture == "mlp":
        return [layer.weight for layer in [*model.hidden, model.readout]]
    return [m.weight for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def path_norm(model64: MLP) -> float:
    """Σ_k f̃(1)_k: every parameter squared, identity activation, all-ones input."""
    squared = copy.deepcopy(model64)
    with torch.no_grad():
        for p in squared.parameters():
            p.copy_(p * p)
        squared.activation = nn.Identity()
        ones = torch.ones((1, *squared.spec.input_shape), dtype=torch.float64,
                          device=next(squared.parameters()).device)
        return float(squared(ones).sum())


def output_margins(model64: MLP, x: torch.Tensor, y: torch.Tensor, chunk_size: int) -> np.ndarray:
    """f_y(x) − max_{j≠y} f_j(x) at every point, float64 (N,), in chunks of chunk_size."""
    device = next(model64.parameters()).device
    out = []
    with torch.no_grad():
        for start in range(0, x.shape[0], chunk_size):
            xc = x[start:start + chunk_size].to(device=device, dtype=torch.float64)
            yc = y[start:start + chunk_size].to(device=device, dtype=torch.long)[:, None]
            f = model64(xc)
            others = f.scatter(1, yc, -torch.inf)
            out.append((f.gather(1, yc)[:, 0] - others.amax(dim=1)).cpu())
    return torch.cat(out).numpy()


def norm_metrics(model: MLP, initial_model: MLP, train_x: torch.Tensor, train_y: torch.Tensor,
                 chunk_size: int = 4096) -> xr.Dataset:
    """The indicators of the module docstring for one network, as scalar float64 variables.

    initial_model: the same architecture at its initial weights (w₀). train_x (N, ...) and
    train_y (N,): the training set with the labels trained on.
    """
    if initial_model.spec != model.spec:
        raise ValueError(f"initial model {initial_model.spec} is not the architecture of "
                         f"{model.spec}")
    train_y = torch.as_tensor(train_y)
    if train_x.shape[0] == 0 or train_x.shape[0] != train_y.shape[0]:
        raise ValueError(f"need as many labels as points, at least one: got {train_x.shape[0]} "
                         f"points and {train_y.shape[0]} labels")
    model64 = copy.deepcopy(model).double()
    init64 = copy.deepcopy(initial_model).double().to(next(model64.parameters()).device)

    mlp = model.spec.architecture == "mlp"
    weights = [w.detach() for w in _weight_matrices(model64)]
    frobenius = float(sum((w * w).sum() for w in weights))
    spectral = float(torch.prod(torch.stack(
        [torch.linalg.matrix_norm(w, ord=2) ** 2 for w in weights]))) if mlp else np.nan
    n_parameters = sum(p.numel() for p in model64.parameters() if p.requires_grad)
    distance = float(torch.cat([(p - q).detach().flatten() for p, q in
                                zip(model64.parameters(), init64.parameters())]).norm())
    paths = path_norm(model64) if mlp else np.nan
    margin = float(np.percentile(output_margins(model64, train_x, train_y, chunk_size),
                                 PERCENTILE))

    attrs = {"percentile": PERCENTILE, "percentile_method": "linear",
             "margin_labels": "training labels as trained on (possibly corrupted)",
             "bias_convention": "Frobenius and spectral norms: weight matrices only; path norm: "
                                "biases squared, as edges from a constant-1 unit; "
                                "distance_from_init and n_parameters: all parameters",
             "precision": "float64 copy of the network"}
    if margin > 0:
        ratios = [frobenius / margin**2, spectral / margin**2, paths / margin**2]
    else:
        ratios = [np.nan] * 3
        attrs["note"] = NON_POSITIVE_MARGIN.format(p=PERCENTILE, m=margin)
    if not mlp:
        attrs["note"] = "; ".join(filter(None, [attrs.get("note"),
                                                MLP_ONLY.format(model.spec.architecture)]))
    values = {"n_parameters": n_parameters, "frobenius_sum": frobenius,
              "spectral_product": spectral, "path_norm": paths, "distance_from_init": distance,
              "margin": margin, "frobenius_over_margin": ratios[0],
              "spectral_over_margin": ratios[1], "path_over_margin": ratios[2]}
    return xr.Dataset(
        {name: xr.DataArray(np.float64(value), attrs={**_ATTRS[name],
                                                      "expected_sign": EXPECTED_SIGN[name]})
         for name, value in values.items()},
        attrs=attrs,
    )
