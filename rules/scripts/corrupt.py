"""Adapter for rule corrupt: subset and corrupt one raw dataset."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))  # noqa: F821 (snakemake)
from workflow_src.jobs.adapter import logged  # noqa: E402
from workflow_src.data.acquire import from_xarray  # noqa: E402
from workflow_src.data.corrupt import make_corrupted  # noqa: E402
from workflow_src.integrity import open_store, write_store  # noqa: E402
from workflow_src.runtable import DataSpec  # noqa: E402

with logged(snakemake.log[0]) as log:  # noqa: F821
    spec = DataSpec(**snakemake.params.spec)  # noqa: F821
    raw = from_xarray(open_store(snakemake.input.raw))  # noqa: F821
    corrupted = make_corrupted(raw, spec)
    log(f"{spec}: {corrupted.attrs['fraction_train_labels_changed']:.3f} of training labels changed")
    write_store(corrupted, snakemake.output[0])  # noqa: F821
