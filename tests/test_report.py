"""Regression gate on hand-made bench.json files: quality by absolute drop, speed/memory by ratios only."""

import copy
import json

import pytest
from typer.testing import CliRunner

from distill.cli import app
from distill.errors import InputError
from distill.recipe import BenchGate
from distill.report import IMPROVED, INFO, OK, REGRESSION, compare, compare_files, load_bench

GATE = BenchGate(max_f1_drop=1.0, max_em_drop=1.0, max_ratio_increase=0.15)


def _latency(p50: float, per_s_key: str, bs: int) -> dict:
    return {"p50_ms": p50, "p90_ms": p50 * 1.2, "p99_ms": p50 * 1.5, "mean_ms": p50, "iters": 20,
            per_s_key: bs / (p50 / 1000)}


def _model(em, f1, params, ms, memory_mb) -> dict:
    return {
        "source": "m", "params": params, "size_bytes": params * 4, "quality": {"exact_match": em, "f1": f1},
        "em": em, "f1": f1, "memory": {"peak_rss_growth_mb": memory_mb},
        "latency": {"model": {str(bs): _latency(ms * bs, "windows_per_s", bs) for bs in (1, 8)},
                    "e2e": {str(bs): _latency(ms * bs * 2, "questions_per_s", bs) for bs in (1, 8)}},
    }


def make_bench() -> dict:
    return {
        "schema": "distill-bench/1",
        "settings": {"data": {"source": "dev.json", "sha256": "ab" * 32}, "n_questions": 50, "version": "1.1",
                     "seq_len": 384, "doc_stride": 128, "max_query_length": 64, "batch_sizes": [1, 8],
                     "precision": "fp32"},
        "env": {"device": "cpu", "threads": 2, "dtype": "float32", "torch": "2.13.0", "transformers": "5.23.0"},
        "models": {"teacher": _model(80.0, 88.0, 100_000_000, 10.0, 400.0),
                   "student": _model(75.0, 84.0, 50_000_000, 5.0, 200.0)},
    }


def scale_student_latency(bench: dict, factor: float) -> dict:
    for mode in ("model", "e2e"):
        for stats in bench["models"]["student"]["latency"][mode].values():
            for key in ("p50_ms", "p90_ms", "p99_ms", "mean_ms"):
                stats[key] *= factor
            per_s = "windows_per_s" if mode == "model" else "questions_per_s"
            stats[per_s] /= factor
    return bench


def verdicts(comparison) -> dict:
    return {row.figure: row.verdict for row in comparison.rows}


def test_identical_benches_have_no_regression():
    c = compare(make_bench(), make_bench(), GATE)
    assert not c.regressed
    assert all(r.verdict in (OK, INFO) for r in c.rows)
    assert "Verdict: OK" in c.verdict_line()


def test_baseline_f1_better_beyond_tolerance_is_a_regression():
    old, new = make_bench(), make_bench()
    old["models"]["student"]["f1"] = 86.0  # new is 2 points lower, tolerance 1
    c = compare(old, new, GATE)
    assert c.regressed
    assert [r.figure for r in c.regressions] == ["student F1"]


def test_f1_drop_within_tolerance_passes():
    old, new = make_bench(), make_bench()
    old["models"]["student"]["f1"] = 84.9
    assert not compare(old, new, GATE).regressed


def test_teacher_quality_drop_is_judged_too():
    old, new = make_bench(), make_bench()
    new["models"]["teacher"]["em"] = 70.0
    assert [r.figure for r in compare(old, new, GATE).regressions] == ["teacher EM"]


def test_slower_student_beyond_margin_is_a_throughput_ratio_regression():
    c = compare(make_bench(), scale_student_latency(make_bench(), 1.3), GATE)
    v = verdicts(c)
    assert v["model-only throughput ratio, batch 1"] == REGRESSION
    assert v["end-to-end throughput ratio, batch 8"] == REGRESSION
    # Percentile ratios are shown, never judged: they jump between modes of bimodal timings.
    assert v["model-only p50 latency ratio, batch 1"] == INFO
    assert v["model-only p99 latency ratio, batch 1"] == INFO


def test_slower_student_within_margin_passes():
    c = compare(make_bench(), scale_student_latency(make_bench(), 1.1), GATE)
    assert not c.regressed


def test_faster_student_is_reported_as_improved_not_regressed():
    c = compare(make_bench(), scale_student_latency(make_bench(), 0.5), GATE)
    assert not c.regressed
    assert verdicts(c)["model-only throughput ratio, batch 8"] == IMPROVED


def test_absolute_time_change_alone_gets_no_verdict():
    new = scale_student_latency(make_bench(), 3.0)
    for mode in ("model", "e2e"):  # the teacher slows down by the same factor: a slower machine
        for stats in new["models"]["teacher"]["latency"][mode].values():
            for key in ("p50_ms", "p90_ms", "p99_ms", "mean_ms"):
                stats[key] *= 3.0
            per_s = "windows_per_s" if mode == "model" else "questions_per_s"
            stats[per_s] /= 3.0
    c = compare(make_bench(), new, GATE)
    assert not c.regressed
    row = next(r for r in c.rows if r.figure == "student model-only p50 ms, batch 1")
    assert row.verdict == INFO and row.delta == "+200.0%"


