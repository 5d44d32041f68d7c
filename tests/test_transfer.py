"""Transfer set (data.transfer): questions only the teacher labels, trained on the KD term alone."""

import json

import pytest
import torch
import yaml
from typer.testing import CliRunner

from conftest import write_squad_slice
from distill.cli import app
from distill.data.features import WindowConfig, join_transfer, prepare_features
from distill.data.squad import drop_seen, load_squad
from distill.losses import distillation_loss, kd_loss, span_ce_loss, valid_positions_mask

WINDOW = {"max_seq_length": 96, "doc_stride": 32, "max_query_length": 24}


def test_transfer_rows_train_kd_only_and_ce_keeps_its_scale():
    torch.manual_seed(0)
    mask = valid_positions_mask(torch.tensor([[0, 0, 1, 1, 1, 1, 1, 1, 0, 0]] * 4))
    ss, se, ts, te = (torch.randn(4, 10) for _ in range(4))
    sp, ep = torch.tensor([3, 0, 5, 2]), torch.tensor([4, 0, 6, 2])
    labelled = torch.tensor([1, 0, 1, 0])
    out = distillation_loss(ss, se, ts, te, sp, ep, mask, temperature=2.0, alpha=0.5, labelled=labelled)
    rows = labelled.bool()
    ce = (span_ce_loss(ss[rows], sp[rows], mask[rows]) + span_ce_loss(se[rows], ep[rows], mask[rows])) / 2
    kd = (kd_loss(ss, ts, mask, 2.0) + kd_loss(se, te, mask, 2.0)) / 2
    assert out["ce_loss"].item() == pytest.approx(ce.item(), rel=1e-6)
    assert out["kd_loss"].item() == pytest.approx(kd.item(), rel=1e-6)
    # the gold positions of transfer rows (0 here: no answer) never reach the loss
    moved = distillation_loss(ss, se, ts, te, torch.tensor([3, 7, 5, 9]), torch.tensor([4, 8, 6, 9]), mask,
                              alpha=0.5, labelled=labelled)
    assert moved["loss"].item() == out["loss"].item()
    only_transfer = distillation_loss(ss, se, ts, te, sp, ep, mask, alpha=0.5, labelled=torch.zeros(4))
    assert only_transfer["ce_loss"].item() == 0.0
    assert only_transfer["loss"].item() == pytest.approx(0.5 * kd.item(), rel=1e-6)
    every = distillation_loss(ss, se, ts, te, sp, ep, mask, alpha=0.5, labelled=torch.ones(4))
    assert every["loss"].item() == distillation_loss(ss, se, ts, te, sp, ep, mask, alpha=0.5)["loss"].item()


def test_unlabelled_rows_need_only_question_and_context(tmp_path):
    path = tmp_path / "transfer.jsonl"
    path.write_text('{"question": "Who?", "context": "Ann met Bob."}\n'
                    '{"id": "x", "question": "Where?", "context": "In Paris.", "answers": {"text": ["wrong"], '
                    '"answer_start": [40]}}\n')
    ds = load_squad(path, cache_dir=tmp_path / "hf", labelled=False)
    assert list(ds["id"]) == ["line1", "x"] and list(ds["question"]) == ["Who?", "Where?"]
    assert list(ds["answers"]) == [{"text": [], "answer_start": []}] * 2 and list(ds["is_impossible"]) == [False] * 2


def test_transfer_drops_train_and_eval_questions_and_eval_paragraphs(squad_dir, tmp_path):
    ds = load_squad(write_squad_slice(squad_dir / "dev-v1.1.json", tmp_path / "d.json", n_paragraphs=3),
                    cache_dir=tmp_path / "hf", labelled=False)
    first, last = ds[0], ds[len(ds) - 1]
    kept = drop_seen(ds, {first["id"]}, {last["context"]})
    assert first["id"] not in kept["id"] and last["context"] not in kept["context"]
    assert len(kept) == len(ds) - 1 - sum(c == last["context"] for c in ds["context"])


