"""Adapter for rule plot_snapshots: the study's snapshot table (tables/snapshots.csv) from
every shard's snapshot store, and the figure of the indicators along training."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))  # noqa: F821 (snakemake)
from workflow_src.jobs.adapter import logged  # noqa: E402
from workflow_src.figures.catalogue import StudyData  # noqa: E402
from workflow_src.figures.job import draw_figures  # noqa: E402
from workflow_src.integrity import open_store, read_all, seal_job  # noqa: E402
from workflow_src.jobs.snapshots import indicator_columns, snapshot_table  # noqa: E402

with logged(snakemake.log[0]) as log:  # noqa: F821
    sm = snakemake  # noqa: F821
    stores = read_all([(open_store, path) for path in sm.input.stores])
    table = snapshot_table(stores, sm.params.runs)
    Path(sm.output.table).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(sm.output.table, index=False)
    log(f"{table['run_id'].nunique()} networks x {table['step'].nunique()} steps; "
        f"indicators {indicator_columns(table)}; "
        f"sources {table['source'].value_counts().to_dict()}")
    draw_figures(sm, sm.params.figures_drawn, log, StudyData(snapshots=lambda: table),
                 {"snapshots": sm.output.table},
                 options={"color_by": sm.params.color_by, **sm.params.size})
    seal_job(sm)