def test_memory_ratio_growth_beyond_margin_is_a_regression():
    new = make_bench()
    new["models"]["student"]["memory"]["peak_rss_growth_mb"] = 300.0
    assert [r.figure for r in compare(make_bench(), new, GATE).regressions] == ["peak-memory ratio"]


def test_batch_size_only_in_one_file_is_shown_but_not_compared():
    new = make_bench()
    for role in ("teacher", "student"):
        for mode in ("model", "e2e"):
            del new["models"][role]["latency"][mode]["8"]
    c = compare(make_bench(), new, GATE)
    assert not c.regressed
    assert verdicts(c)["model-only throughput ratio, batch 8"] == "not compared"


def test_report_markdown_has_table_deltas_and_one_verdict_line(tmp_path):
    old, new = tmp_path / "old.json", tmp_path / "new.json"
    base = make_bench()
    base["models"]["student"]["f1"] = 90.0
    old.write_text(json.dumps(base))
    new.write_text(json.dumps(make_bench()))
    comparison, text = compare_files(old, new, GATE)
    assert "| figure | old | new | delta | verdict |" in text
    assert "| student F1 | 90 | 84 | -6.00 | **REGRESSION** |" in text
    assert text.count("**Verdict: REGRESSION**") == 1
    assert str(old) in text and str(new) in text


def test_benches_of_different_data_are_refused_naming_the_file(tmp_path):
    old, new = tmp_path / "old.json", tmp_path / "new.json"
    other = make_bench()
    other["settings"]["n_questions"] = 60
    old.write_text(json.dumps(make_bench()))
    new.write_text(json.dumps(other))
    with pytest.raises(InputError, match=r"new\.json: not comparable with baseline .*old\.json: n_questions 50 vs 60"):
        compare_files(old, new, GATE)


def test_data_at_another_path_with_same_bytes_is_comparable(tmp_path):
    moved = make_bench()
    moved["settings"]["data"]["source"] = "/elsewhere/dev.json"
    old, new = tmp_path / "old.json", tmp_path / "new.json"
    old.write_text(json.dumps(make_bench()))
    new.write_text(json.dumps(moved))
    comparison, _ = compare_files(old, new, GATE)
    assert not comparison.regressed


@pytest.mark.parametrize("content, message", [
    ("{not json", "malformed JSON at line 1"),
    ('{"schema": "something-else"}', "not a distill bench.json"),
    ("[1, 2]", "not a distill bench.json"),
])
def test_load_bench_rejects_bad_files_naming_them(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(InputError, match=message) as err:
        load_bench(path)
    assert str(err.value).startswith(str(path))


def test_load_bench_names_the_missing_key(tmp_path):
    bench = make_bench()
    del bench["models"]["student"]["f1"]
    path = tmp_path / "b.json"
    path.write_text(json.dumps(bench))
    with pytest.raises(InputError, match="missing key models.student.f1"):
        load_bench(path)


# ---------------------------------------------------------------- CLI


@pytest.fixture
def files(tmp_path):
    def write(name, bench):
        path = tmp_path / name
        path.write_text(json.dumps(bench))
        return path

    return write


def test_cli_report_equal_files_exit_0(files, tmp_path):
    old, new = files("old.json", make_bench()), files("new.json", make_bench())
    result = CliRunner().invoke(app, ["report", str(old), str(new), "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert "Verdict: OK" in (tmp_path / "r" / "report.md").read_text()


def test_cli_report_regression_exit_1_and_prints_report(files):
    better = make_bench()
    better["models"]["student"]["f1"] = 90.0
    result = CliRunner().invoke(app, ["report", str(files("old.json", better)), str(files("new.json", make_bench()))])
    assert result.exit_code == 1
    assert "| student F1 |" in result.output and "**Verdict: REGRESSION**" in result.output


def test_cli_report_tolerance_options_override_defaults(files, tmp_path):
    better = make_bench()
    better["models"]["student"]["f1"] = 90.0
    md = tmp_path / "summary.md"
    result = CliRunner().invoke(app, ["report", str(files("old.json", better)), str(files("new.json", make_bench())),
                                      "--max-f1-drop", "10", "--md", str(md)])
    assert result.exit_code == 0, result.output
    assert "F1 drop <= 10.0" in md.read_text()


def test_cli_report_bad_json_exit_2_with_one_line_error(files, tmp_path):
    bad = tmp_path / "broken.json"
    bad.write_text('{"schema": ')
    result = CliRunner().invoke(app, ["report", str(files("old.json", make_bench())), str(bad)])
    assert result.exit_code == 2
    assert result.output.strip().startswith(f"error: {bad}: malformed JSON")
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output


def test_cli_report_missing_file_exit_2(files, tmp_path):
    result = CliRunner().invoke(app, ["report", str(files("old.json", make_bench())), str(tmp_path / "nope.json")])
    assert result.exit_code == 2 and "nope.json: bench JSON not found" in result.output


def test_cli_report_mismatched_benches_exit_2(files):
    other = copy.deepcopy(make_bench())
    other["settings"]["precision"] = "bf16"
    result = CliRunner().invoke(app, ["report", str(files("old.json", make_bench())), str(files("new.json", other))])
    assert result.exit_code == 2 and "not comparable" in result.output
