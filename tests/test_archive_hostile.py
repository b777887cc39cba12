"""`macsql runs unpack` on archives from elsewhere: hostile run names, decompression bombs and malformed
heads are refused in one line, and nothing is written, inside --out or outside it."""

import gzip
import hashlib
import json
import os
import resource
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from macsql.cli import main
from tests.conftest import make_db

SQL = """
CREATE TABLE pets (pet_id INTEGER PRIMARY KEY, name TEXT, kind TEXT);
INSERT INTO pets VALUES (1, 'Rex', 'dog'), (2, 'Tom', 'cat'), (3, 'Kit', 'cat');
"""
QUESTIONS = [("How many cats are there?", "SELECT COUNT(*) FROM pets WHERE kind = 'cat'"),
             ("Name every dog.", "SELECT name FROM pets WHERE kind = 'dog'")]


@pytest.fixture
def bench(tmp_path):
    """A Spider-format data file over a tiny database, and its sha256 (what a run records)."""
    root = tmp_path / "bench"
    (root / "database" / "pets").mkdir(parents=True)
    make_db(root / "database" / "pets" / "pets.sqlite", SQL)
    data = root / "dev.json"
    data.write_text(json.dumps([{"db_id": "pets", "question": q, "query": s} for q, s in QUESTIONS]))
    return data, hashlib.sha256(data.read_bytes()).hexdigest()


def head(runs):
    return {"archive": "macsql-run", "version": 1, "runs": runs}


def config(sha):
    return {"data_sha256": sha, "format": "spider", "variant": "full"}


def write(path, *objects, tail=b""):
    """A gzip JSONL archive of `objects`, then `tail` (raw gzip members appended: still one valid file)."""
    path.write_bytes(gzip.compress(b"".join(json.dumps(o).encode() + b"\n" for o in objects)) + tail)
    return path


def tree(root):
    return sorted(str(p.relative_to(root)) for p in Path(root).rglob("*"))


def unpack(archive, data, out):
    return CliRunner().invoke(main, ["runs", "unpack", str(archive), "--data", str(data), "--out", str(out)])


def assert_refused(r, *words):
    assert r.exit_code == 1, r.output
    assert isinstance(r.exception, SystemExit)  # handled, not a traceback
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), r.output
    for word in words:
        assert word in lines[0], r.output


def test_a_well_formed_archive_still_unpacks(bench, tmp_path):
    data, sha = bench
    archive = write(tmp_path / "ok.jsonl.gz", head({"full": config(sha), "no-selector": config(sha)}),
                    {"run": "full", "question_id": "0", "sql": "SELECT 2"},
                    {"run": "no-selector", "question_id": "1", "sql": "SELECT name FROM pets"})
    r = unpack(archive, data, tmp_path / "out")
    assert r.exit_code == 0, r.output
    assert "unpacked 2 answers (full: 1, no-selector: 1)" in r.output
    rec = json.loads((tmp_path / "out" / "full" / "predictions.jsonl").read_text())
    assert rec["question"] == "How many cats are there?" and rec["sql"] == "SELECT 2"


@pytest.mark.parametrize("name", [
    "../escape", "../../x", "./a/../../b", "a/../../c", "sub/dir", "..", "", "a\\b", "x\x00y", "tab\there",
    "n" * 300, "ABSOLUTE",
])
def test_hostile_run_names_write_nothing_anywhere(bench, tmp_path, name):
    data, sha = bench
    if name == "ABSOLUTE":
        name = str(tmp_path / "abs" / "run")
    sandbox = tmp_path / "sandbox"
    out = sandbox / "a" / "out"
    out.mkdir(parents=True)
    # a valid run beside the hostile one: it must not be written either (the archive is refused whole)
    archive = write(tmp_path / "evil.jsonl.gz", head({"full": config(sha), name: config(sha)}),
                    {"run": "full", "question_id": "0", "sql": "SELECT 1"},
                    {"run": name, "question_id": "0", "sql": "SELECT 1"})
    before = tree(tmp_path)
    r = unpack(archive, data, out)
    assert_refused(r, "is not a plain folder name", "nothing was written")
    assert tree(tmp_path) == before


def test_a_run_folder_that_is_a_symlink_out_of_out_is_refused(bench, tmp_path):
    data, sha = bench
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / "full").symlink_to(elsewhere, target_is_directory=True)
    archive = write(tmp_path / "a.jsonl.gz", head({"full": config(sha)}),
                    {"run": "full", "question_id": "0", "sql": "SELECT 1"})
    before = tree(tmp_path)
    r = unpack(archive, data, out)
    assert_refused(r, "outside", "nothing was written")
    assert tree(tmp_path) == before and not any(elsewhere.iterdir())


