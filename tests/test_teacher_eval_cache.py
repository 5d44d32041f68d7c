"""The teacher's eval score is computed once per weights, eval windows and settings, then read back."""

import json

import yaml
from typer.testing import CliRunner

from conftest import write_squad_slice
from distill.cli import app

WINDOW = {"max_seq_length": 96, "doc_stride": 32, "max_query_length": 24}


def _recipe(tmp_path, squad_dir, tiny_bert_dir):
    train = write_squad_slice(squad_dir / "train-v1.1.json", tmp_path / "train.json", n_paragraphs=4)
    dev = write_squad_slice(squad_dir / "dev-v1.1.json", tmp_path / "dev.json", n_paragraphs=2)
    recipe = {
        "output_dir": str(tmp_path / "out"), "cache_dir": str(tmp_path / "cache"),
        "data": {"train": str(train), "eval": str(dev), "train_questions": 16, "eval_questions": 10, "window": WINDOW},
        "teacher": {"model": str(tiny_bert_dir), "precision": "fp32", "logits_dtype": "fp32"},
        "student": {"from_teacher_layers": [0]},
        "train": {"max_steps": 2, "batch_size": 8, "precision": "fp32", "ds_config": "ds_configs/zero2_fp32.json"},
        "eval": {"precision": "fp32"},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_runs_that_change_only_the_student_read_the_teachers_score_back(squad_dir, tiny_bert_dir, tmp_path,
                                                                         monkeypatch):
    import distill.predict

    scored = []
    real = distill.predict.evaluate
    monkeypatch.setattr(distill.predict, "evaluate", lambda *a, **k: scored.append(k["desc"]) or real(*a, **k))
    recipe = str(_recipe(tmp_path, squad_dir, tiny_bert_dir))
    runs = {"out": [], "out_seed": ["--set", "train.seed=7"], "out_nbest": ["--set", "eval.n_best_size=5"]}
    metrics, predictions = {}, {}
    for name, extra in runs.items():
        result = CliRunner().invoke(app, ["run", recipe, "--set", f"output_dir={tmp_path / name}", *extra])
        assert result.exit_code == 0, result.output
        metrics[name] = json.loads((tmp_path / name / "metrics.json").read_text())
        predictions[name] = (tmp_path / name / "teacher_predictions.json").read_text()

    assert scored.count("eval teacher") == 2  # the first run and the one with other eval settings
    assert [m["teacher_eval_reused"] for m in metrics.values()] == [False, True, False]
    assert metrics["out_seed"]["teacher"] == metrics["out"]["teacher"]
    assert predictions["out_seed"] == predictions["out"]
    assert len(list((tmp_path / "cache" / "teacher_eval").glob("*/complete.json"))) == 2


def test_an_altered_cached_teacher_score_is_refused_naming_it(squad_dir, tiny_bert_dir, tmp_path):
    recipe = str(_recipe(tmp_path, squad_dir, tiny_bert_dir))
    assert CliRunner().invoke(app, ["run", recipe]).exit_code == 0
    [cached] = (tmp_path / "cache" / "teacher_eval").glob("*/score.json")
    cached.write_text(cached.read_text().replace('"f1"', '"F1"'))
    result = CliRunner().invoke(app, ["run", recipe, "--set", f"output_dir={tmp_path / 'again'}"])
    assert result.exit_code != 0
    assert "teacher eval cache" in result.output and "score.json" in result.output
    assert "Traceback" not in result.output
