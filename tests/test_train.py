"""Student training under DeepSpeed on CPU: logs, determinism, teacher sources, resume, ranks, divergence."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from _train_worker import make_features, teacher_logits_for
from distill.distributed import free_port
from distill.errors import InputError
from distill.files import MARKER
from distill.testing import make_tiny_bert
from distill.batching import epoch_order
from distill.recipe import TrainConfig
from distill.train import TIMED_KEYS, train_student

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "_train_worker.py"
LAUNCH_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def cfg(**kw) -> TrainConfig:
    base = dict(batch_size=4, max_steps=4, lr=1e-3, warmup_ratio=0.25, precision="fp32",
                ds_config="ds_configs/zero2_fp32.json", log_every=1, seed=3)
    return TrainConfig(**{**base, **kw})


def load_log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]


def losses(out: Path) -> list[float]:
    return [r["loss"] for r in load_log(out)]


def student_state(out: Path) -> dict:
    from transformers import AutoModelForQuestionAnswering

    return AutoModelForQuestionAnswering.from_pretrained(out / "student").state_dict()


def student_state_init(model_dir: Path) -> dict:
    from transformers import AutoModelForQuestionAnswering

    return AutoModelForQuestionAnswering.from_pretrained(model_dir).state_dict()


def train(model_dir, out, config, features, **kw):
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    model = AutoModelForQuestionAnswering.from_pretrained(model_dir)
    return train_student(config, model, AutoTokenizer.from_pretrained(model_dir), features, out, **kw)


def worker_env() -> dict:
    # the pytest process may already be rank 0 of its own group; children must not reuse its port
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_ENV}
    env.update(OMP_NUM_THREADS="1", DS_ACCELERATOR="cpu")  # distill itself comes from the editable install
    return env


def run_worker(args, *, ranks: int = 1, check: bool = True, timeout: int = 300):
    if ranks == 1:
        cmd = [sys.executable, str(WORKER), *map(str, args)]
    else:
        torchrun = Path(sys.executable).with_name("torchrun")
        cmd = [str(torchrun), "--nproc_per_node", str(ranks), "--master_port", str(free_port()),
               str(WORKER), *map(str, args)]
    proc = subprocess.run(cmd, env=worker_env(), capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    if check and proc.returncode != 0:
        pytest.fail(f"worker failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc


@pytest.fixture(scope="module")
def features():
    return make_features(24)


@pytest.fixture(scope="module")
def no_dropout_bert(tmp_path_factory, minilm_dir) -> Path:
    """Dropout off: different rank counts draw different dropout masks, the test compares arithmetic."""
    path = make_tiny_bert(tmp_path_factory.mktemp("tiny_nodrop"), minilm_dir, seed=5)
    config = json.loads((path / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (path / "config.json").write_text(json.dumps(config))
    return path


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, minilm_dir):
    from transformers import AutoModelForQuestionAnswering

    path = make_tiny_bert(tmp_path_factory.mktemp("tiny_teacher"), minilm_dir, seed=11)
    return AutoModelForQuestionAnswering.from_pretrained(path).eval()


def test_one_rank_zero2_writes_log_tensorboard_checkpoint_and_loadable_student(tiny_bert_dir, features, teacher,
                                                                                tmp_path):
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    logits = teacher_logits_for(teacher, features, dtype="fp16")
    student_dir = train(tiny_bert_dir, tmp_path, cfg(log_every=2), features, teacher_logits=logits)
    records = load_log(tmp_path)
    assert [r["step"] for r in records] == [2, 4]
    for r in records:
        assert set(r) >= {"step", "epoch", "loss", "kd_loss", "ce_loss", "lr", "elapsed_s", "achieved_gflops",
                          "peak_gflops", "train_efficiency"}
        assert r["kd_loss"] > 0 and r["ce_loss"] > 0
        assert r["peak_gflops"] > 0 and r["train_efficiency"] == pytest.approx(
            r["achieved_gflops"] / r["peak_gflops"], abs=1e-3)
        assert r["loss"] == pytest.approx(0.5 * r["kd_loss"] + 0.5 * r["ce_loss"], rel=1e-6)
    assert records[-1]["lr"] == 0.0
    assert records[-1]["peak_gflops"] >= records[0]["peak_gflops"]  # the best rate so far
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert (tmp_path / "checkpoints" / "step4" / MARKER).is_file()

    trained = AutoModelForQuestionAnswering.from_pretrained(student_dir)
    initial = AutoModelForQuestionAnswering.from_pretrained(tiny_bert_dir)
    assert all(p.dtype == torch.float32 for p in trained.parameters())
    assert not torch.equal(trained.qa_outputs.weight, initial.qa_outputs.weight)
    # transformers 5 removed pipeline("question-answering"); tokenizer + model from the folder is what it did
    tok = AutoTokenizer.from_pretrained(student_dir)
    enc = tok("Who wrote it?", "The book was written by Jane Austen in 1813.", return_tensors="pt")
    with torch.no_grad():
        out = trained(**enc)
    assert out.start_logits.shape == enc["input_ids"].shape and torch.isfinite(out.end_logits).all()


def test_attention_dropout_is_set_for_training_only_and_the_saved_config_keeps_its_own(tiny_bert_dir, features,
                                                                                          tmp_path):
    from transformers import AutoConfig, AutoModelForQuestionAnswering, AutoTokenizer

    model = AutoModelForQuestionAnswering.from_pretrained(tiny_bert_dir)
    own = model.config.attention_probs_dropout_prob
    assert own > 0
    student_dir = train_student(cfg(max_steps=1, alpha=0.0, attention_dropout=0.0), model,
                                AutoTokenizer.from_pretrained(tiny_bert_dir), features, tmp_path)
    attention = [m.dropout.p for m in model.modules() if type(m).__name__ == "BertSelfAttention"]
    hidden = [m.dropout.p for m in model.modules() if type(m).__name__ in ("BertSelfOutput", "BertOutput")]
    assert attention == [0.0] * model.config.num_hidden_layers
    assert hidden and set(hidden) == {model.config.hidden_dropout_prob}
    assert AutoConfig.from_pretrained(student_dir).attention_probs_dropout_prob == own


def test_cpu_training_swaps_the_models_dropout_for_cpu_masks_unless_told_torch(tiny_bert_dir, features, tmp_path,
                                                                               monkeypatch):
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    from distill.dropout import CpuDropout

    kinds = {}
    for setting in ("bits", "torch"):
        monkeypatch.setenv("DISTILL_CPU_DROPOUT", setting)
        model = AutoModelForQuestionAnswering.from_pretrained(tiny_bert_dir)
        n = sum(isinstance(m, torch.nn.Dropout) for m in model.modules())
        train_student(cfg(max_steps=1, alpha=0.0), model, AutoTokenizer.from_pretrained(tiny_bert_dir), features,
                      tmp_path / setting)
        kinds[setting] = [type(m) for m in model.modules() if isinstance(m, torch.nn.Dropout)]
        assert len(kinds[setting]) == n
    assert set(kinds["bits"]) == {CpuDropout} and set(kinds["torch"]) == {torch.nn.Dropout}


def test_attention_dropout_reaches_distilbert_blocks_and_a_model_without_any_is_refused():
    import torch.nn as nn
    from transformers import DistilBertConfig, DistilBertForQuestionAnswering

    from distill.models import set_attention_dropout

    model = DistilBertForQuestionAnswering(DistilBertConfig(vocab_size=100, dim=32, n_layers=2, n_heads=2,
                                                            hidden_dim=64))
    assert set_attention_dropout(model, 0.0) == 2
    assert [m.dropout.p for m in model.modules() if type(m).__name__ == "DistilBertSelfAttention"] == [0.0, 0.0]
    with pytest.raises(InputError, match="no attention dropout"):
        set_attention_dropout(nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.1)), 0.0)


def test_auto_attention_kernel_is_eager_only_for_cpu_bf16_training():
    from distill.models import training_attention

    assert training_attention("auto", "cpu", "bf16") == "eager"
    assert training_attention("auto", "cpu", "fp32") is None
    assert training_attention("auto", "cuda", "fp16") is None
    assert training_attention("sdpa", "cpu", "bf16") == "sdpa"
    assert training_attention("eager", "cuda", "fp16") == "eager"


def test_training_steps_use_the_chosen_kernel_validation_and_the_returned_model_their_own(tiny_bert_dir, features,
                                                                                        tmp_path):
    from transformers import AutoConfig, AutoModelForQuestionAnswering, AutoTokenizer

    model = AutoModelForQuestionAnswering.from_pretrained(tiny_bert_dir)
    own = model.config._attn_implementation
    assert own == "sdpa"
    seen = []
    attention = next(m for m in model.modules() if type(m).__name__ == "BertSelfAttention")
    attention.register_forward_hook(lambda m, args, out: seen.append((m.training, m.config._attn_implementation)))
    student_dir = train_student(cfg(max_steps=2, alpha=0.0, attn_implementation="eager"), model,
                                AutoTokenizer.from_pretrained(tiny_bert_dir), features, tmp_path,
                                validation=(features.select(range(4)), 1))
    assert [k for training, k in seen if training] == ["eager", "eager"]
    assert {k for training, k in seen if not training} == {own}
    assert model.config._attn_implementation == own
    assert AutoModelForQuestionAnswering.from_pretrained(student_dir).config._attn_implementation == own
    assert "attn_implementation" not in AutoConfig.from_pretrained(student_dir).to_diff_dict()


def test_an_unknown_attention_kernel_is_a_recipe_error_naming_the_key():
    with pytest.raises(ValueError, match="attn_implementation"):
        cfg(attn_implementation="flash")


def test_same_recipe_and_seed_give_identical_losses_and_weights(tiny_bert_dir, features, tmp_path):
    train(tiny_bert_dir, tmp_path / "a", cfg(alpha=0.0), features)
    train(tiny_bert_dir, tmp_path / "b", cfg(alpha=0.0), features)
    assert losses(tmp_path / "a") == losses(tmp_path / "b")
    a, b = student_state(tmp_path / "a"), student_state(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_group_by_length_keeps_every_row_and_cuts_the_padded_width():
    import numpy as np

    lengths = np.random.default_rng(0).integers(40, 257, size=1000)
    plain = epoch_order(1000, 16, seed=3, epoch=1)
    grouped = epoch_order(1000, 16, seed=3, epoch=1, lengths=lengths)
    assert sorted(grouped) == sorted(plain)  # the same rows, wrap-around padding included
    assert grouped == epoch_order(1000, 16, seed=3, epoch=1, lengths=lengths)  # resumable: seed + epoch fix it
    assert grouped != epoch_order(1000, 16, seed=3, epoch=2, lengths=lengths)

    def computed(order):  # tokens computed once each step is cut to its longest row
        return sum(16 * max(lengths[order[lo:lo + 16]]) for lo in range(0, len(order), 16))

    assert computed(grouped) < 0.7 * computed(plain)
    first_steps = [max(lengths[grouped[lo:lo + 16]]) for lo in range(0, 160, 16)]
    assert first_steps != sorted(first_steps, reverse=True)  # steps are shuffled, not longest first


def test_group_by_length_training_is_reproducible_and_changes_the_order(tiny_bert_dir, features, tmp_path):
    train(tiny_bert_dir, tmp_path / "a", cfg(alpha=0.0, group_by_length=True), features)
    train(tiny_bert_dir, tmp_path / "b", cfg(alpha=0.0, group_by_length=True), features)
    train(tiny_bert_dir, tmp_path / "plain", cfg(alpha=0.0), features)
    assert losses(tmp_path / "a") == losses(tmp_path / "b")
    assert losses(tmp_path / "a") != losses(tmp_path / "plain")


def test_each_epoch_order_is_drawn_once_not_at_every_step(tiny_bert_dir, features, tmp_path, monkeypatch):
    import distill.train

    real, drawn = distill.train.epoch_order, []

    def counted(*a, **kw):
        drawn.append(a[3])
        return real(*a, **kw)

    monkeypatch.setattr(distill.train, "epoch_order", counted)
    train(tiny_bert_dir, tmp_path / "run", cfg(alpha=0.0, group_by_length=True, max_steps=None, epochs=2), features)
    assert len(load_log(tmp_path / "run")) > 2 and drawn == [0, 1]


def test_cached_fp32_teacher_logits_give_the_same_losses_as_the_online_teacher(tiny_bert_dir, features, teacher,
                                                                               tmp_path):
    cached = teacher_logits_for(teacher, features, dtype="fp32")
    train(tiny_bert_dir, tmp_path / "cached", cfg(), features, teacher_logits=cached)
    train(tiny_bert_dir, tmp_path / "online", cfg(online_teacher=True), features, teacher_model=teacher)
    a, b = load_log(tmp_path / "cached"), load_log(tmp_path / "online")
    # Both paths cut padding per batch, but to different widths (cache batches vs training batches), so
    # the GEMMs are blocked differently: equal up to float32 rounding, not bit for bit.
    for ra, rb in zip(a, b, strict=True):
        assert rb["kd_loss"] == pytest.approx(ra["kd_loss"], rel=1e-4, abs=1e-6)
        assert rb["loss"] == pytest.approx(ra["loss"], rel=1e-5, abs=1e-6)


def test_hidden_state_kd_adds_its_weighted_term_and_pulls_student_states_toward_the_teacher(
        tiny_bert_dir, features, teacher, tmp_path):
    train(tiny_bert_dir, tmp_path / "h", cfg(online_teacher=True, hidden_weight=2.0, max_steps=8), features,
          teacher_model=teacher)
    records = load_log(tmp_path / "h")
    for r in records:
        assert r["hidden_loss"] > 0
        assert r["loss"] == pytest.approx(0.5 * r["kd_loss"] + 0.5 * r["ce_loss"] + 2.0 * r["hidden_loss"], rel=1e-5)
    assert records[-1]["hidden_loss"] < records[0]["hidden_loss"]
    plain = load_log(train(tiny_bert_dir, tmp_path / "p", cfg(max_steps=8, online_teacher=True), features,
                           teacher_model=teacher).parent)
    assert all(r["hidden_loss"] == 0 for r in plain)


def test_hidden_layer_map_spreads_evenly_and_refuses_what_cannot_be_matched():
    from transformers import BertConfig

    from distill.losses import hidden_layer_map

    t6, s3 = BertConfig(num_hidden_layers=6, hidden_size=32), BertConfig(num_hidden_layers=3, hidden_size=32)
    assert hidden_layer_map(cfg(hidden_weight=1.0), s3, t6) == [2, 4, 6]
    assert hidden_layer_map(cfg(hidden_weight=1.0, hidden_layers=[1, 3, 5]), s3, t6) == [1, 3, 5]
    with pytest.raises(InputError, match=r"train.hidden_layers: \[1, 7, 6\] must give one teacher layer in 1..6"):
        hidden_layer_map(cfg(hidden_weight=1.0, hidden_layers=[1, 7, 6]), s3, t6)
    wide = BertConfig(num_hidden_layers=6, hidden_size=64)
    with pytest.raises(InputError, match="student hidden size 32 differs from the teacher's 64"):
        hidden_layer_map(cfg(hidden_weight=1.0), s3, wide)


def test_gradient_accumulation_matches_one_big_micro_batch(no_dropout_bert, features, tmp_path):
    train(no_dropout_bert, tmp_path / "big", cfg(batch_size=8, alpha=0.0), features)
    train(no_dropout_bert, tmp_path / "acc", cfg(batch_size=4, gradient_accumulation=2, alpha=0.0), features)
    assert losses(tmp_path / "acc") == pytest.approx(losses(tmp_path / "big"), abs=1e-5)


class StopRun(Exception):
    """Stands in for a kill: raised inside a step, after the run's last checkpoint was committed."""


