"""KD, span and hidden-state losses: values, T^2 scaling, masking, gradients, extreme low-precision inputs."""

import math

import pytest
import torch

from distill.losses import (distillation_loss, hidden_state_loss, kd_loss, masked_log_softmax, span_ce_loss,
                            valid_positions_mask)


def _context_mask(batch=3, seq=10):
    cm = torch.zeros(batch, seq, dtype=torch.long)
    cm[:, 4:8] = 1
    return cm


def test_valid_positions_are_context_plus_cls():
    mask = valid_positions_mask(_context_mask(1, 10))
    assert mask.dtype == torch.bool
    assert mask[0].nonzero().flatten().tolist() == [0, 4, 5, 6, 7]


def test_kd_is_zero_for_equal_logits():
    logits = torch.randn(3, 10)
    mask = valid_positions_mask(_context_mask())
    assert kd_loss(logits, logits.clone(), mask, temperature=2.0).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_kd_equals_t_squared_times_hand_written_kl(temperature):
    torch.manual_seed(0)
    s, t = torch.randn(3, 10), torch.randn(3, 10)
    mask = valid_positions_mask(_context_mask())
    expected = 0.0
    for row in range(3):
        idx = mask[row].nonzero().flatten().tolist()
        zs = [s[row, i].item() / temperature for i in idx]
        zt = [t[row, i].item() / temperature for i in idx]
        ls = math.log(sum(math.exp(z) for z in zs))
        lt = math.log(sum(math.exp(z) for z in zt))
        expected += sum(math.exp(b - lt) * ((b - lt) - (a - ls)) for a, b in zip(zs, zt))
    expected = temperature ** 2 * expected / 3
    assert kd_loss(s, t, mask, temperature).item() == pytest.approx(expected, rel=1e-5)


def test_changing_logits_at_masked_positions_changes_nothing():
    torch.manual_seed(1)
    s, t = torch.randn(3, 10), torch.randn(3, 10)
    mask = valid_positions_mask(_context_mask())
    pos = torch.tensor([5, 0, 7])
    ref = distillation_loss(s, s, t, t, pos, pos, mask)
    s2, t2 = s.clone(), t.clone()
    s2[~mask] = torch.randn(int((~mask).sum())) * 100
    t2[~mask] = 1e4
    other = distillation_loss(s2, s2, t2, t2, pos, pos, mask)
    for key in ("loss", "kd_loss", "ce_loss"):
        assert other[key].item() == pytest.approx(ref[key].item(), rel=1e-6), key


def test_kd_and_ce_gradients_pass_gradcheck_in_float64():
    torch.manual_seed(2)
    mask = valid_positions_mask(_context_mask(2, 6).roll(-3, dims=1))
    s = torch.randn(2, 6, dtype=torch.float64, requires_grad=True)
    t = torch.randn(2, 6, dtype=torch.float64)
    pos = torch.tensor([0, 2])
    assert torch.autograd.gradcheck(lambda x: kd_loss(x, t, mask, 2.0), (s,))
    assert torch.autograd.gradcheck(lambda x: span_ce_loss(x, pos, mask), (s,))
    assert torch.autograd.gradcheck(
        lambda a, b: distillation_loss(a, b, t, t, pos, pos, mask, temperature=3.0, alpha=0.4)["loss"],
        (s, s.detach().flip(-1).requires_grad_()))


@pytest.mark.parametrize("dtype,big", [(torch.bfloat16, 1e4), (torch.float16, 1e4), (torch.float16, 65504.0)])
def test_extreme_low_precision_logits_give_finite_losses(dtype, big):
    mask = valid_positions_mask(_context_mask())
    s = torch.zeros(3, 10, dtype=dtype)
    s[0, 4], s[0, 5] = big, -big
    s[1, :] = -big
    s[2, 7] = big
    t = torch.full((3, 10), -big, dtype=dtype)
    t[:, 0] = big
    pos = torch.tensor([4, 0, 7])
    out = distillation_loss(s, s, t, t, pos, pos, mask, temperature=2.0, alpha=0.5)
    for key, value in out.items():
        assert value.dtype == torch.float32 and torch.isfinite(value), key
    s.requires_grad_(False)
    sg = s.float().requires_grad_()
    distillation_loss(sg, sg, t, t, pos, pos, mask)["loss"].backward()
    assert torch.isfinite(sg.grad).all()


