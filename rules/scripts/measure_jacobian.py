"""Adapter for rule measure_jacobian: per-point loss, correctness and Jacobian norms."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))  # noqa: F821 (snakemake)
import numpy as np  # noqa: E402
import xarray as xr  # noqa: E402

from workflow_src.adapter import load_trained, logged, first_test_points  # noqa: E402
from workflow_src.integrity import write_store  # noqa: E402
from workflow_src.metrics.jacobian import pointwise_metrics  # noqa: E402

with logged(snakemake.log[0]) as log:  # noqa: F821
    sm = snakemake  # noqa: F821
    model, data, device = load_trained(sm)
    n_points = sm.params.settings["n_points"]
    x, y = first_test_points(data, n_points, device)
    values = pointwise_metrics(model, x, y, sm.config["measure"]["chunk_size"])
    out = xr.Dataset(
        {name: ("point", array) for name, array in values.items()},
        coords={"point": np.arange(n_points),
                "test_index": ("point", data["test_index"].values[:n_points])},
        attrs={k: data.attrs[k] for k in ("dataset", "data_id", "source", "source_sha256")},
    )
    log(f"mean jacobian norm {values['jacobian_norm'].mean():.4g} over {n_points} points")
    write_store(out, sm.output[0])
