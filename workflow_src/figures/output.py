"""Writing figures: each chart becomes one Vega spec, written as self-contained HTML, PNG
and SVG; a job that draws several figures reuses those whose inputs and options have not
changed.

- ``vega_spec``: VegaFusion (altair's ``vegafusion`` data transformer) evaluates a chart's
  transforms (bins, aggregates, box-plot quartiles, filters) in Python and embeds only their
  result, so a figure carries what it draws, not the rows it was drawn from. A dataset that
  would still embed more than ``MAX_ROWS`` rows raises altair's MaxRowsError: a chart that
  grows with the study is a bug to fix, not a file to write.
- ``save``: the spec is built (and validated) once, rendered by vl-convert to SVG, the SVG
  rasterised to PNG, and the spec written into an HTML page that opens offline: it loads
  ``vega.js`` from its own folder (vl-convert's bundle of Vega, Vega-Lite and vega-embed,
  0.9 MB, written once per study by ``write_library``, as plotly's
  ``include_plotlyjs="directory"`` does) instead of carrying a copy of it in every figure.
- ``Figures``: one job's figures. ``draw`` keys each figure by its options, the content of
  the inputs it reads, the job's code and the rendering libraries' versions; a figure whose
  key is unchanged is linked from ``figures/.cache`` instead of drawn again, so changing one
  plot option re-draws only the figures that use it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterable
from importlib.metadata import version
from pathlib import Path

from ..integrity import check_record, digest, seal_record

FORMATS = ("html", "png", "svg")
PNG_SCALE = 2  # PNG pixels per CSS pixel, unless that makes more than PNG_PIXELS
PNG_PIXELS = 3_600_000  # a larger figure's PNG is scaled down to this many pixels (>= 1x)
MAX_ROWS = 20_000  # rows of any one dataset a figure may embed (after VegaFusion's transforms)
CACHE = ".cache"  # beside the figures: the reusable figures and the JavaScript bundle
LIBRARIES = ("altair", "vl-convert-python", "vegafusion")


def outputs(directory: str, stem: str) -> dict[str, str]:
    """The files ``save`` writes for one figure, keyed by format (for rule outputs)."""
    return {fmt: f"{directory}/{stem}.{fmt}" for fmt in FORMATS}


def vega_spec(chart) -> dict:
    """The chart as a Vega spec whose data are the results of its transforms (VegaFusion)."""
    import altair as alt

    with alt.data_transformers.enable("vegafusion", max_rows=MAX_ROWS):
        return chart.to_dict(format="vega")


def save(chart, stem: str) -> dict:
    """Write ``stem``.html, .png and .svg of ``chart``; returns its Vega spec."""
    import vl_convert as vlc

    path = Path(stem)
    path.parent.mkdir(parents=True, exist_ok=True)
    spec = vega_spec(chart)
    svg = vlc.vega_to_svg(spec)
    Path(f"{stem}.svg").write_text(svg)
    # From the SVG just rendered: byte-identical to vega_to_png(spec), without rendering
    # Vega's scene a second time (a third of the PNG's time).
    Path(f"{stem}.png").write_bytes(vlc.svg_to_png(svg, scale=png_scale(svg)))
    Path(f"{stem}.html").write_text(html_page(spec, path.name))
    return spec


def png_scale(svg: str) -> float:
    """PNG_SCALE, or less (not below 1) for a figure whose PNG would exceed PNG_PIXELS
    (the SVG's width and height are the figure's size in CSS pixels)."""
    import re

    size = re.search(r'<svg[^>]*?width="([\d.]+)"[^>]*?height="([\d.]+)"', svg)
    if size is None:
        return PNG_SCALE
    pixels = float(size.group(1)) * float(size.group(2))
    return max(1.0, min(PNG_SCALE, (PNG_PIXELS / pixels) ** 0.5))


# --- HTML that opens offline ----------------------------------------------------------
LIBRARY = "vega.js"  # beside the figures: what their HTML pages load
PAGE = """<!DOCTYPE html>
<html>
<head>
<meta charset="UTF-8">
<title>{title}</title>
<script src="{library}"></script>
<style>#vis.vega-embed {{ width: 100%; display: flex; }}</style>
</head>
<body>
<div id="vis"></div>
<script>
// Drawn by {libraries}, from {library} beside this file.
const spec = {spec};
const vis = document.getElementById("vis");
if (typeof vegaEmbed === "undefined") {{
  vis.textContent = "{library} (Vega and vega-embed) is not beside this file: open the "
    + "figure from its folder, results/<study>/figures/, or see its PNG and SVG there.";
}} else {{
  vegaEmbed(vis, spec, {{mode: "vega"}}).catch(error => {{ vis.textContent = String(error); }});
}}
</script>
</body>
</html>
"""


def html_page(spec: dict, title: str) -> str:
    """A page that draws the Vega ``spec`` with LIBRARY from its own folder."""
    import vl_convert as vlc

    text = json.dumps(spec, ensure_ascii=False, separators=(",", ":"))
    return PAGE.format(
        title=title, library=LIBRARY, spec=text.replace("</", "<\\/"),
        libraries=f"Vega {vlc.get_vega_version()} and vega-embed "
                  f"{vlc.get_vega_embed_version()} (vl-convert {version('vl-convert-python')})")


def write_library(path) -> None:
    """Write LIBRARY, vl-convert's JavaScript bundle of Vega, Vega-Lite and vega-embed, at
    ``path``. Bundling takes seconds, so the bundle is kept in ``.cache`` beside it under a
    record, and made again only for another vl-convert or when the record fails."""
    path = Path(path)
    cache = path.parent / CACHE
    name = f"vega-embed-{version('vl-convert-python')}.js"
    cached, record = cache / name, cache / f"{name}.json"
    if check_record(record):
        import vl_convert as vlc

        cache.mkdir(parents=True, exist_ok=True)
        partial = cache / f".{name}.{os.getpid()}.partial"
        partial.write_text(f"// Vega, Vega-Lite and vega-embed, bundled by vl-convert "
                           f"{version('vl-convert-python')}\n{vlc.javascript_bundle()}")
        os.replace(partial, cached)
        seal_record(record, {"bundle": name}, [cached])
    _link(cached, path)
    os.utime(path)


# --- A job's figures, reused while their inputs and options stay the same ----------------
def content_digest(path) -> str:
    """SHA-256 of a file, or of a sealed store's manifest (which lists every file's)."""
    path = Path(path)
    if path.is_dir():
        path = path / "manifest.json"
    return digest(path)["sha256"]


class Figures:
    """The figures one job draws into ``directory``.

    ``code``: the source files the job's figures depend on (the rule's ``code`` input and
    its script); any change to them re-draws every figure of the job. ``log`` gets one line
    per figure: drawn (with its seconds) or reused.
    """

    def __init__(self, directory, code: Iterable = (), log: Callable = print):
        self.directory = Path(directory)
        self.cache = self.directory / CACHE
        self.log = log
        self._digests: dict[str, str] = {}
        self.code = {str(p): content_digest(p) for p in sorted(map(str, code))}
        self.versions = {name: version(name) for name in LIBRARIES}
        self.drawn: list[str] = []
        self.reused: list[str] = []

    def key(self, stem: str, options: dict, inputs: Iterable) -> str:
        """What the figure ``stem`` is drawn from: options, inputs' content, code, versions."""
        for path in map(str, inputs):
            if path not in self._digests:
                self._digests[path] = content_digest(path)
        described = {"figure": stem, "options": options, "code": self.code,
                     "versions": self.versions, "png_scale": PNG_SCALE, "max_rows": MAX_ROWS,
                     "inputs": {os.path.basename(p): self._digests[p] for p in map(str, inputs)}}
        text = json.dumps(described, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()

    def draw(self, stem: str, build: Callable, options: dict, inputs: Iterable) -> bool:
        """Write ``stem``'s files, from the cache when its key is unchanged, else from
        ``build()`` (a chart); True when it was drawn."""
        import time

        key = self.key(stem, options, inputs)
        if self._reuse(stem, key):
            self.reused.append(stem)
            self.log(f"{stem}: reused (same inputs, options and code)")
            return False
        start = time.perf_counter()
        save(build(), str(self.directory / stem))
        self._keep(stem, key)
        self.drawn.append(stem)
        self.log(f"{stem}: drawn in {time.perf_counter() - start:.2f} s")
        return True

    def _files(self, stem: str, where: Path) -> dict[str, Path]:
        return {fmt: where / f"{stem}.{fmt}" for fmt in FORMATS}

    def _record(self, stem: str) -> Path:
        return self.cache / f"{stem}.json"

    def _reuse(self, stem: str, key: str) -> bool:
        record = self._record(stem)
        if check_record(record) or json.loads(record.read_text()).get("key") != key:
            return False
        for fmt, cached in self._files(stem, self.cache).items():
            target = self.directory / f"{stem}.{fmt}"
            _link(cached, target)
            os.utime(target)  # newer than the job's inputs, as a drawn file would be
        return True

    def _keep(self, stem: str, key: str) -> None:
        self.cache.mkdir(parents=True, exist_ok=True)
        record = self._record(stem)
        record.unlink(missing_ok=True)
        files = self._files(stem, self.cache)
        for fmt, cached in files.items():
            _link(self.directory / f"{stem}.{fmt}", cached)
        seal_record(record, {"figure": stem, "key": key}, list(files.values()))


def _link(source: Path, target: Path) -> None:
    """``target`` becomes ``source``'s content: a hard link (no copy) where the file system
    allows one, else a copy."""
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)
