"""A figure's files do not grow with the number of networks: every figure of the catalogue
drawn from a synthetic study of 200 and of 2,000 networks (workflow_src/figures/synthetic.py,
the study benchmarks/bench_figures.py draws at 1,000 and 10,000)."""

from __future__ import annotations

import os

import pytest

from workflow_src.figures.catalogue import FIGURES
from workflow_src.figures.output import FORMATS, save
from workflow_src.figures.synthetic import synthetic_study
from workflow_src.figures.theme import use_theme

SIZES = (200, 2000)
MAX_FILE = 2_000_000  # bytes, any figure file at any study size
GROWTH = 2.0  # at most this times the file at 200 networks ...
SLACK = 250_000  # ... plus this much (shading and a full sample replace a few points)
OPTIONS = {"color_by": "label_noise", "width": 420, "height": 300, "n_train": 300}

pytestmark = pytest.mark.slow  # about a minute: 30 figures, each rendered three times


@pytest.fixture(scope="module")
def sizes(tmp_path_factory):
    use_theme()
    found = {}
    for n in SIZES:
        data, _ = synthetic_study(n)
        out = tmp_path_factory.mktemp(f"figures{n}")
        for stem, figure in FIGURES.items():
            save(figure.build(data, OPTIONS), str(out / stem))
            for fmt in FORMATS:
                found[n, stem, fmt] = os.path.getsize(out / f"{stem}.{fmt}")
    return found


@pytest.mark.parametrize("stem", list(FIGURES))
def test_figure_files_stay_within_a_bound_independent_of_the_network_count(sizes, stem):
    small, large = SIZES
    for fmt in FORMATS:
        assert sizes[large, stem, fmt] <= MAX_FILE, (stem, fmt, sizes[large, stem, fmt])
        assert sizes[large, stem, fmt] <= GROWTH * sizes[small, stem, fmt] + SLACK, (
            stem, fmt, sizes[small, stem, fmt], sizes[large, stem, fmt])
