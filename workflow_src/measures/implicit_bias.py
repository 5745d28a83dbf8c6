"""Implicit bias of gradient descent (Soudry et al., JMLR 2018; Lyu & Li, ICLR 2020): on the
training points, labels as trained on, the margin γ = min_i (f_y − max_{j≠y} f_j)(x_i), the
parameters' norm ‖θ‖₂ (biases included), the normalized margin γ / ‖θ‖₂^L (L = depth + 1),
and for a linear classifier (depth 0) the angle between θ/‖θ‖ and the hard-margin multiclass
SVM direction from scikit-learn, with the SVM's own normalized margin and training
accuracy. Definitions, biases and homogeneity: metrics/implicit_bias.py. Meant to be
followed along training (measure.snapshots) with a fixed budget
(training.stop_at_target: false). Fully connected networks only. Not indicators of the gap:
no expected sign."""

from __future__ import annotations

METRIC = {
    "name": "implicit_bias",
    "order": 130,
    "description": "Implicit bias of gradient descent on separable data: the normalized "
                   "margin min_i (f_y - max_{j != y} f_j)(x_i) / ||theta||^L on the training "
                   "points (Lyu & Li 2020), and for a linear classifier (depth 0) the angle "
                   "to the hard-margin multiclass SVM from scikit-learn (Soudry et al. 2018), "
                   "float64; fully connected networks only.",
    "section": "implicit_bias",
    "switch": "enabled",
    "settings": {
        "enabled": {"type": "boolean", "default": False, "hash": False,
                    "description": "Measure the implicit bias (in the shard's measure job, "
                                   "and along training with measure.snapshots)."},
        "n_points": {"type": "integer", "minimum": 2, "default": 100000,
                     "at_most": ["data.n_train"],
                     "description": "Training points of the margin and of the SVM (the "
                                    "first ones; capped at data.n_train: by default all)."},
        "svm_C": {"type": "number", "exclusiveMinimum": 0, "default": 1000.0,
                  "description": "C of scikit-learn's LinearSVC: any C above the hard-margin "
                                 "SVM's largest dual variable gives the hard-margin SVM on "
                                 "separable points, and implicit_bias_svm_functional_margin "
                                 "is then 1 (below 1: raise C). A larger C converges more "
                                 "slowly (500 Fashion-MNIST points, 10 classes: 6 s at "
                                 "1e3, 240 s at 1e6, the same solution)."},
    },
    "needs": ["weights", "training_data"],
    "variables": {
        "implicit_bias_margin": {
            "dims": [], "units": "logit difference",
            "description": "min_i f_y(x_i) - max_{j != y} f_j(x_i); > 0 iff every point is "
                           "classified correctly"},
        "implicit_bias_norm": {
            "dims": [], "units": "||theta||_2, every weight and bias",
            "description": "Euclidean norm of all parameters"},
        "implicit_bias_normalized_margin": {
            "dims": [], "units": "margin / ||theta||_2^L",
            "description": "scale-free when implicit_bias_homogeneous is 1"},
        "implicit_bias_layers": {
            "dims": [], "units": "L, linear layers (depth + 1)",
            "description": "the power of the norm in the normalized margin"},
        "implicit_bias_homogeneous": {
            "dims": [], "units": "1 if f(c theta) = c^L f(theta), else 0",
            "description": "1 for depth 0, or ReLU without biases"},
        "implicit_bias_train_acc": {
            "dims": [], "units": "fraction of the points with a positive margin",
            "description": "ties (margin 0) count as errors"},
        "implicit_bias_svm_angle": {
            "dims": [], "units": "radians",
            "description": "depth 0: angle between (W, b) and the hard-margin multiclass "
                           "SVM's; NaN for depth > 0 or when the SVM does not separate"},
        "implicit_bias_svm_normalized_margin": {
            "dims": [], "units": "SVM margin / ||W_svm||",
            "description": "depth 0: the largest normalized margin of any linear "
                           "classifier of the points (the limit of implicit_bias_"
                           "normalized_margin); NaN for depth > 0"},
        "implicit_bias_svm_train_acc": {
            "dims": [], "units": "fraction",
            "description": "the SVM's training accuracy (1: the points are separable)"},
        "implicit_bias_svm_functional_margin": {
            "dims": [], "units": "min_i q_i(W_svm)",
            "description": "1 at the hard-margin solution; below 1: C too small or the "
                           "points not separable"},
        "implicit_bias_svm_converged": {
            "dims": [], "units": "1 if liblinear converged, else 0",
            "description": "scikit-learn raised no ConvergenceWarning"},
    },
    "code": ["metrics/implicit_bias"],
    "cost": 0.5,
    "snapshots": True,
    "measure": "measure",
}


def implicit_bias(model, x, y, svm_C: float = 1e3) -> dict:
    """The declaration's variables for one fully connected network on points x, labels y."""
    import numpy as np
    import torch

    from ..metrics.implicit_bias import angle, point_margins, svm_direction
    from ..nets.models import float64_copy

    if getattr(getattr(model, "spec", None), "architecture", None) != "mlp":
        raise ValueError(f"implicit_bias needs a fully connected network (architecture mlp): "
                         f"its normalized margin divides by ||theta||^(depth + 1); got "
                         f"{type(model).__name__}. Turn measure.implicit_bias off for it")
    spec = model.spec
    with torch.no_grad():
        params = [p.detach().to(torch.float64) for p in model.parameters()]
        norm = float(torch.sqrt(sum((p ** 2).sum() for p in params)))
        model64 = float64_copy(model)
        logits = model64(x.to(torch.float64)).cpu().numpy()
    labels = y.cpu().numpy().astype(np.int64)
    margins = point_margins(logits, labels)
    layers = spec.depth + 1
    out = {"margin": float(margins.min()), "norm": norm,
           "normalized_margin": float(margins.min()) / norm ** layers, "layers": layers,
           "homogeneous": float(spec.depth == 0 or (spec.activation == "relu" and not spec.bias)),
           "train_acc": float(np.mean(margins > 0))}
    svm = svm_direction(x.cpu().numpy(), labels, spec.n_classes, spec.bias, C=svm_C)
    separable = svm["train_acc"] == 1.0
    out.update(svm_train_acc=svm["train_acc"], svm_functional_margin=svm["functional_margin"],
               svm_converged=float(svm["converged"]), svm_angle=float("nan"),
               svm_normalized_margin=float("nan"))
    if spec.depth == 0:
        weights = model.readout.weight.detach().to(torch.float64).cpu().numpy()
        if spec.bias:
            bias = model.readout.bias.detach().to(torch.float64).cpu().numpy()
            weights = np.hstack([weights, bias[:, None]])
        out["svm_normalized_margin"] = svm["functional_margin"] / np.linalg.norm(svm["weights"])
        if separable:
            out["svm_angle"] = angle(weights, svm["weights"])
    return out


def measure(model, data, settings, job):
    import numpy as np
    import xarray as xr

    x, y = job.train_points(data, settings["n_points"])
    values = implicit_bias(model, x, y, settings["svm_C"])
    return xr.Dataset({f"implicit_bias_{name}": ((), np.float64(value))
                       for name, value in values.items()})