def count_loss_calls(monkeypatch, stop_at: int = 0) -> dict:
    """Count distillation_loss calls (one per micro batch); with stop_at, raise StopRun at that call."""
    import distill.losses

    real, calls = distill.losses.distillation_loss, {"n": 0}

    def counted(*a, **kw):
        calls["n"] += 1
        if calls["n"] == stop_at:
            raise StopRun(f"stopped in micro batch {stop_at}")
        return real(*a, **kw)

    monkeypatch.setattr(distill.losses, "distillation_loss", counted)
    return calls


def without_timing(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMED_KEYS} for r in records]


def test_resumed_run_trains_the_remaining_steps_and_ends_identical_to_an_uninterrupted_run(
        tiny_bert_dir, features, teacher, tmp_path, monkeypatch):
    # 24 rows / batch 4 = 6 steps an epoch: stopped in step 5, resumed from step 3, the run crosses into
    # epoch 2 after the resume. Dropout is on, so equal losses also need the restored RNG states.
    logits = teacher_logits_for(teacher, features)
    config = cfg(max_steps=8, checkpoint_every=3, warmup_ratio=0.25)
    full, out = tmp_path / "full", tmp_path / "stopped"
    train(tiny_bert_dir, full, config, features, teacher_logits=logits)

    with monkeypatch.context() as m:
        count_loss_calls(m, stop_at=5)
        with pytest.raises(StopRun):
            train(tiny_bert_dir, out, config, features, teacher_logits=logits)
    ckpt = out / "checkpoints"
    assert sorted(p.name for p in ckpt.glob("step*")) == ["step3"] and (ckpt / "step3" / MARKER).is_file()
    assert [r["step"] for r in load_log(out)] == [1, 2, 3, 4]
    assert not (out / "student").exists()
    # a tag without the commit marker (a save killed half-way) is never resumed from
    half = ckpt / "step6"
    half.mkdir()
    (half / "mp_rank_00_model_states.pt").write_bytes(b"partial")
    (ckpt / "latest").write_text("step6")

    with monkeypatch.context() as m:
        calls = count_loss_calls(m)
        train(tiny_bert_dir, out, config, features, teacher_logits=logits, resume=True)
    assert calls["n"] == 5, "the resumed run must train steps 4..8, one micro batch each"
    resumed, reference = load_log(out), load_log(full)
    assert [r["step"] for r in resumed] == list(range(1, 9))
    assert without_timing(resumed) == without_timing(reference)  # steps 4..8 trained again, bit for bit
    a, b = student_state(full), student_state(out)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["qa_outputs.weight"], student_state_init(tiny_bert_dir)["qa_outputs.weight"])


