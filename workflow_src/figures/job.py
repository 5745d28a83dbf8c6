"""What a figure rule's script does: load the study tables its inputs name (each checked
against the seal of the job that wrote it), then draw or reuse each of its figures
(catalogue.draw, output.Figures) and log which.

A rule's named inputs give the tables: ``metrics`` (metrics.zarr), and a CSV with the seal
of its job, e.g. ``networks`` with ``correlate_seal`` (rules/common.smk, ``sealed``).
"""

from __future__ import annotations

from pathlib import Path

from .catalogue import FIGURES, StudyData, draw
from .output import Figures
from .theme import use_theme

# table name -> (the rule's input name, the input name of the seal that vouches for it)
CSV_INPUTS = {
    "networks": ("networks", "correlate_seal"),
    "summary": ("summary", "summarize_seal"),
    "granulated": ("granulated", "granulate_seal"),
    "pairs": ("pairs", "paired_seal"),
    "paired": ("tests", "paired_seal"),
    "ellipses": ("ellipses", "paired_seal"),
    "curves": ("curves", "collect_curves_seal"),
    "keskar": ("table", "keskar_interpolation_seal"),
}


def study_data(job) -> tuple[StudyData, dict[str, str]]:
    """The tables the rule's inputs provide (loaded on first use), and their paths."""
    from ..integrity import open_store, read_csv

    names = set(job.input.keys())
    loaders, paths = {}, {}
    if "metrics" in names:
        loaders["metrics"] = lambda: open_store(job.input.metrics)
        paths["metrics"] = job.input.metrics
    for table, (name, seal) in CSV_INPUTS.items():
        if name in names and seal in names:
            path, record = getattr(job.input, name), getattr(job.input, seal)
            loaders[table] = lambda p=path, r=record: read_csv(p, r)
            paths[table] = path
    return StudyData(**loaders), paths


def draw_figures(job, stems, log, data: StudyData | None = None,
                 paths: dict[str, str] | None = None, options: dict | None = None) -> StudyData:
    """Draw (or reuse) the figures ``stems`` in the rule's ``params.figures`` folder, with
    ``options`` (default ``params.options``); the key of each figure covers the rule's code
    inputs and script. ``data`` and ``paths`` default to the tables of the rule's inputs."""
    use_theme()
    if data is None:
        data, paths = study_data(job)
    options = dict(job.params.options) if options is None else options
    script = Path(job.scriptdir) / f"{job.rule}.py"
    code = [*getattr(job.input, "code", []), *([script] if script.is_file() else [])]
    figures = Figures(job.params.figures, code=code, log=log)
    draw(figures, [s for s in stems if s in FIGURES], data, options, paths)
    log(f"{len(figures.drawn)} figures drawn, {len(figures.reused)} reused")
    return data
