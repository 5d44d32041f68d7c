"""`distill bench` end to end on tiny models: outputs, figures, and the --baseline gate's exit codes."""

import json

import pytest
import yaml
from typer.testing import CliRunner

from distill.bench import compute_ratios, interleaved_timing, percentiles_ms, quality_em_f1, settings_from_run_dir
from distill.cli import app
from distill.errors import InputError
from distill.testing import make_tiny_bert

FAST = ["--batch-sizes", "1,2", "--max-questions", "6", "--seq-len", "128", "--doc-stride", "48",
        "--precision", "fp32", "--threads", "1", "--warmup", "1", "--min-iters", "3", "--min-seconds", "0",
        "--no-progress"]


@pytest.fixture(scope="module")
def pair(tmp_path_factory, minilm_dir):
    root = tmp_path_factory.mktemp("pair")
    return (make_tiny_bert(root / "teacher", minilm_dir, layers=2, hidden=32, seed=0),
            make_tiny_bert(root / "student", minilm_dir, layers=1, hidden=32, seed=1))


@pytest.fixture(scope="module")
def data_file(tmp_path_factory, squad_dir):
    from conftest import write_squad_slice

    return write_squad_slice(squad_dir / "dev-v1.1.json", tmp_path_factory.mktemp("data") / "dev.json")


def bench_args(pair, data_file, out, *extra):
    teacher, student = pair
    return ["bench", "--teacher", str(teacher), "--student", str(student), "--data", str(data_file),
            "--out", str(out), *FAST, *extra]