def test_resume_refuses_a_truncated_checkpoint(tiny_bert_dir, features, tmp_path):
    config = cfg(max_steps=2, alpha=0.0)
    train(tiny_bert_dir, tmp_path, config, features)
    victim = next((tmp_path / "checkpoints" / "step2").glob("*optim_states.pt"))
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    with pytest.raises(InputError, match=r"step2.*optim_states\.pt is truncated"):
        train(tiny_bert_dir, tmp_path, config, features, resume=True)


@pytest.mark.parametrize("ds_config", ["ds_configs/zero2_bf16.json", "ds_configs/zero3_bf16.json", "bf16_block"])
def test_bf16_training_saves_full_fp32_student_weights(tiny_bert_dir, features, ds_config, tmp_path):
    if ds_config == "bf16_block":  # module cast to bf16, fp32 masters only in the optimizer
        ds_config = str(tmp_path / "zero2_bf16_block.json")
        Path(ds_config).write_text(json.dumps({
            "train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": "auto",
            "gradient_clipping": "auto", "bf16": {"enabled": "auto"}, "zero_optimization": {"stage": 2}}))
    train(tiny_bert_dir, tmp_path / "out", cfg(max_steps=2, precision="bf16", ds_config=ds_config, alpha=0.0),
          features)
    assert all(map(lambda x: x == x and abs(x) < 100, losses(tmp_path / "out")))
    state = student_state(tmp_path / "out")
    w = state["qa_outputs.weight"]
    assert w.dtype == torch.float32
    assert not torch.equal(w, w.bfloat16().float()), "saved weights are bf16 values, not the fp32 masters"


