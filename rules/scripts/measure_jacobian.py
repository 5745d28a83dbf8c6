"""Adapter for rule measure_jacobian: per-point loss, correctness and Jacobian norms."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))  # noqa: F821 (snakemake)
import numpy as np  # noqa: E402
import torch  # noqa: E402
import xarray as xr  # noqa: E402

from workflow_src.adapter import logged  # noqa: E402
from workflow_src.metrics.jacobian import pointwise_metrics  # noqa: E402
from workflow_src.models import load_model  # noqa: E402
from workflow_src.train import resolve_device  # noqa: E402

with logged(snakemake.log[0]) as log:  # noqa: F821
    torch.set_num_threads(snakemake.threads)  # noqa: F821
    device = resolve_device(snakemake.config["training"]["device"])  # noqa: F821
    n_points = int(snakemake.wildcards.n_points)  # noqa: F821
    data = xr.open_zarr(snakemake.input.data).isel(test=slice(0, n_points)).load()  # noqa: F821
    model = load_model(snakemake.input.model, device).eval()  # noqa: F821
    x = torch.as_tensor(data["x_test"].values, device=device)  # (P, C, H, W)
    y = torch.as_tensor(data["y_test"].values, device=device)  # (P,)
    values = pointwise_metrics(model, x, y, snakemake.config["measure"]["chunk_size"])  # noqa: F821
    out = xr.Dataset(
        {name: ("point", array) for name, array in values.items()},
        coords={"point": np.arange(n_points), "test_index": ("point", data["test_index"].values)},
        attrs={k: data.attrs[k] for k in ("dataset", "data_id", "source", "source_sha256")},
    )
    log(f"mean jacobian norm {values['jacobian_norm'].mean():.4g} over {n_points} points")
    out.to_zarr(snakemake.output[0], mode="w")  # noqa: F821
