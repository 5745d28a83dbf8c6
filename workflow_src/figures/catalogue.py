"""Every figure of a study in one table: what it is drawn from and with which options.

``FIGURES[stem]`` names the study tables the figure reads (``reads``, keys of
``StudyData``), the plot options it uses (``options``: a change to any other option leaves
it as it is) and how it is built. The rule scripts draw their figures from it through
``draw`` (which reuses a figure whose inputs and options are unchanged, output.Figures),
and benchmarks/bench_figures.py draws all of them from a synthetic study the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from importlib import import_module

from ..runtable import HYPERPARAMETERS

SIZE = ("width", "height")


class _Lazy:
    """A figures module imported on first use, so the Snakefile reads this table (``options``)
    without altair, pandas or xarray."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr: str):
        return getattr(import_module(f"{__package__}.{self._name}"), attr)


bounds, conditioning, double_descent, eigenlearning, implicit_bias, indicators, keskar, \
    sensitivity, studies, snapshots = (
        _Lazy(n) for n in ("bounds", "conditioning", "double_descent", "eigenlearning",
                           "implicit_bias", "indicators", "keskar", "sensitivity", "studies",
                           "snapshots"))


class StudyData:
    """The tables figures are drawn from, each loaded on first use. ``loaders``: name ->
    a function of no arguments (e.g. reading ``stats/networks.csv`` against its seal).
    Names: metrics (the metrics.zarr Dataset), networks, summary, granulated, pairs,
    paired, ellipses, curves, keskar, snapshots. ``derived`` keeps tables computed from them."""

    def __init__(self, **loaders: Callable):
        self._loaders = loaders
        self._values: dict = {}

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        if name not in self._values:
            if name not in self._loaders:
                raise AttributeError(f"no study table {name!r} (have {sorted(self._loaders)})")
            self._values[name] = self._loaders[name]()
        return self._values[name]

    def derived(self, key, make: Callable):
        if ("derived", key) not in self._values:
            self._values["derived", key] = make()
        return self._values["derived", key]


@dataclass(frozen=True)
class Figure:
    reads: tuple[str, ...]
    options: tuple[str, ...]
    build: Callable  # (StudyData, options dict) -> chart


def _hps(data: StudyData) -> list[str]:
    return list(data.metrics.attrs["hyperparameters"])


def _points(data: StudyData, color_by: str | None):
    columns = (color_by,) if color_by else ()
    return data.derived(("points", color_by),
                        lambda: sensitivity.points_table(data.metrics, columns))


def fits(data: StudyData):
    """One row per network of the learning curves (studies.fit_table)."""
    return data.derived("fits", lambda: studies.fit_table(data.curves, list(HYPERPARAMETERS)))


def _indicators_vs_gap(data: StudyData, o: dict):
    from ..stats.summary import optimizer_flags

    return indicators.indicators_vs_gap_chart(
        data.networks, studies.indicator_titles(data.metrics), _hps(data), o["color_by"],
        optimizer_flags(data.metrics))


def _loss_bounds(data: StudyData, o: dict):
    points = bounds.bounds_table(data.metrics)
    n_classes = int(data.metrics["n_classes"].max())  # one class count per study
    return bounds.bounds_chart(points, n_classes, o["width"], o["height"])


def _snapshots(data: StudyData, o: dict):
    from ..jobs.snapshots import indicator_columns

    table = data.snapshots
    return snapshots.snapshots_chart(table, indicator_columns(table), list(HYPERPARAMETERS),
                                     o["color_by"], o["width"], o["height"])


