"""The documentation holds together: every relative link of README.md, CHANGELOG.md,
docs/**/*.md and tests/README.md resolves to a file (and an anchor to a heading, with
GitHub's slugs), every `docs/science.md §N` names a section that exists, the README stays a
front page (at most 250 lines), and no page sends a reader outside the project.

Standard library and pytest only (no torch, no Snakemake): with `--noconftest` (tests/conftest.py
imports torch for the other tests) it runs in well under a second.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README_MAX_LINES = 250
# Where the project's own notes live outside it: a user must never be pointed there
# (spelled in parts, so that a search of the repository for them finds none here).
OUTSIDE = ("../" + "shared", "STUDY" + ".md", "STYLE" + ".md")

FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_DEF = re.compile(r"^\s*\[[^\]]+\]:\s*(\S+)")
CODE_SPAN = re.compile(r"(`+)(.+?)\1")
SCIENCE_REF = re.compile(r"science\.md((?:(?:\s*,\s*|\s+and\s+|\s+)§\s?\d+)+)")
SCIENCE_SECTION = re.compile(r"^##\s+§(\d+)\b")


def doc_files(repo: Path = REPO) -> list[Path]:
    """The pages whose links are checked."""
    files = [repo / "README.md", repo / "CHANGELOG.md", repo / "tests" / "README.md"]
    files += sorted((repo / "docs").rglob("*.md"))
    return [f for f in files if f.exists()]


def prose_lines(text: str):
    """(line number, line) outside fenced code blocks."""
    fenced = False
    for number, line in enumerate(text.splitlines(), start=1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield number, line


def heading_text(markdown: str) -> str:
    """The text GitHub renders for a heading's Markdown: code spans keep their content,
    links and images their text, emphasis markers go."""
    text = CODE_SPAN.sub(lambda m: m.group(2), markdown)
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"(\*\*|__|\*)(.+?)\1", r"\2", text)
    return text


def slug(text: str) -> str:
    """GitHub's anchor for a heading's text (github-slugger): lower case, every character
    that is not a letter, mark, number, '_', '-' or space dropped, spaces made '-'."""
    kept = [c for c in text.lower()
            if c in "-_ " or unicodedata.category(c)[0] in "LMN"]
    return "".join(kept).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every anchor GitHub gives the headings of a Markdown file (duplicates get -1, -2...)."""
    seen: dict[str, int] = {}
    result = set()
    for _, line in prose_lines(path.read_text(encoding="utf-8")):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(heading_text(match.group(2)))
        count = seen.get(base, 0)
        seen[base] = count + 1
        result.add(base if count == 0 else f"{base}-{count}")
    return result


def links(path: Path):
    """(line number, target) of every Markdown link and image outside code."""
    for number, line in prose_lines(path.read_text(encoding="utf-8")):
        line = CODE_SPAN.sub("", line)
        for match in INLINE_LINK.finditer(line):
            yield number, match.group(1)
        match = REFERENCE_DEF.match(line)
        if match:
            yield number, match.group(1)


def broken_links(files: list[Path], repo: Path = REPO) -> list[str]:
    """One message per relative link that names a missing file or a missing heading."""
    problems = []
    for path in files:
        for number, target in links(path):
            where = f"{path.relative_to(repo)}:{number}: {target}"
            if not target or re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):
                continue  # an absolute URL (https:, mailto:): not checked offline
            file_part, _, anchor = target.partition("#")
            resolved = (path.parent / file_part).resolve() if file_part else path
            if not resolved.exists():
                problems.append(f"{where}: no such file")
                continue
            if not resolved.is_relative_to(repo.resolve()):
                problems.append(f"{where}: points outside the repository")
                continue
            if anchor:
                if resolved.suffix != ".md" or resolved.is_dir():
                    problems.append(f"{where}: an anchor into a file that is not Markdown")
                elif anchor not in anchors(resolved):
                    problems.append(f"{where}: no heading with anchor #{anchor}")
    return problems


def science_sections(repo: Path = REPO) -> set[int]:
    text = (repo / "docs" / "science.md").read_text(encoding="utf-8")
    return {int(m.group(1)) for line in text.splitlines()
            if (m := SCIENCE_SECTION.match(line))}


