"""Every figure drawn from a synthetic study at several sizes: file sizes side by side
(they should stay flat as the study grows) and the time to draw each figure.

    .venv/bin/python benchmarks/bench_figures.py                     # 1,000 and 10,000 networks
    .venv/bin/python benchmarks/bench_figures.py --networks 200 2000 --out /tmp/figs

The study is workflow_src/figures/synthetic.py: a metrics.zarr-like Dataset (100 test
points, 6 ellipses of 64 positions, 17 indicators, 2 datasets by default) and the
statistics' tables; every figure of workflow_src/figures/catalogue.py is drawn with the
rules' code path (output.save: VegaFusion, then HTML, PNG and SVG). Each size's files go to
<out>/<networks>/; the tables printed are the files' sizes in kB, the largest file, the
folder's total, and the seconds to build and write each figure (the synthetic study's own
construction is timed apart).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from workflow_src.figures.catalogue import FIGURES  # noqa: E402
from workflow_src.figures.output import FORMATS, LIBRARY, save, write_library  # noqa: E402
from workflow_src.figures.synthetic import synthetic_study  # noqa: E402
from workflow_src.figures.theme import use_theme  # noqa: E402

OPTIONS = {"color_by": "label_noise", "width": 420, "height": 300, "n_train": 300}
MB = 1_000_000


def draw_all(n_networks: int, out: Path, n_indicators: int, stems) -> dict:
    """{stem: {"seconds": s, format: bytes}} for every figure at ``n_networks``."""
    start = time.perf_counter()
    data, _ = synthetic_study(n_networks, n_indicators)
    print(f"{n_networks:>6} networks: synthetic study in {time.perf_counter() - start:.1f} s",
          flush=True)
    out.mkdir(parents=True, exist_ok=True)
    write_library(out / LIBRARY)  # the JavaScript the HTML pages load, once per folder
    results = {}
    for stem in stems:
        start = time.perf_counter()
        save(FIGURES[stem].build(data, OPTIONS), str(out / stem))
        seconds = time.perf_counter() - start
        results[stem] = {"seconds": seconds,
                         **{fmt: os.path.getsize(out / f"{stem}.{fmt}") for fmt in FORMATS}}
        print(f"{n_networks:>6} networks: {stem} in {seconds:.1f} s", flush=True)
    results["_library"] = os.path.getsize(out / LIBRARY)
    return results


def report(sizes: list[int], results: list[dict]) -> str:
    stems = [stem for stem in results[0] if stem != "_library"]
    head = " | ".join(f"{fmt} kB @ {n:,}" for fmt in FORMATS for n in sizes)
    lines = [f"| figure | {head} | " + " | ".join(f"s @ {n:,}" for n in sizes) + " |",
             "|---" * (1 + len(FORMATS) * len(sizes) + len(sizes)) + "|"]
    for stem in stems:
        cells = [f"{r[stem][fmt] / 1000:,.0f}" for fmt in FORMATS for r in results]
        cells += [f"{r[stem]['seconds']:.1f}" for r in results]
        lines.append(f"| {stem} | " + " | ".join(cells) + " |")
    for n, r in zip(sizes, results):
        files = [(r[s][fmt], f"{s}.{fmt}") for s in stems for fmt in FORMATS]
        largest = max(files)
        total = sum(size for size, _ in files) + r["_library"]
        seconds = sum(r[s]["seconds"] for s in stems)
        lines.append(f"\n{n:,} networks: all files {total / MB:.1f} MB (with {LIBRARY}, "
                     f"{r['_library'] / MB:.1f} MB), largest {largest[1]} "
                     f"{largest[0] / MB:.2f} MB, drawing {seconds:.0f} s in all")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--indicators", type=int, default=17)
    parser.add_argument("--figures", nargs="+", default=list(FIGURES), choices=list(FIGURES))
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench_figures"))
    args = parser.parse_args(argv)
    use_theme()
    results = [draw_all(n, args.out / str(n), args.indicators, args.figures)
               for n in args.networks]
    print()
    print(report(args.networks, results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