def test_all_masked_row_contributes_zero_without_nan():
    s, t = torch.randn(2, 6), torch.randn(2, 6)
    mask = torch.zeros(2, 6, dtype=torch.bool)
    mask[1, :3] = True
    full = kd_loss(s, t, mask, 2.0)
    only_second = kd_loss(s[1:], t[1:], mask[1:], 2.0)
    assert torch.isfinite(full)
    assert full.item() == pytest.approx(only_second.item() / 2, rel=1e-6)
    none = kd_loss(s, t, torch.zeros_like(mask), 2.0)
    assert torch.isfinite(none) and none.item() == 0.0
    sg = s.clone().requires_grad_()
    kd_loss(sg, t, torch.zeros_like(mask), 2.0).backward()
    assert torch.isfinite(sg.grad).all()


def test_masked_log_softmax_is_a_distribution_over_valid_positions():
    mask = valid_positions_mask(_context_mask(2, 10))
    lp = masked_log_softmax(torch.randn(2, 10, dtype=torch.float16), mask)
    assert lp.dtype == torch.float32
    assert torch.allclose(lp.exp().sum(-1), torch.ones(2))
    assert (lp.exp()[~mask] == 0).all()


def test_loss_is_alpha_mix_of_kd_and_ce_averaged_over_start_and_end():
    torch.manual_seed(3)
    mask = valid_positions_mask(_context_mask())
    ss, se, ts, te = (torch.randn(3, 10) for _ in range(4))
    sp, ep = torch.tensor([4, 0, 5]), torch.tensor([6, 0, 7])
    out = distillation_loss(ss, se, ts, te, sp, ep, mask, temperature=3.0, alpha=0.3)
    kd = (kd_loss(ss, ts, mask, 3.0) + kd_loss(se, te, mask, 3.0)) / 2
    ce = (span_ce_loss(ss, sp, mask) + span_ce_loss(se, ep, mask)) / 2
    assert out["kd_loss"].item() == pytest.approx(kd.item(), rel=1e-6)
    assert out["ce_loss"].item() == pytest.approx(ce.item(), rel=1e-6)
    assert out["loss"].item() == pytest.approx(0.3 * kd.item() + 0.7 * ce.item(), rel=1e-6)


def test_alpha_zero_needs_no_teacher_and_is_plain_ce():
    mask = valid_positions_mask(_context_mask())
    s = torch.randn(3, 10)
    pos = torch.tensor([4, 0, 5])
    out = distillation_loss(s, s, None, None, pos, pos, mask, alpha=0.0)
    assert out["kd_loss"].item() == 0.0
    assert out["loss"].item() == pytest.approx(span_ce_loss(s, pos, mask).item(), rel=1e-6)
    with pytest.raises(ValueError, match="teacher"):
        distillation_loss(s, s, None, None, pos, pos, mask, alpha=0.5)


def test_hidden_loss_is_zero_for_equal_states_and_one_for_the_teacher_mean():
    torch.manual_seed(0)
    teacher = [torch.randn(2, 5, 8) * 3 + 1 for _ in range(2)]
    mask = torch.ones(2, 5, dtype=torch.long)
    assert hidden_state_loss(teacher, teacher, mask).item() == 0.0
    means = [t.mean().expand_as(t) for t in teacher]
    assert hidden_state_loss(means, teacher, mask).item() == pytest.approx(1.0, rel=1e-5)
    # per layer MSE / Var(teacher), averaged over layers
    student = [t + 0.5 for t in teacher]
    expected = sum(0.25 / t.var(unbiased=False) for t in teacher) / 2
    assert hidden_state_loss(student, teacher, mask).item() == pytest.approx(expected.item(), rel=1e-5)


def test_hidden_loss_ignores_padding_tokens():
    torch.manual_seed(1)
    teacher, student = torch.randn(2, 6, 4), torch.randn(2, 6, 4)
    mask = torch.ones(2, 6, dtype=torch.long)
    mask[:, 4:] = 0
    base = hidden_state_loss([student], [teacher], mask)
    garbage = student.clone()
    garbage[:, 4:] = 1e4
    assert hidden_state_loss([garbage], [teacher], mask).item() == base.item()


def test_hidden_loss_passes_gradcheck_in_float64():
    torch.manual_seed(2)
    teacher = torch.randn(2, 4, 3, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    s = torch.randn(2, 4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: hidden_state_loss([x], [teacher], mask), (s,))
