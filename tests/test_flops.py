"""distill.flops: the FLOP count behind train_efficiency, and the matmul peak it is divided by."""

import pytest
import torch

from distill.flops import FlopModel, flop_model, matmul_peak
from distill.testing import make_tiny_bert, make_tiny_distilbert


@pytest.mark.parametrize("make, layers", [(make_tiny_bert, 2), (make_tiny_distilbert, 1)])
def test_linear_weights_are_counted_per_layer_plus_the_qa_head(make, layers, tmp_path, minilm_dir):
    from transformers import AutoModelForQuestionAnswering

    model = AutoModelForQuestionAnswering.from_pretrained(make(tmp_path / "m", minilm_dir, layers=layers, hidden=32))
    counted = flop_model(model)
    # per layer: Q, K, V, output (4 * 32 * 32) and the FFN (2 * 32 * 64); the QA head 32 * 2
    assert counted == FlopModel(linear_params=layers * (4 * 32 * 32 + 2 * 32 * 64) + 32 * 2, layers=layers, hidden=32)


def test_forward_flops_are_two_per_weight_per_token_plus_attention():
    m = FlopModel(linear_params=1000, layers=2, hidden=8)
    rows, width = 3, 5
    assert m.forward(rows, width) == 2 * 1000 * rows * width + 4 * 2 * 8 * width * rows * width


def test_matmul_peak_is_a_positive_rate_in_the_asked_dtype():
    rate = matmul_peak(torch.float32, "cpu", size=128, min_seconds=0.01)
    assert 1e6 < rate < 1e14
