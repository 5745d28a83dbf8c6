"""Writing figures: interactive HTML (JavaScript inlined, opens offline), PNG and SVG."""

from __future__ import annotations

from pathlib import Path

import altair as alt
import numpy as np
import pandas as pd

FORMATS = ("html", "png", "svg")


def sample_rows(frame: pd.DataFrame, max_rows: int, seed: int = 0) -> pd.DataFrame:
    """At most ``max_rows`` rows (a seeded random sample), to keep interactive figures light."""
    return frame if len(frame) <= max_rows else frame.sample(max_rows, random_state=seed)


def outputs(directory: str, stem: str) -> dict[str, str]:
    """The files ``save`` writes for one figure, keyed by format (for rule outputs)."""
    return {fmt: f"{directory}/{stem}.{fmt}" for fmt in FORMATS}


def save(chart: alt.Chart, stem: str) -> None:
    """Write ``stem``.html, .png and .svg."""
    Path(stem).parent.mkdir(parents=True, exist_ok=True)
    chart.save(f"{stem}.html", inline=True)
    chart.save(f"{stem}.png", scale_factor=2)
    chart.save(f"{stem}.svg")


# Tooltip number format: 4 significant digits instead of float64's 17.
TOOLTIP_FORMAT = ".4g"
MAX_LOG_TICKS = 6  # labels on one log axis; more collide ("400500")
# Plain numbers in [1e-3, 1e5), exponent notation outside, so labels stay short.
LOG_LABELS = ("datum.value >= 1e-3 && datum.value < 1e5 ? format(datum.value, ',~g')"
              " : format(datum.value, '~e')")


def tooltips(frame: pd.DataFrame, fields: list[str]) -> list[alt.Tooltip]:
    """Tooltip channels for ``fields``, numbers (floats) shown to TOOLTIP_FORMAT."""
    return [alt.Tooltip(f"{name}:Q", format=TOOLTIP_FORMAT)
            if name in frame and pd.api.types.is_float_dtype(frame[name]) else alt.Tooltip(name)
            for name in fields]


def _steps(mantissas, low_decade: int, high_decade: int) -> np.ndarray:
    """m × 10^k for every mantissa m and k in [low_decade, high_decade], ascending; parsed
    from text so that 1e-30 is exactly the float nearest 10^-30."""
    return np.array([float(f"{m}e{k}") for k in range(low_decade, high_decade + 1)
                     for m in mantissas])


def log_scale(*values) -> dict:
    """``scale`` and ``axis`` keyword arguments for a log axis fitted to the positive,
    finite entries of ``values`` (arrays or Series; zeros and NaN are ignored, since a log
    axis cannot show them).

    The domain is the tightest 1-2-5 interval around the data plus a margin, so an axis neither
    stretches over decades without data nor loses its ticks. At most MAX_LOG_TICKS labels
    are placed: on 1-2-5 values for a narrow range, else on 1-5, on powers of ten, or on
    every few powers of ten.
    """
    data = np.concatenate([np.asarray(v, dtype=float).ravel() for v in values])
    data = data[np.isfinite(data) & (data > 0)]
    if data.size == 0:
        return {"scale": alt.Scale(type="log"), "axis": alt.Axis(labelExpr=LOG_LABELS)}
    decades = int(np.floor(np.log10(data.min()))) - 1, int(np.ceil(np.log10(data.max()))) + 1
    steps = _steps((1, 2, 5), *decades)
    # 10 % of margin, so no point sits on the frame (and one value still gets a range).
    lo = steps[steps <= data.min() / 1.1].max()
    hi = steps[steps >= data.max() * 1.1].min()
    for mantissas in ((1, 2, 5), (1, 5), (1,)):
        ticks = _steps(mantissas, *decades)
        ticks = ticks[(ticks >= lo) & (ticks <= hi)]
        if len(ticks) <= MAX_LOG_TICKS:
            break
    else:
        ticks = ticks[::int(np.ceil(len(ticks) / MAX_LOG_TICKS))]
    return {"scale": alt.Scale(type="log", domain=[float(lo), float(hi)], nice=False),
            "axis": alt.Axis(values=[float(t) for t in ticks], labelExpr=LOG_LABELS)}