def _recipe(tmp_path, squad_dir, tiny_bert_dir, **data):
    train = write_squad_slice(squad_dir / "train-v1.1.json", tmp_path / "train.json", n_paragraphs=8)
    dev = write_squad_slice(squad_dir / "dev-v1.1.json", tmp_path / "dev.json", n_paragraphs=2)
    recipe = {
        "output_dir": str(tmp_path / "out"), "cache_dir": str(tmp_path / "cache"),
        "data": {"train": str(train), "eval": str(dev), "train_questions": 20, "eval_questions": 10,
                 "window": WINDOW, "transfer": str(train), **data},
        "teacher": {"model": str(tiny_bert_dir), "precision": "fp32", "logits_dtype": "fp32"},
        "student": {"from_teacher_layers": [0]},
        "train": {"max_steps": 4, "batch_size": 8, "precision": "fp32", "ds_config": "ds_configs/zero2_fp32.json",
                  "log_every": 1},
        "eval": {"precision": "fp32", "teacher": False},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_a_run_with_a_transfer_set_labels_it_with_the_teacher_and_caches_each_part(squad_dir, tiny_bert_dir,
                                                                                    tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["run", str(_recipe(tmp_path, squad_dir, tiny_bert_dir))])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    questions = sum(len(p["qas"]) for a in json.loads((tmp_path / "train.json").read_text())["data"]
                    for p in a["paragraphs"])
    assert metrics["n_transfer_questions"] == questions - 20  # the 20 labelled ones are not transferred
    assert metrics["n_transfer_features"] >= metrics["n_transfer_questions"]
    caches = sorted(p.parent.name for p in (tmp_path / "cache" / "teacher_logits").glob("*/complete.json"))
    assert len(caches) == 2  # the labelled windows' and the transfer windows'
    card = (tmp_path / "out" / "student" / "README.md").read_text()
    assert f"{metrics['n_transfer_questions']} questions, {metrics['n_transfer_features']} windows." in card

    # a smaller transfer set reuses the labelled part's logits and adds only its own
    again = runner.invoke(app, ["run", str(_recipe(tmp_path, squad_dir, tiny_bert_dir, transfer_questions=5)),
                                "--set", f"output_dir={tmp_path / 'out5'}"])
    assert again.exit_code == 0, again.output
    after = sorted(p.parent.name for p in (tmp_path / "cache" / "teacher_logits").glob("*/complete.json"))
    assert len(after) == 3 and set(caches) < set(after)
    assert json.loads((tmp_path / "out5" / "metrics.json").read_text())["n_transfer_questions"] == 5


def test_a_teacher_fine_tuned_on_more_questions_than_the_student_labels_the_rest_as_transfer(
        squad_dir, tiny_bert_dir, tmp_path):
    finetune = {"max_steps": 2, "batch_size": 8, "precision": "fp32", "ds_config": "ds_configs/zero2_fp32.json",
                "train_questions": 30}
    path = _recipe(tmp_path, squad_dir, tiny_bert_dir, train_questions=12, transfer_questions=20)
    raw = yaml.safe_load(path.read_text())
    raw["teacher"]["finetune"] = finetune
    path.write_text(yaml.safe_dump(raw))
    runner = CliRunner()
    result = runner.invoke(app, ["run", str(path)])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["n_transfer_questions"] == 20  # teacher-labelled questions 13-30 are among them
    assert "12 questions" in (tmp_path / "out" / "student" / "README.md").read_text()
    teacher_card = (tmp_path / "cache" / "teachers" / metrics["teacher_dir"].split("/")[-1] / "README.md").read_text()
    assert "30 questions" in teacher_card
    # the same 30 questions given as data.train_questions make the same teacher: read back, not trained again
    raw["teacher"]["finetune"].pop("train_questions")
    raw["data"].update(train_questions=30, transfer_questions=5)
    raw["output_dir"] = str(tmp_path / "out30")
    path.write_text(yaml.safe_dump(raw))
    again = runner.invoke(app, ["run", str(path)])
    assert again.exit_code == 0, again.output
    assert json.loads((tmp_path / "out30" / "metrics.json").read_text())["teacher_dir"] == metrics["teacher_dir"]
    assert len(list((tmp_path / "cache" / "teachers").glob("*/config.json"))) == 1


def test_joined_windows_mark_which_have_gold_spans(dev_v1_slice, minilm_tokenizer, tmp_path):
    window = WindowConfig(**WINDOW)
    labelled = prepare_features(load_squad(dev_v1_slice, cache_dir=tmp_path / "hf"), minilm_tokenizer, window)
    transfer = prepare_features(load_squad(dev_v1_slice, cache_dir=tmp_path / "hf", labelled=False),
                                minilm_tokenizer, window)
    joined = join_transfer(labelled, transfer)
    assert list(joined["labelled"]) == [1] * len(labelled) + [0] * len(transfer)
    assert list(joined["input_ids"]) == list(labelled["input_ids"]) + list(transfer["input_ids"])
    assert join_transfer(labelled, None) is labelled


@pytest.mark.parametrize("changes, needle", [
    ({"train.alpha": 0.0}, "data.transfer needs a teacher and train.alpha > 0"),
    ({"data.transfer": None, "data.transfer_questions": 5}, "data.transfer_questions is set but data.transfer"),
])
def test_transfer_without_a_kd_term_is_refused(changes, needle, squad_dir, tiny_bert_dir, tmp_path):
    path = _recipe(tmp_path, squad_dir, tiny_bert_dir)
    args = ["validate", str(path)] + [a for k, v in changes.items() for a in ("--set", f"{k}={'' if v is None else v}")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and needle in result.output, result.output
