"""Adapter for rule acquire: fetch one raw dataset and store it as Zarr."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))  # noqa: F821 (snakemake)
from workflow_src.jobs.adapter import logged  # noqa: E402
from workflow_src.data.acquire import acquire, to_xarray  # noqa: E402
from workflow_src.integrity import write_store  # noqa: E402

with logged(snakemake.log[0]) as log:  # noqa: F821
    data_cfg = snakemake.config["data"]  # noqa: F821  (sources are bookkeeping: checksums pin the data)
    raw = acquire(snakemake.wildcards.dataset, data_cfg["root"], data_cfg["download"],  # noqa: F821
                  data_cfg["download_dir"])
    log(f"{raw.name}: {raw.train_images.shape[0]} train, {raw.test_images.shape[0]} test "
        f"from {raw.source}; sha256 {raw.checksum}")
    write_store(to_xarray(raw), snakemake.output[0])  # noqa: F821