FIGURES: dict[str, Figure] = {
    "jacobian_vs_gap": Figure(("metrics", "networks"), ("color_by", *SIZE), lambda d, o: (
        sensitivity.jacobian_vs_gap_chart(d.networks, _hps(d), o["color_by"], o["width"],
                                          o["height"]))),
    "jacobian_by_correctness": Figure(("metrics",), ("color_by", *SIZE), lambda d, o: (
        sensitivity.jacobian_by_correctness_chart(_points(d, o["color_by"]), o["color_by"],
                                                  o["width"], o["height"]))),
    "jacobian_vs_loss": Figure(("metrics",), SIZE, lambda d, o: (
        sensitivity.jacobian_vs_loss_chart(_points(d, o.get("color_by")), o["width"],
                                           o["height"]))),
    "loss_bounds": Figure(("metrics",), SIZE, _loss_bounds),
    "ellipse_profile": Figure(("metrics",), SIZE, lambda d, o: (
        sensitivity.ellipse_profile_chart(sensitivity.ellipse_profile_table(d.metrics),
                                          o["width"], o["height"]))),
    "ellipse_kinds": Figure(("ellipses",), SIZE, lambda d, o: (
        sensitivity.ellipse_kinds_chart(d.ellipses, o["width"], o["height"]))),
    "indicators_vs_gap": Figure(("metrics", "networks"), ("color_by",), _indicators_vs_gap),
    "indicator_ranking": Figure(("summary", "granulated"), (), lambda d, o: (
        indicators.indicator_ranking_chart(d.summary, d.granulated))),
    "factors": Figure(("metrics", "pairs", "paired"), SIZE, lambda d, o: (
        studies.factor_chart(d.pairs, d.paired, studies.indicator_titles(d.metrics),
                             o["width"], o["height"]))),
    "learning_curves": Figure(("curves",), SIZE, lambda d, o: (
        studies.learning_curves_chart(d.curves, list(HYPERPARAMETERS), o["width"],
                                      o["height"]))),
    "time_to_fit": Figure(("curves",), SIZE, lambda d, o: (
        studies.time_to_fit_chart(fits(d), list(HYPERPARAMETERS), o["width"], o["height"]))),
    "test_error": Figure(("curves",), SIZE, lambda d, o: (
        studies.test_error_chart(fits(d), list(HYPERPARAMETERS), o["width"], o["height"]))),
    "keskar_1d": Figure(("keskar",), SIZE, lambda d, o: (
        keskar.keskar_1d_chart(d.keskar, o["width"], o["height"]))),
    "double_descent": Figure(("networks",), ("n_train", *SIZE), lambda d, o: (
        double_descent.double_descent_chart(d.networks, o["n_train"], o["width"],
                                            o["height"]))),
    "double_descent_epochs": Figure(("curves", "networks"), ("n_train", *SIZE), lambda d, o: (
        double_descent.epoch_wise_chart(d.curves, d.networks, o["n_train"], o["width"],
                                        o["height"]))),
    "snapshots": Figure(("snapshots",), ("color_by", *SIZE), _snapshots),
    "conditioning_vs_width": Figure(("snapshots",), SIZE, lambda d, o: (
        conditioning.conditioning_vs_width_chart(d.snapshots, o["width"], o["height"]))),
    "conditioning_along_training": Figure(("snapshots",), SIZE, lambda d, o: (
        conditioning.conditioning_along_training_chart(d.snapshots, o["width"],
                                                       o["height"]))),
    "implicit_bias": Figure(("snapshots",), SIZE, lambda d, o: (
        implicit_bias.implicit_bias_chart(d.snapshots, o["width"], o["height"]))),
    "eigenlearning": Figure(("metrics",), SIZE, lambda d, o: (
        eigenlearning.eigenlearning_chart(d.metrics, o["width"], o["height"]))),
}


def options(plots: dict, stems: Iterable[str], **extra) -> dict:
    """The plot options (of ``plots``, the config's ``plots``, and ``extra``) that the
    figures ``stems`` use: a figure job's params, so changing another option leaves it be."""
    names = {name for stem in stems for name in FIGURES[stem].options}
    values = {**plots, **extra}
    return {name: values[name] for name in sorted(names)}


def draw(figures, stems: Iterable[str], data: StudyData, options: dict,
         paths: dict[str, str]) -> None:
    """Draw (or reuse) each figure of ``stems`` with ``figures`` (output.Figures): its key
    is its own options and the content of the files in ``paths`` (table name -> path) that
    it reads."""
    for stem in stems:
        figure = FIGURES[stem]
        figures.draw(stem, lambda f=figure: f.build(data, options),
                     options={name: options[name] for name in figure.options},
                     inputs=[paths[name] for name in figure.reads])
