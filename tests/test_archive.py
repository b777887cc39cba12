"""`macsql runs pack|unpack`: an eval run leaves the machine without the benchmark's text and comes back whole."""

import gzip
import json
import shutil

from tests.test_score_cli import QUESTIONS, _scripted_pipeline, run, spider_set  # noqa: F401 - fixture


def _lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_pack_drops_benchmark_text_and_unpack_restores_the_run(spider_set, tmp_path, monkeypatch):  # noqa: F811
    calls = []
    monkeypatch.setattr("macsql.cli.options.build_pipeline", _scripted_pipeline(calls))
    out = tmp_path / "run"
    args = ["eval", "--data", spider_set, "--out", out, "--ablations", "--variants", "full,baseline", "-q"]
    assert run(*args).exit_code == 0
    archive = tmp_path / "carry" / "run.jsonl.gz"
    r = run("runs", "pack", out, "--to", archive)
    assert r.exit_code == 0 and "packed 8 answers (baseline: 4, full: 4)" in r.output, r.output
    text = gzip.decompress(archive.read_bytes()).decode()
    for question, _ in QUESTIONS:  # the questions do not travel
        assert question not in text
    assert "country = 'Spain'" not in text  # nor the gold SQL (the model's wrong answer to it does)
    assert run("runs", "pack", out, "--to", tmp_path / "again.jsonl.gz").exit_code == 0
    assert (tmp_path / "again.jsonl.gz").read_bytes() == archive.read_bytes()  # same answers, same bytes

    back = tmp_path / "back"
    r = run("runs", "unpack", archive, "--data", spider_set, "--out", back)
    assert r.exit_code == 0 and "unpacked 8 answers" in r.output, r.output
    for variant in ("full", "baseline"):
        key = lambda rec: rec["question_id"]  # noqa: E731
        assert sorted(_lines(back / variant / "predictions.jsonl"), key=key) == sorted(
            _lines(out / variant / "predictions.jsonl"), key=key)
    # the same eval over the unpacked folder finds every answer in: no model is loaded, the figures are rebuilt
    n_calls = len(calls)
    r = run(*[back if a == out else a for a in args])
    assert r.exit_code == 0 and len(calls) == n_calls, r.output
    assert "full: n=4  EX(Spider) 75.0  EX(BIRD) 75.0" in r.output

    # a half-finished run resumes: only the questions the archive lacks are asked
    half = tmp_path / "half"
    shutil.copytree(out, half)
    preds = half / "full" / "predictions.jsonl"
    preds.write_text("".join(json.dumps(rec) + "\n" for rec in _lines(preds)[:2]))
    assert run("runs", "pack", half, "--to", tmp_path / "half.jsonl.gz").exit_code == 0
    resumed = tmp_path / "resumed"
    assert run("runs", "unpack", tmp_path / "half.jsonl.gz", "--data", spider_set, "--out", resumed).exit_code == 0
    calls.clear()
    r = run(*[resumed if a == out else a for a in args])
    assert r.exit_code == 0 and calls.count("build") == 1, r.output
    assert len(_lines(resumed / "full" / "predictions.jsonl")) == 4


def test_unpack_refuses_another_data_file_an_existing_run_and_non_archives(spider_set, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setattr("macsql.cli.options.build_pipeline", _scripted_pipeline([]))
    out = tmp_path / "run"
    assert run("eval", "--data", spider_set, "--out", out, "--baseline", "-q").exit_code == 0
    archive = tmp_path / "a.jsonl.gz"
    assert run("runs", "pack", out, "--to", archive).output.startswith("packed 4 answers (.: 4)")

    other = tmp_path / "other.json"
    other.write_text(json.dumps(json.loads(spider_set.read_text())[:3]))
    r = run("runs", "unpack", archive, "--data", other, "--out", tmp_path / "x")
    assert r.exit_code == 1 and "answered a different data file" in r.output and "pass the file it was made from" in r.output

    r = run("runs", "unpack", archive, "--data", spider_set, "--out", out)
    assert r.exit_code == 1 and r.output.startswith("Error: ") and "pass --overwrite" in r.output
    assert run("runs", "unpack", archive, "--data", spider_set, "--out", out, "--overwrite").exit_code == 0

    r = run("runs", "unpack", spider_set, "--data", spider_set, "--out", tmp_path / "y")
    assert r.exit_code == 1 and "is not a run archive from `macsql runs pack`" in r.output
    (tmp_path / "empty").mkdir()
    r = run("runs", "pack", tmp_path / "empty", "--to", tmp_path / "z.jsonl.gz")
    assert r.exit_code == 1 and "no predictions.jsonl in" in r.output
