"""Fine-tune mode: a recipe without a teacher section trains student.model on gold spans, nothing else."""

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from conftest import write_squad_slice
from distill.cli import app

WINDOW = {"max_seq_length": 96, "doc_stride": 32, "max_query_length": 24}


def run_finetune(tmp_path, squad_dir, student_dir, train: dict, eval_: dict | None = None) -> Path:
    """`distill run` on a teacher-less recipe over small SQuAD slices; returns the output directory."""
    train_file = write_squad_slice(squad_dir / "train-v1.1.json", tmp_path / "train.json", n_paragraphs=4)
    dev = write_squad_slice(squad_dir / "dev-v1.1.json", tmp_path / "dev.json", n_paragraphs=2)
    recipe = {
        "output_dir": str(tmp_path / "out"), "cache_dir": str(tmp_path / "cache"),
        "data": {"train": str(train_file), "eval": str(dev), "train_questions": 24, "eval_questions": 10,
                 "window": WINDOW},
        "student": {"model": str(student_dir)},
        "train": {"batch_size": 8, "precision": "fp32", "ds_config": "ds_configs/zero2_fp32.json", "log_every": 1,
                  **train},
        "eval": {"precision": "fp32", **(eval_ or {})},
    }
    path = tmp_path / "finetune.yaml"
    path.write_text(yaml.safe_dump(recipe))
    result = CliRunner().invoke(app, ["run", str(path)])
    assert result.exit_code == 0, result.output
    return tmp_path / "out"


def test_a_recipe_without_teacher_trains_and_scores_only_the_student(tmp_path, squad_dir, tiny_bert_dir):
    out = run_finetune(tmp_path, squad_dir, tiny_bert_dir,
                       {"max_steps": 3, "warmup_steps": 1, "lr_scheduler": "constant"})
    metrics = json.loads((out / "metrics.json").read_text())
    assert "student" in metrics and "teacher" not in metrics and "teacher_dir" not in metrics
    assert not (out / "teacher_predictions.json").exists() and not (tmp_path / "cache").exists()
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["kd_loss"] for r in log] == [0.0, 0.0, 0.0]
    lr = 5e-5  # the default peak: one warmup step, then constant
    assert [r["lr"] for r in log] == [lr, lr, lr]


def test_the_saved_student_has_a_model_card_whose_numbers_are_the_runs(tmp_path, squad_dir, tiny_bert_dir):
    out = run_finetune(tmp_path, squad_dir, tiny_bert_dir, {"epochs": 2})
    metrics = json.loads((out / "metrics.json").read_text())
    card = (out / "student" / "README.md").read_text()
    front = yaml.safe_load(card.split("---\n")[1])
    # local model and data paths are not hub ids: named in the text, kept out of the hub-validated metadata
    assert "base_model" not in front and "datasets" not in front and front["pipeline_tag"] == "question-answering"
    assert str(tiny_bert_dir) in card
    values = {m["type"]: m["value"] for m in front["model-index"][0]["results"][0]["metrics"]}
    assert values == {"exact_match": round(metrics["student"]["exact_match"], 2), "f1": round(metrics["student"]["f1"], 2)}
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    for epoch in (1, 2):
        losses = [r["loss"] for r in log if epoch - 1 < r["epoch"] <= epoch]
        step = max(r["step"] for r in log if epoch - 1 < r["epoch"] <= epoch)
        assert f"| {epoch} | {step} | {sum(losses) / len(losses):.4f} | n/a |" in card
    assert "| f1 | " + f"{metrics['student']['f1']:.4f} |" in card and "sha256" in card


def test_validation_loss_per_epoch_is_the_saved_models_ce_on_the_eval_windows(tmp_path, squad_dir, tiny_bert_dir):
    import torch
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    from distill.data.features import WindowConfig, prepare_features
    from distill.data.squad import load_squad, take_questions
    from distill.losses import distillation_loss, valid_positions_mask

    out = run_finetune(tmp_path, squad_dir, tiny_bert_dir, {"epochs": 2}, {"every": "epoch"})
    dev = tmp_path / "dev.json"
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    evals = [r for r in log if "eval_loss" in r]
    steps_per_epoch = max(r["step"] for r in log) // 2
    assert [(r["step"], r["epoch"]) for r in evals] == [(steps_per_epoch, 1.0), (2 * steps_per_epoch, 2.0)]

    # the last one, recomputed from the saved student: same CE, same windows, no dropout
    model = AutoModelForQuestionAnswering.from_pretrained(out / "student").eval()
    features = prepare_features(take_questions(load_squad(str(dev)), 10),
                                AutoTokenizer.from_pretrained(out / "student"), WindowConfig(**WINDOW))
    rows = features.with_format("torch", columns=["input_ids", "attention_mask", "token_type_ids", "context_mask",
                                                  "start_positions", "end_positions"])[:]
    with torch.no_grad():
        o = model(input_ids=rows["input_ids"], attention_mask=rows["attention_mask"],
                  token_type_ids=rows["token_type_ids"])
    ce = distillation_loss(o.start_logits, o.end_logits, None, None, rows["start_positions"], rows["end_positions"],
                           valid_positions_mask(rows["context_mask"]), alpha=0.0)["ce_loss"].item()
    assert evals[-1]["eval_loss"] == pytest.approx(ce, rel=1e-5)
    card = (out / "student" / "README.md").read_text()
    assert f"| 2 | {2 * steps_per_epoch} |" in card and f"{evals[-1]['eval_loss']:.4f} |" in card


@pytest.mark.parametrize("value, needle", [(0, "eval.every"), ("weekly", "eval.every")])
def test_eval_every_takes_epoch_or_a_positive_step_count(tmp_path, value, needle):
    from distill.errors import InputError
    from distill.recipe import load_recipe

    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"output_dir": "o", "data": {"train": "t.json", "eval": "e.json"},
                                    "student": {"model": "m"}, "eval": {"every": value}}))
    with pytest.raises(InputError, match=needle):
        load_recipe(path)
    path.write_text(yaml.safe_dump({"output_dir": "o", "data": {"train": "t.json", "eval": "e.json"},
                                    "student": {"model": "m"}, "eval": {"every": 50}}))
    assert load_recipe(path).eval.every == 50


def test_card_metadata_names_hub_ids_only_and_maps_the_packaged_minilm(tmp_path):
    from distill.card import render_card
    from distill.recipe import TrainConfig

    def front(base, source):
        data = {"source": source, "sha256": "0" * 64, "questions": 1, "windows": 1, "version": "2.0"}
        card = render_card(name="m", what="w", base_model=base, cfg=TrainConfig(), data=data, epochs=[],
                           scores={"exact": 50.0, "f1": 51.0}, compute="cpu-fp32",
                           eval_data={"source": source, "questions": 1, "version": "2.0"})
        return yaml.safe_load(card.split("---\n")[1])

    hub = front("minilm", "rajpurkar/squad_v2")
    assert hub["base_model"] == "sentence-transformers/all-MiniLM-L6-v2" and hub["datasets"] == ["rajpurkar/squad_v2"]
    assert hub["model-index"][0]["results"][0]["dataset"]["type"] == "squad_v2"
    local = front(str(tmp_path), str(tmp_path / "train.json"))
    assert "base_model" not in local and "datasets" not in local