def test_teacher_logits_must_align_with_the_features(tiny_bert_dir, features, teacher, tmp_path):
    logits = teacher_logits_for(teacher, features.select(range(8)))
    with pytest.raises(InputError, match="8 rows but the features have 24"):
        train(tiny_bert_dir, tmp_path, cfg(), features, teacher_logits=logits)


@pytest.mark.slow
def test_resume_after_sigkill_ends_identical_to_an_uninterrupted_run(no_dropout_bert, tmp_path):
    common = ["--model", no_dropout_bert, "--max-steps", 6, "--checkpoint-every", 2, "--rows", 24]
    killed_out = tmp_path / "killed"
    victim = subprocess.Popen([sys.executable, str(WORKER), *map(str, common), "--out", killed_out,
                               "--step-delay", "1.5"], env=worker_env(), cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        run_worker([*common, "--out", tmp_path / "full"])
        deadline = time.time() + 240
        while not (killed_out / "checkpoints" / "step2" / MARKER).is_file():
            assert victim.poll() is None, f"worker ended before its first checkpoint:\n{victim.stderr.read()[-3000:]}"
            assert time.time() < deadline, "no checkpoint within 240 s"
            time.sleep(0.2)
        victim.send_signal(signal.SIGKILL)
        victim.wait()
    finally:
        if victim.poll() is None:
            victim.kill()
    assert not (killed_out / "student").exists(), "the run finished before it was killed; nothing was tested"
    run_worker([*common, "--out", killed_out, "--resume"])

    full, resumed = load_log(tmp_path / "full"), load_log(killed_out)
    assert [r["step"] for r in resumed] == [1, 2, 3, 4, 5, 6]
    assert [r["loss"] for r in resumed] == [r["loss"] for r in full]
    a, b = student_state(tmp_path / "full"), student_state(killed_out)
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def one_rank_reference(no_dropout_bert, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("one_rank")
    run_worker(["--model", no_dropout_bert, "--out", out, "--batch-size", 8, "--max-steps", 5, "--rows", 36])
    return out


@pytest.mark.slow
@pytest.mark.parametrize("ds_config", ["ds_configs/zero2_fp32.json", "ds_configs/zero3_fp32.json"])
def test_two_ranks_log_the_same_losses_as_one_rank_with_the_same_global_batch(no_dropout_bert, one_rank_reference,
                                                                             ds_config, tmp_path):
    run_worker(["--model", no_dropout_bert, "--out", tmp_path, "--batch-size", 4, "--max-steps", 5, "--rows", 36,
                "--ds-config", ds_config], ranks=2)
    one, two = losses(one_rank_reference), losses(tmp_path)
    assert len(two) == len(one) == 5
    assert two == pytest.approx(one, abs=1e-5)
    # the saved student holds the full weights (gathered from the ZeRO-3 partitions), equal to 1 rank's up to
    # Adam's amplification of reduction-order rounding: g/sqrt(v) of a near-zero gradient can move by ~lr (1e-3)
    a, b = student_state(one_rank_reference), student_state(tmp_path)
    diffs = torch.cat([(a[k] - b[k]).abs().flatten() for k in a])
    init = student_state_init(no_dropout_bert)
    moved = torch.cat([(a[k] - init[k]).abs().flatten() for k in a])
    print(f"weights: max diff {diffs.max().item():.2e}, mean diff {diffs.mean().item():.2e}, "
          f"mean move {moved.mean().item():.2e}")
    assert diffs.max().item() < 1e-3 and diffs.mean().item() < 1e-4 * moved.mean().item(), \
        (diffs.max().item(), diffs.mean().item(), moved.mean().item())


def test_an_infinite_gradient_under_a_finite_loss_stops_naming_the_step_where_deepspeed_does_not_scan(
        tiny_bert_dir, tmp_path):
    proc = run_worker(["--model", tiny_bert_dir, "--out", tmp_path, "--max-steps", 6, "--checkpoint-every", 2,
                       "--inf-grad-at-step", 3], check=False)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "training diverged at step 3" in proc.stderr and "gradient norm is" in proc.stderr
    assert "step2 is intact" in proc.stderr


@pytest.mark.slow
def test_nan_loss_stops_naming_the_step_and_leaves_the_last_checkpoint_intact(tiny_bert_dir, tmp_path):
    from distill.checkpoints import verify_checkpoint

    proc = run_worker(["--model", tiny_bert_dir, "--out", tmp_path, "--max-steps", 6, "--checkpoint-every", 2,
                       "--nan-at-step", 4], check=False)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "training diverged at step 4" in proc.stderr
    assert "step2 is intact" in proc.stderr
    ckpt = tmp_path / "checkpoints"
    assert sorted(p.name for p in ckpt.glob("step*")) == ["step2"]
    verify_checkpoint(ckpt / "step2")
    assert [r["step"] for r in load_log(tmp_path)] == [1, 2, 3]
    assert not (tmp_path / "student").exists()


def test_cosine_schedule_follows_warmup_steps_then_decays_to_zero(tiny_bert_dir, features, tmp_path):
    import math

    config = cfg(max_steps=6, alpha=0.0, warmup_ratio=None, warmup_steps=2, lr_scheduler="cosine")
    train(tiny_bert_dir, tmp_path, config, features)
    peak = config.lr
    expected = [peak * (k / 2 if k < 2 else 0.5 * (1 + math.cos(math.pi * (k - 2) / 4))) for k in range(1, 7)]
    assert [r["lr"] for r in load_log(tmp_path)] == pytest.approx(expected, abs=1e-12)