def test_a_decompression_bomb_is_refused_without_inflating_it(bench, tmp_path):
    data, sha = bench
    # 16 MiB of zeros compress to ~16 KB; 64 gzip members of it are one valid file of 1 GiB uncompressed,
    # one line with no newline, after a valid head
    member = gzip.compress(b"0" * (16 << 20))
    archive = write(tmp_path / "bomb.jsonl.gz", head({"full": config(sha)}), tail=member * 64)
    assert archive.stat().st_size < 2 << 20
    before, peak = tree(tmp_path), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    r = unpack(archive, data, tmp_path / "out")
    assert_refused(r, "holds a line longer than 16 MiB uncompressed", "bomb.jsonl.gz")
    assert tree(tmp_path) == before
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak
    if sys.platform == "linux":  # ru_maxrss is KiB on Linux: reading stopped near the 16 MiB line cap
        assert grown_kib < 256 * 1024


def test_many_lines_past_the_total_cap_are_refused(bench, tmp_path, monkeypatch):
    data, sha = bench
    # the real cap is 512 MiB; a smaller one keeps the test fast, the reading code is the same
    monkeypatch.setattr("macsql.evaluate.archive.MAX_ARCHIVE_BYTES", 4 << 20)
    blank_lines = gzip.compress((b" " * 1023 + b"\n") * 1024)  # 1 MiB of blank lines
    archive = write(tmp_path / "wide.jsonl.gz", head({"full": config(sha)}), tail=blank_lines * 8)
    before = tree(tmp_path)
    r = unpack(archive, data, tmp_path / "out")
    assert_refused(r, "is over 4 MiB uncompressed")
    assert tree(tmp_path) == before


@pytest.mark.parametrize("raw, words", [
    (b"not json at all\n", ["is not a run archive"]),
    (b"[1, 2]\n", ["is not a run archive"]),
    (b"\xff\xfe\x00garbage\n", ["is not a run archive"]),
    (b"[" * 200_000 + b"\n", ["is not a run archive"]),  # deeper than the JSON parser goes
    (json.dumps({"archive": "macsql-run", "version": 1}).encode() + b"\n", ["the archive is damaged"]),
    (json.dumps(head([])).encode() + b"\n", ["the archive is damaged"]),
    (json.dumps(head({"full": 5})).encode() + b"\n", ["the archive is damaged"]),
    (json.dumps(head({"full": {"data_sha256": 5}})).encode() + b"\n", ["data_sha256 that is not text"]),
    (json.dumps(head({"full": {"data_sha256": "x", "format": ["spider"]}})).encode() + b"\n",
     ["format that is not text"]),
    (json.dumps({"archive": "macsql-run", "version": "9" * 5000, "runs": {}}).encode() + b"\n",
     ["archive; this macsql reads version 1"]),
])
def test_malformed_heads_are_one_line(bench, tmp_path, raw, words):
    data, _ = bench
    archive = tmp_path / "bad.jsonl.gz"
    archive.write_bytes(gzip.compress(raw))
    before = tree(tmp_path)
    r = unpack(archive, data, tmp_path / "out")
    assert_refused(r, *words)
    assert len(r.output) < 600 and tree(tmp_path) == before


@pytest.mark.parametrize("record, words", [
    (5, ["a record is int, not an object"]),
    ({"run": ["full"], "question_id": "0"}, ["a record of an unknown run"]),
    ({"run": "other", "question_id": "0"}, ["a record of an unknown run 'other'"]),
    ({"run": "full", "question_id": "99"}, ["question '99' of run 'full' is not in"]),
])
def test_malformed_records_are_one_line_and_write_nothing(bench, tmp_path, record, words):
    data, sha = bench
    archive = write(tmp_path / "r.jsonl.gz", head({"full": config(sha)}),
                    {"run": "full", "question_id": "0", "sql": "SELECT 1"}, record)
    before = tree(tmp_path)
    r = unpack(archive, data, tmp_path / "out")
    assert_refused(r, *words)
    assert tree(tmp_path) == before


def test_files_that_are_not_gzip_or_are_cut_short(bench, tmp_path):
    data, sha = bench
    plain = tmp_path / "plain.jsonl.gz"
    plain.write_text(json.dumps(head({"full": config(sha)})))
    full = gzip.compress(json.dumps(head({"full": config(sha)})).encode() + b"\n" + b"{}\n" * 1000)
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(full[: len(full) // 2])
    for archive in (plain, cut, tmp_path / "missing.jsonl.gz"):
        before = tree(tmp_path)
        r = unpack(archive, data, tmp_path / "out")
        assert_refused(r, archive.name)
        assert tree(tmp_path) == before
    assert os.path.exists(plain) and not (tmp_path / "out").exists()
