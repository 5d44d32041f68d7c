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
