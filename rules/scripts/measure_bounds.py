"""Adapter for rule measure_bounds: measured ‖J_y‖₂ against the per-point loss bounds."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))  # noqa: F821 (snakemake)
from workflow_src.adapter import load_trained, logged, first_test_points  # noqa: E402
from workflow_src.integrity import open_store, write_store  # noqa: E402
from workflow_src.metrics.per_run import bound_metrics  # noqa: E402

with logged(snakemake.log[0]) as log:  # noqa: F821
    sm = snakemake  # noqa: F821
    model, data, device = load_trained(sm)
    jacobian = open_store(sm.input.jacobian)
    x, y = first_test_points(data, sm.params.settings["n_points"], device)
    out = bound_metrics(model, x, y, jacobian["loss"].values,
                        jacobian["logit_jacobian_norm"].values, int(data.attrs["n_classes"]),
                        sm.config["measure"]["chunk_size"])
    log(f"M = {float(out['bound_M']):.4g}; within bounds: {float(out['within_bounds'].mean()):.3f}")
    write_store(out, sm.output[0])
