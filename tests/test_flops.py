"""distill.flops: the FLOP count behind train_efficiency, and the matmul peak it is divided by."""

import pytest
import torch

from distill.flops import FlopModel, PeakMeter, flop_model, run_efficiency
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


def test_peak_meter_measures_a_positive_rate_in_the_asked_dtype():
    meter = PeakMeter(torch.float32, "cpu", size=128, min_seconds=0.01)
    assert 1e6 < meter.best < 1e14 and meter.a.dtype == torch.float32


def test_a_peak_measured_low_at_setup_is_raised_by_later_samples_within_their_time_share():
    meter = PeakMeter(torch.float32, "cpu", size=128, min_seconds=0.01)
    true_best = meter.best
    meter.best = true_best / 4  # as if another thread had held a core at setup
    one_matmul_s = meter.flops / meter.best
    assert meter.sample(busy_s=0.5 * one_matmul_s / meter.share) == true_best / 4  # no matmul fits the share
    assert meter.samples == 0
    raised = meter.sample(busy_s=3.5 * one_matmul_s / meter.share)
    assert meter.samples == 3 and raised == meter.best > true_best / 4
    assert meter.sample(busy_s=1e9) >= raised and meter.samples == 3 + 8  # never lower; at most 8 per call


def test_a_runs_efficiency_is_its_mean_achieved_rate_over_its_best_peak():
    log = [{"step": 10, "achieved_gflops": 100.0, "peak_gflops": 300.0},
           {"step": 15, "epoch": 1, "eval_loss": 2.0},
           {"step": 20, "achieved_gflops": 140.0, "peak_gflops": 400.0}]
    assert run_efficiency(log) == pytest.approx(120.0 / 400.0)
    assert run_efficiency([{"step": 5, "epoch": 1, "eval_loss": 2.0}]) is None