def bad_science_references(files: list[Path], repo: Path = REPO) -> list[str]:
    """One message per `science.md §N` whose section N does not exist."""
    sections = science_sections(repo)
    problems = []
    for path in files:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            for match in SCIENCE_REF.finditer(line):
                for n in re.findall(r"§\s?(\d+)", match.group(1)):
                    if int(n) not in sections:
                        problems.append(f"{path.relative_to(repo)}:{number}: "
                                        f"docs/science.md §{n} does not exist")
    return problems


def code_files(repo: Path = REPO) -> list[Path]:
    """Source files that cite docs/science.md sections."""
    patterns = [("rules", "*.smk"), ("rules", "*.py"), ("workflow_src", "*.py"),
                ("tests", "*.py"), ("benchmarks", "*.py"), ("report", "*.rst")]
    files = [repo / "Snakefile"]
    files += [f for folder, pattern in patterns for f in sorted((repo / folder).rglob(pattern))]
    return [f for f in files if f.exists() and f != Path(__file__).resolve()]


# --- the repository's documentation -------------------------------------------------------


def test_every_relative_link_resolves_to_a_file_and_heading():
    problems = broken_links(doc_files())
    assert not problems, "broken links:\n" + "\n".join(problems)


def test_every_science_section_reference_exists():
    problems = bad_science_references(doc_files() + code_files())
    assert not problems, "\n".join(problems)


def test_the_readme_is_a_front_page():
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines; keep it at most {README_MAX_LINES} and move "
        "detail to the page of docs/ that holds the topic")


@pytest.mark.parametrize("outside", OUTSIDE)
def test_no_page_points_outside_the_project(outside):
    pages = [p for p in doc_files() if outside in p.read_text(encoding="utf-8")]
    assert not pages, f"{outside} is named in {[str(p.relative_to(REPO)) for p in pages]}"


def test_the_documentation_map_lists_every_page_of_docs():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    pages = sorted((REPO / "docs").glob("*.md"))
    missing = [p.name for p in pages if f"](docs/{p.name})" not in readme]
    assert not missing, f"README.md's documentation map does not link {missing}"


# --- the checker itself fails on what it should catch -------------------------------------


def test_slugs_are_githubs():
    assert slug(heading_text("Damaged results: `snakemake verify`")) == \
        "damaged-results-snakemake-verify"
    assert slug(heading_text("§7 The output contract")) == "7-the-output-contract"
    assert slug(heading_text("The `metrics.zarr` contract")) == "the-metricszarr-contract"
    assert slug(heading_text("Indicators beyond Novak's (`bench_indicators.py`)")) == \
        "indicators-beyond-novaks-bench_indicatorspy"
    assert slug(heading_text("Rule → script → module")) == "rule--script--module"
    assert slug(heading_text("**Bold** [link](x.md) and ψ")) == "bold-link-and-ψ"


def _tree(tmp_path: Path, page: str) -> list[Path]:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "science.md").write_text("# Science\n\n## §1 Purpose\n\n## §2 Data\n")
    (tmp_path / "docs" / "other.md").write_text("# Other\n\n## A heading\n\n## A heading\n")
    (tmp_path / "README.md").write_text(page)
    return doc_files(tmp_path)


def test_the_checker_finds_a_missing_file_and_a_missing_anchor(tmp_path):
    files = _tree(tmp_path, "[ok](docs/other.md#a-heading) [ok too](docs/other.md#a-heading-1)\n"
                            "[gone](docs/missing.md) [no anchor](docs/other.md#no-such)\n"
                            "[own](#nowhere) ![img](docs/gallery/x.png) [web](https://x.org/y)\n"
                            "`[code](not/checked.md)`\n```\n[fenced](not/checked.md)\n```\n")
    problems = broken_links(files, tmp_path)
    assert len(problems) == 4, problems
    assert any("docs/missing.md: no such file" in p for p in problems)
    assert any("#no-such" in p for p in problems)
    assert any("#nowhere" in p for p in problems)
    assert any("docs/gallery/x.png: no such file" in p for p in problems)


def test_the_checker_finds_a_science_section_that_does_not_exist(tmp_path):
    files = _tree(tmp_path, "See docs/science.md §2 and docs/science.md §1, §9.\n")
    problems = bad_science_references(files, tmp_path)
    assert problems == ["README.md:1: docs/science.md §9 does not exist"]
