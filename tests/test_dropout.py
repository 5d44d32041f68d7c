"""distill.dropout: CPU dropout masks with nn.Dropout's distribution, seeded by torch, swapped into a model."""

import pytest
import torch
from torch import nn

from distill.dropout import CpuDropout, choice, keep_mask, use_cpu_dropout
from distill.errors import InputError


def test_mask_drops_p_of_elements_and_scales_the_rest_to_keep_the_mean():
    torch.manual_seed(0)
    mask = keep_mask((1000, 1000), 0.1, torch.float32)
    dropped = (mask == 0).float().mean().item()
    assert abs(dropped - 0.1) < 0.002  # 1e6 draws: sd of the fraction is 0.0003
    assert mask.unique().tolist() == [0.0, pytest.approx(65536 / (65536 - 6554))]
    assert abs(mask.mean().item() - 1.0) < 0.003


def test_mask_bits_are_independent_across_the_four_elements_of_a_draw():
    torch.manual_seed(1)
    kept = keep_mask((250_000, 4), 0.5, torch.float32) > 0
    # each of the 16 keep/drop patterns of four neighbours should be ~1/16
    patterns = torch.bincount((kept.long() * torch.tensor([1, 2, 4, 8])).sum(1), minlength=16).float() / 250_000
    assert (patterns - 1 / 16).abs().max() < 0.003


def test_cpu_dropout_follows_torch_manual_seed_and_differs_between_calls():
    layer = CpuDropout(0.3).train()
    x = torch.ones(64, 32, dtype=torch.bfloat16)
    torch.manual_seed(7)
    a, b = layer(x), layer(x)
    torch.manual_seed(7)
    assert torch.equal(layer(x), a)
    assert not torch.equal(a, b)
    assert a.dtype == torch.bfloat16 and x.eq(1).all()


def test_cpu_dropout_gradient_is_its_mask_and_eval_is_identity():
    layer = CpuDropout(0.2).train()
    x = torch.randn(128, 16, requires_grad=True)
    y = layer(x)
    y.sum().backward()
    mask = torch.where(y.detach() == 0, 0.0, y.detach() / x.detach())
    assert torch.allclose(x.grad, mask)
    assert torch.equal(layer.eval()(x), x)


def test_cpu_dropout_at_p_0_and_1_behaves_as_nn_dropout():
    x = torch.randn(10, 10)
    assert torch.equal(CpuDropout(0.0).train()(x), x)
    assert torch.equal(CpuDropout(1.0).train()(x), torch.zeros_like(x))


def test_swap_replaces_every_plain_dropout_keeping_p_and_weights():
    from transformers import DistilBertConfig, DistilBertForQuestionAnswering

    cfg = DistilBertConfig(vocab_size=100, dim=32, hidden_dim=64, n_layers=2, n_heads=2, dropout=0.1,
                           attention_dropout=0.05, qa_dropout=0.2, max_position_embeddings=64)
    model = DistilBertForQuestionAnswering(cfg)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ps = sorted(m.p for m in model.modules() if isinstance(m, nn.Dropout))
    assert use_cpu_dropout(model) == len(ps)
    assert all(type(m) is CpuDropout for m in model.modules() if isinstance(m, nn.Dropout))
    assert sorted(m.p for m in model.modules() if isinstance(m, nn.Dropout)) == ps
    assert use_cpu_dropout(model) == 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    model.train()
    out = model(input_ids=torch.randint(0, 100, (2, 16)))
    out.start_logits.sum().backward()


def test_env_choice_is_checked(monkeypatch):
    monkeypatch.setenv("DISTILL_CPU_DROPOUT", " Torch ")
    assert choice() == "torch"
    monkeypatch.setenv("DISTILL_CPU_DROPOUT", "mkl")
    with pytest.raises(InputError, match=r"DISTILL_CPU_DROPOUT='mkl': must be one of bits, torch"):
        choice()
