"""Knowledge-distillation and span losses for extractive QA (pure functions, no state).

Reads: start/end logits [batch, seq] of student and teacher (any float dtype), `context_mask` [batch, seq]
and gold start/end positions [batch]; for the optional hidden-state term, matched hidden states
[batch, seq, hidden] and the attention mask. Writes nothing. Everything is computed in at least fp32
(fp16/bf16 inputs are upcast; float64 stays float64, which is what lets torch.autograd.gradcheck test
these very functions).

Valid positions (docs/architecture.md): context tokens plus index 0 (CLS, the "no answer" slot). Masked
positions are removed from BOTH softmaxes by a large negative FINITE fill, and their KL terms are zeroed,
so an all-masked row gives 0 rather than NaN (-inf - -inf).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from distill.errors import InputError

# finite and far below any logit fp16/bf16 can hold (fp16 max 65504), yet x - fill cannot overflow fp32
MASK_FILL = -1e30


def _wide(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.promote_types(x.dtype, torch.float32))


def valid_positions_mask(context_mask: torch.Tensor) -> torch.Tensor:
    """bool [batch, seq]: context tokens plus index 0 (CLS)."""
    mask = context_mask.bool().clone()
    mask[..., 0] = True
    return mask


def masked_log_softmax(logits: torch.Tensor, mask: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """fp32 log-softmax over the positions where `mask` is True; masked entries are very negative, finite."""
    return F.log_softmax(_wide(logits).masked_fill(~mask, MASK_FILL), dim=dim)


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor,
            temperature: float = 2.0) -> torch.Tensor:
    """T^2 * KL(softmax(teacher/T) || softmax(student/T)) over valid positions, averaged over rows.

    The T^2 factor keeps the gradient scale independent of T (Hinton et al. 2015). Rows without any
    valid position contribute 0; the mean is over all rows so nothing is divided by zero.
    """
    t = float(temperature)
    log_p_s = masked_log_softmax(_wide(student_logits) / t, mask)
    log_p_t = masked_log_softmax(_wide(teacher_logits.detach()) / t, mask).to(log_p_s.dtype)
    # where() rather than multiplying by the mask: masked terms are exactly 0, even if finite garbage
    per_pos = torch.where(mask, log_p_t.exp() * (log_p_t - log_p_s), torch.zeros_like(log_p_s))
    return per_pos.sum(dim=-1).mean() * (t * t)


def span_ce_loss(logits: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the gold positions over valid positions, averaged over rows.

    A gold position is always kept valid: a masked target would give a ~1e30 loss instead of a signal.
    """
    positions = positions.long().view(-1)
    mask = mask.clone()
    mask[torch.arange(mask.shape[0], device=mask.device), positions] = True
    log_p = masked_log_softmax(logits, mask)
    return F.nll_loss(log_p, positions, reduction="mean")


def distillation_loss(student_start: torch.Tensor, student_end: torch.Tensor,
                      teacher_start: torch.Tensor | None, teacher_end: torch.Tensor | None,
                      start_pos: torch.Tensor, end_pos: torch.Tensor, mask: torch.Tensor,
                      temperature: float = 2.0, alpha: float = 0.5,
                      labelled: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """loss = alpha * KD + (1 - alpha) * CE, each averaged over the start and end distributions.

    `mask` is the valid-positions mask (see `valid_positions_mask`). With alpha == 0 the teacher logits
    may be None and `kd_loss` is reported as 0. `labelled` (bool/int per row; None = all): rows from a
    transfer set have no gold span, so CE is the mean over the labelled rows only (0 when there are none)
    while KD is the mean over all rows: the CE term keeps its scale whatever share of a batch is transfer.
    """
    if labelled is not None and not bool(labelled.all()):
        rows = labelled.bool()
        if not bool(rows.any()):
            ce = torch.zeros((), dtype=torch.float32, device=student_start.device)
        else:
            ce = 0.5 * (span_ce_loss(student_start[rows], start_pos[rows], mask[rows])
                        + span_ce_loss(student_end[rows], end_pos[rows], mask[rows]))
    else:
        ce = 0.5 * (span_ce_loss(student_start, start_pos, mask) + span_ce_loss(student_end, end_pos, mask))
    if alpha > 0:
        if teacher_start is None or teacher_end is None:
            raise ValueError("distillation_loss: alpha > 0 needs teacher start and end logits")
        kd = 0.5 * (kd_loss(student_start, teacher_start, mask, temperature)
                    + kd_loss(student_end, teacher_end, mask, temperature))
    else:
        kd = torch.zeros((), dtype=ce.dtype, device=ce.device)
    loss = alpha * kd + (1.0 - alpha) * ce if alpha > 0 else ce
    return {"loss": loss, "kd_loss": kd, "ce_loss": ce}


def hidden_state_loss(student_hidden, teacher_hidden, token_mask: torch.Tensor) -> torch.Tensor:
    """Mean over matched layer pairs of MSE(student, teacher) / Var(teacher), over real tokens only.

    Dividing by the teacher's variance makes the term scale-free across models and layers: 0 is a
    perfect match, 1 is no better than predicting the teacher's mean (TinyBERT / PKD-style hidden KD).
    """
    mask = token_mask.bool()
    terms = []
    for s, t in zip(student_hidden, teacher_hidden, strict=True):
        s = _wide(s)[mask]  # [tokens, hidden]
        t = t.detach()[mask].to(s.dtype)
        if not s.numel():
            terms.append(s.sum())
            continue
        terms.append(((s - t) ** 2).mean() / t.var(unbiased=False).clamp_min(1e-6))
    return torch.stack(terms).mean()


def hidden_layer_map(cfg, student_config, teacher_config) -> list[int]:
    """Teacher hidden-state index (1-based layer) matched to each student layer, checked against both models."""
    n_s, n_t = student_config.num_hidden_layers, teacher_config.num_hidden_layers
    layers = cfg.hidden_layers or [round((i + 1) * n_t / n_s) for i in range(n_s)]
    if len(layers) != n_s or not all(1 <= j <= n_t for j in layers):
        raise InputError(f"train.hidden_layers: {layers} must give one teacher layer in 1..{n_t} for each of the "
                         f"student's {n_s} layers")
    if student_config.hidden_size != teacher_config.hidden_size:
        raise InputError(f"train.hidden_weight: student hidden size {student_config.hidden_size} differs from the "
                         f"teacher's {teacher_config.hidden_size} (no projection is learned); set hidden_weight 0")
    return layers