@pytest.fixture(scope="module")
def bench_run(pair, data_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    result = CliRunner().invoke(app, bench_args(pair, data_file, out))
    assert result.exit_code == 0, result.output
    return out


def test_bench_writes_json_with_every_figure(bench_run):
    bench = json.loads((bench_run / "bench.json").read_text())
    assert bench["schema"] == "distill-bench/1"
    assert {"device", "threads", "dtype", "torch", "transformers", "distill", "python"} <= set(bench["env"])
    assert bench["env"]["threads"] == 1 and bench["env"]["dtype"] == "float32"
    assert bench["settings"]["n_questions"] == 6 and len(bench["settings"]["data"]["sha256"]) == 64
    for role in ("teacher", "student"):
        m = bench["models"][role]
        assert set(m["quality"]) == {"exact_match", "f1"}  # v1.1 keys, as `distill score` prints them
        assert m["params"] > 0 and m["size_bytes"] > 0
        assert m["memory"]["peak_rss_growth_mb"] > 0
        for mode, per_s in (("model", "windows_per_s"), ("e2e", "questions_per_s")):
            for bs in ("1", "2"):
                stats = m["latency"][mode][bs]
                assert stats["iters"] >= 3 and 0 < stats["p50_ms"] <= stats["p90_ms"] <= stats["p99_ms"]
                assert stats[per_s] > 0
    assert bench["models"]["student"]["params"] < bench["models"]["teacher"]["params"]
    r = bench["ratios"]
    assert 0 < r["params"] < 1 and r["size"] > 0 and r["memory"] > 0
    assert {"model.bs1.p50_latency", "model.bs2.throughput", "e2e.bs2.p99_latency", "f1_retention"} <= set(r)


def test_bench_writes_readable_markdown_and_a_png(bench_run):
    md = (bench_run / "bench.md").read_text()
    for heading in ("## Quality", "## Size and memory", "## Latency, model only", "## Latency, end to end"):
        assert heading in md
    assert "| teacher |" in md and "| student |" in md
    assert (bench_run / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_against_equal_baseline_exits_0(pair, data_file, bench_run, tmp_path):
    # Timing ratios of a re-run move with machine load; this checks the gate's plumbing, not noise.
    result = CliRunner().invoke(app, bench_args(pair, data_file, tmp_path, "--no-memory", "--baseline",
                                                str(bench_run / "bench.json"), "--max-ratio-increase", "100"))
    assert result.exit_code == 0, result.output
    report = (tmp_path / "report.md").read_text()
    assert "**Verdict: OK**" in report and "| student F1 |" in report


def test_bench_against_better_baseline_exits_1(pair, data_file, bench_run, tmp_path):
    better = json.loads((bench_run / "bench.json").read_text())
    better["models"]["student"]["f1"] += 5.0
    baseline = tmp_path / "baseline.json"
    baseline.write_text(json.dumps(better))
    result = CliRunner().invoke(app, bench_args(pair, data_file, tmp_path / "out", "--no-memory", "--baseline",
                                                str(baseline), "--max-ratio-increase", "100"))
    assert result.exit_code == 1, result.output
    assert "REGRESSION" in (tmp_path / "out" / "report.md").read_text()


def test_bench_refuses_a_baseline_of_other_data_before_measuring(pair, data_file, bench_run, tmp_path):
    result = CliRunner().invoke(app, bench_args(pair, data_file, tmp_path / "out", "--max-questions", "5",
                                                "--baseline", str(bench_run / "bench.json")))
    assert result.exit_code == 2 and "not comparable" in result.output and "n_questions 6 vs 5" in result.output
    assert not (tmp_path / "out").exists()


def test_bench_bad_baseline_json_exits_2(pair, data_file, tmp_path):
    bad = tmp_path / "b.json"
    bad.write_text("nope")
    result = CliRunner().invoke(app, bench_args(pair, data_file, tmp_path / "out", "--baseline", str(bad)))
    assert result.exit_code == 2 and f"{bad}: malformed JSON" in result.output


@pytest.mark.parametrize("args, message", [
    (["bench", "--teacher", "t"], "missing --student, --data"),
    (["bench", "--teacher", "t", "--student", "s", "--data", "d", "--batch-sizes", "1,x"], "--batch-sizes"),
    (["bench", "--teacher", "t", "--student", "s", "--data", "d", "--precision", "int8"], "--precision"),
])
def test_bench_bad_options_exit_2(args, message):
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and message in result.output


def test_run_dir_supplies_models_data_and_tolerances(tmp_path):
    run = tmp_path / "run"
    (run / "student").mkdir(parents=True)
    (run / "student" / "config.json").write_text("{}")
    (run / "recipe.resolved.yaml").write_text(yaml.safe_dump({
        "output_dir": str(run),
        "data": {"train": "t.json", "eval": "dev.json", "eval_questions": 40,
                 "window": {"max_seq_length": 256, "doc_stride": 96, "max_query_length": 64}},
        "teacher": {"model": "minilm"}, "student": {"from_teacher_layers": [0]},
        "bench": {"max_f1_drop": 2.5},
    }))
    (run / "metrics.json").write_text(json.dumps({"teacher_dir": ".cache/distill/teachers/abc"}))
    kwargs, gate = settings_from_run_dir(run)
    assert kwargs["teacher"] == ".cache/distill/teachers/abc"  # the fine-tuned teacher, not `minilm`
    assert kwargs["student"] == str(run / "student")
    assert (kwargs["data"], kwargs["max_questions"], kwargs["seq_len"], kwargs["doc_stride"]) == ("dev.json", 40, 256, 96)
    assert gate.max_f1_drop == 2.5 and gate.max_ratio_increase == 0.15

    (run / "metrics.json").unlink()
    assert settings_from_run_dir(run)[0]["teacher"] == "minilm"


def test_run_dir_without_recipe_is_bad_input(tmp_path):
    with pytest.raises(InputError, match="not a distill run directory"):
        settings_from_run_dir(tmp_path)


def test_interleaved_timing_alternates_until_both_have_enough_samples():
    calls = []
    samples = interleaved_timing({"teacher": lambda: calls.append("t"), "student": lambda: calls.append("s")},
                                 warmup=1, min_iters=4, min_seconds=0)
    assert calls == ["t", "s"] + ["t", "s"] * 4
    assert {k: len(v) for k, v in samples.items()} == {"teacher": 4, "student": 4}


def test_percentiles_and_quality_keys():
    stats = percentiles_ms([0.001 * i for i in range(1, 101)])
    assert stats["p50_ms"] == pytest.approx(50.5) and stats["p99_ms"] == pytest.approx(99.01) and stats["iters"] == 100
    assert quality_em_f1({"exact_match": 1.0, "f1": 2.0}) == (1.0, 2.0)
    assert quality_em_f1({"exact": 3.0, "f1": 4.0, "total": 9}) == (3.0, 4.0)


def test_ratios_are_none_when_the_teacher_figure_is_zero():
    model = {"em": 0.0, "f1": 0.0, "params": 10, "size_bytes": None, "memory": {}, "latency": {"model": {}, "e2e": {}}}
    ratios = compute_ratios({"models": {"teacher": model, "student": dict(model, params=5)}})
    assert ratios["f1_retention"] is None and ratios["size"] is None and ratios["params"] == 0.5


def test_end_to_end_windowing_equals_prepare_features(dev_v2_slice, minilm_tokenizer):
    from distill.data.features import WindowConfig, prepare_features, window_questions
    from distill.data.squad import load_squad, take_questions

    examples = take_questions(load_squad(dev_v2_slice), 8)
    window = WindowConfig(max_seq_length=128, doc_stride=64, max_query_length=32)
    cached = prepare_features(examples, minilm_tokenizer, window).remove_columns("feature_index")
    assert window_questions(examples.to_dict(), minilm_tokenizer, window).to_dict() == cached.to_dict()


def test_memory_probe_repeats_and_differs_by_the_weights(tmp_path, minilm_dir):
    import torch

    from distill.bench.probe import finish_probe, start_probe

    # same width, so the same activations: only the 3 extra layers' weights differ (the embedding matrix is
    # memory-mapped and mostly untouched, so it would not show)
    small = make_tiny_bert(tmp_path / "small", minilm_dir, layers=1, hidden=512)
    big = make_tiny_bert(tmp_path / "big", minilm_dir, layers=4, hidden=512)
    inputs = tmp_path / "inputs.pt"
    torch.save({"input_ids": torch.randint(1000, 20000, (2, 64)), "attention_mask": torch.ones(2, 64, dtype=torch.long),
                "token_type_ids": torch.zeros(2, 64, dtype=torch.long)}, inputs)

    def growth(model_dir):
        proc = start_probe(str(model_dir), inputs, precision="fp32", device="cpu", threads=1)
        return finish_probe(proc, "probe")["peak_rss_growth_mb"]

    def weights_mb(model_dir):
        from safetensors.torch import load_file

        return sum(t.numel() * t.element_size() for t in load_file(model_dir / "model.safetensors").values()) / 2**20

    big_mb, again_mb, small_mb = growth(big), growth(big), growth(small)
    assert abs(big_mb - again_mb) < 1.0  # allocator noise: 0.51 MB seen once; the weights below differ by ~24 MB
    extra = weights_mb(big) - weights_mb(small)  # ~24 MB
    assert extra * 0.9 < big_mb - small_mb < extra * 1.3
