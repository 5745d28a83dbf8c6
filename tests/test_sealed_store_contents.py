"""What a sealed store may contain (workflow_src/integrity.py check_store and open_store):
exactly the files its manifest lists, as they were written, with the variables it lists.
An added, removed or renamed file, a changed variable, an empty manifest or one listing a
file outside the store is found, named, and refused with the fix
(tests/test_integrity.py has the damaged chunks, records and models)."""

from __future__ import annotations

import json

import pytest
from test_integrity import assert_names_file_and_fix, chunk_files, store  # noqa: F401

from workflow_src import integrity
from workflow_src.integrity import MANIFEST, DamagedOutputError


def manifest(path) -> dict:
    return json.loads((path / MANIFEST).read_text())


def added(path):
    (path / "loss" / "c" / "extra").write_bytes(b"\0")
    return {f"{path}/loss/c/extra: not in the store's manifest"}


def added_manifest_in_a_variable(path):
    (path / "loss" / MANIFEST).write_text(json.dumps(manifest(path)))
    return {f"{path}/loss/{MANIFEST}: not in the store's manifest"}


def removed(path):
    chunk = chunk_files(path, "loss")[1]
    chunk.unlink()
    return {f"{chunk}: missing"}


def renamed(path):
    chunk = chunk_files(path, "loss")[1]
    chunk.rename(chunk.with_name("9"))
    return {f"{chunk}: missing", f"{chunk.with_name('9')}: not in the store's manifest"}


def reshaped(path):
    """The variable's metadata says 30 points where 40 were written (same byte count)."""
    meta = path / "loss" / "zarr.json"
    text = meta.read_text()
    assert '"shape": [\n    40\n  ]' in text
    meta.write_text(text.replace('"shape": [\n    40\n  ]', '"shape": [\n    30\n  ]'))
    return {f"{meta}: content changed since it was written (SHA-256 mismatch)"}


def emptied_manifest(path):
    (path / MANIFEST).write_text("")
    return {f"{path / MANIFEST}: unreadable manifest (JSONDecodeError: Expecting value: "
            "line 1 column 1 (char 0))"}


def manifest_of_nothing(path):
    everything = sorted(manifest(path)["files"])
    (path / MANIFEST).write_text(json.dumps({"files": {}, "variables": {}}))
    return {f"{path}/{name}: not in the store's manifest" for name in everything}


@pytest.mark.parametrize("damage", [added, added_manifest_in_a_variable, removed, renamed,
                                    reshaped, emptied_manifest, manifest_of_nothing],
                         ids=lambda damage: damage.__name__)
def test_a_store_that_is_not_exactly_what_was_sealed_is_named_and_refused(store, damage):
    path, _ = store
    expected = damage(path)
    assert {str(problem) for problem in integrity.check_store(path)} == expected
    with pytest.raises(DamagedOutputError) as error:
        integrity.open_store(path)
    assert_names_file_and_fix(error.value, sorted(expected)[0].split(": ")[0])


def test_snakemakes_timestamp_is_not_content(store):
    path, ds = store
    (path / ".snakemake_timestamp").write_text("")
    assert integrity.check_store(path) == []
    assert integrity.open_store(path).equals(ds)


def test_a_manifest_whose_variables_differ_from_the_store_is_refused(store):
    """Every file as written, but the manifest's variables are not the store's."""
    path, _ = store
    content = manifest(path)
    content["variables"]["loss"]["shape"] = [30]
    (path / MANIFEST).write_text(json.dumps(content))
    assert integrity.check_store(path) == []  # the files themselves are intact
    with pytest.raises(DamagedOutputError, match="variables differ from its manifest") as error:
        integrity.open_store(path)
    assert_names_file_and_fix(error.value, path)


OUTSIDE_BUG = ("check_store compares whatever path a manifest entry names, store / name, so an "
               "entry '../<file>' (or an absolute path) outside the store passes when that "
               "file matches; an entry outside the store is not reported")


@pytest.mark.xfail(strict=True, reason=OUTSIDE_BUG)
@pytest.mark.parametrize("how", ["relative", "absolute"])
def test_a_manifest_listing_a_file_outside_the_store_is_refused(store, how):
    path, _ = store
    outside = path.parent / "outside.txt"
    outside.write_text("not in the store")
    name = "../outside.txt" if how == "relative" else str(outside)
    content = manifest(path)
    content["files"][name] = integrity.digest(outside)
    (path / MANIFEST).write_text(json.dumps(content))
    problems = [str(problem) for problem in integrity.check_store(path)]
    assert len(problems) == 1 and name in problems[0], problems
    with pytest.raises(DamagedOutputError):
        integrity.open_store(path)
