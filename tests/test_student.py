"""Building the student: from a config (seeded), from teacher layers, or a pretrained model."""

import torch

from distill.models import load_qa_model
from distill.recipe import StudentConfig
from distill.student import make_student


def _weights(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_config_built_student_depends_on_the_seed_only(tiny_bert_dir):
    cfg = StudentConfig(config=str(tiny_bert_dir))
    first = make_student(cfg, teacher=None, seed=7)
    torch.manual_seed(123)
    torch.rand(1000)  # what ran before in the process (a teacher fine-tune, say) must not matter
    again = make_student(cfg, teacher=None, seed=7)
    other = make_student(cfg, teacher=None, seed=8)
    assert torch.equal(_weights(first), _weights(again))
    assert not torch.equal(_weights(first), _weights(other))


def test_config_built_student_leaves_the_global_rng_alone(tiny_bert_dir):
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    make_student(StudentConfig(config=str(tiny_bert_dir)), teacher=None, seed=7)
    assert torch.equal(torch.rand(3), expected)


def test_student_from_teacher_layers_keeps_the_chosen_blocks(tiny_bert_dir):
    teacher = load_qa_model(tiny_bert_dir)
    student = make_student(StudentConfig(from_teacher_layers=[1]), teacher)
    assert student.config.num_hidden_layers == 1
    kept = student.bert.encoder.layer[0].state_dict()
    for name, value in teacher.bert.encoder.layer[1].state_dict().items():
        assert torch.equal(kept[name], value)


def test_distilbert_from_bert_layers_computes_what_the_bert_cut_computes_on_segment_zero_input(minilm_tokenizer):
    from distill.student import distilbert_from_bert_layers, student_from_teacher_layers

    teacher = load_qa_model("minilm")  # real BERT weights; its fresh QA head is drawn from a fixed seed
    bert = student_from_teacher_layers(teacher, [0, 1, 2]).eval()
    distil = distilbert_from_bert_layers(teacher, [0, 1, 2]).eval()
    assert type(distil).__name__ == "DistilBertForQuestionAnswering" and distil.config.n_layers == 3
    enc = minilm_tokenizer(["Which river flows through Paris?", "Who wrote it?"],
                           ["The Seine flows through Paris and into the English Channel.", "Victor Hugo wrote it."],
                           padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = bert(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                        token_type_ids=torch.zeros_like(enc["input_ids"]))
        got = distil(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
    real = enc["attention_mask"].bool()
    for a, b in ((expected.start_logits, got.start_logits), (expected.end_logits, got.end_logits)):
        assert torch.allclose(a[real], b[real], atol=1e-5, rtol=0), (a[real] - b[real]).abs().max()


def test_distilbert_student_trains_and_saves_a_pair_that_loads_and_runs_on_plain_tokenizer_output(
        tiny_bert_dir, tmp_path):
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    from _train_worker import make_features
    from distill.recipe import TrainConfig
    from distill.train import train_student

    teacher = load_qa_model(tiny_bert_dir)
    student = make_student(StudentConfig(from_teacher_layers=[0], architecture="distilbert"), teacher)
    cfg = TrainConfig(batch_size=4, max_steps=2, alpha=0.0, precision="fp32", ds_config="ds_configs/zero2_fp32.json")
    saved = train_student(cfg, student, AutoTokenizer.from_pretrained(tiny_bert_dir), make_features(8), tmp_path)
    model = AutoModelForQuestionAnswering.from_pretrained(saved)
    tokenizer = AutoTokenizer.from_pretrained(saved)
    assert type(model).__name__ == "DistilBertForQuestionAnswering"
    inputs = tokenizer("Who wrote it?", "Victor Hugo wrote it.", return_tensors="pt")
    assert "token_type_ids" not in inputs
    assert model(**inputs).start_logits.shape == inputs["input_ids"].shape


def test_distilbert_architecture_needs_teacher_layers():
    import pytest
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="student.architecture applies only with student.from_teacher_layers"):
        StudentConfig(model="x", architecture="distilbert")
