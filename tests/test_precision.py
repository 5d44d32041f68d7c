"""One resolver for device and precision: the CPU kind decides `auto`, and every stage and cache key follows it."""

import logging

import pytest
import torch

import distill.precision as precision
from distill.ds_config import build_ds_config
from distill.errors import InputError
from distill.precision import cpu_has_native_bf16, resolve
from distill.recipe import TrainConfig


@pytest.fixture
def cpu(monkeypatch):
    """cpu(native=True/False): pretend this CPU has (or lacks) native bf16; each choice is logged afresh."""
    monkeypatch.setattr(precision, "_logged", set())

    def set_kind(native: bool):
        monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: native)

    return set_kind


def test_auto_is_bf16_on_a_cpu_with_native_bf16_and_says_why(cpu, caplog):
    cpu(True)
    with caplog.at_level(logging.INFO, logger="distill"):
        assert resolve("auto", "cpu").precision == "bf16"
    assert "precision: bf16 on cpu (auto on a CPU with native bf16" in caplog.text


def test_auto_is_fp32_on_a_cpu_without_native_bf16_and_says_why(cpu, caplog):
    cpu(False)
    with caplog.at_level(logging.INFO, logger="distill"):
        got = resolve("auto", "cpu", what="train.precision")
    assert (got.precision, got.dtype, got.key) == ("fp32", torch.float32, "cpu-fp32")
    assert "train.precision: fp32 on cpu (auto on a CPU without native bf16, where bf16 is emulated" in caplog.text


def test_auto_is_fp16_on_cuda_whatever_the_cpu(cpu):
    cpu(False)
    assert resolve("auto", "cuda").precision == "fp16"
    assert resolve("auto", "cuda:1").key == "cuda-fp16"


def test_explicit_bf16_is_honoured_on_any_cpu_with_a_warning_where_it_is_emulated(cpu, caplog):
    cpu(False)
    with caplog.at_level(logging.WARNING, logger="distill"):
        assert resolve("bf16", "cpu").precision == "bf16"
    assert "emulated" in caplog.text


def test_fp16_on_cpu_and_unknown_names_are_one_line_input_errors(cpu):
    cpu(True)
    with pytest.raises(InputError, match="eval.precision fp16 needs a CUDA GPU") as err:
        resolve("fp16", "cpu", what="eval.precision")
    assert "\n" not in str(err.value)
    with pytest.raises(InputError, match="'fp8': expected one of auto, fp32, bf16, fp16"):
        resolve("fp8", "cpu")


def test_native_bf16_detection_agrees_with_the_cpu_flags():
    flags = precision._cpuinfo_flags()
    if not flags:
        pytest.fail("/proc/cpuinfo has no flags line on this Linux machine")
    assert cpu_has_native_bf16() == bool(flags & precision.NATIVE_BF16_FLAGS)


@pytest.mark.parametrize("native, enabled", [(True, True), (False, False)])
def test_training_config_follows_the_cpu_kind(cpu, native, enabled):
    cpu(native)
    ds = build_ds_config(TrainConfig(precision="auto", ds_config="ds_configs/zero2_bf16.json"), device="cpu")
    assert ds["bf16"]["enabled"] is enabled


@pytest.mark.parametrize("native, dtype", [(True, torch.bfloat16), (False, torch.float32)])
def test_inference_follows_the_cpu_kind(cpu, tiny_bert_dir, dev_v1_slice, minilm_tokenizer, native, dtype):
    from distill.data.features import WindowConfig, prepare_features
    from distill.data.squad import load_squad
    from distill.models import load_qa_model
    from distill.predict import compute_logits

    cpu(native)
    features = prepare_features(load_squad(dev_v1_slice), minilm_tokenizer, WindowConfig(max_seq_length=64,
                                                                                         doc_stride=16,
                                                                                         max_query_length=16))
    model = load_qa_model(tiny_bert_dir)
    seen = []
    model.qa_outputs.register_forward_hook(lambda mod, args, out: seen.append(out.dtype))
    compute_logits(model, features.select(range(4)), batch_size=4, precision="auto", device="cpu", progress=False)
    assert seen == [dtype]


def test_logit_cache_key_holds_the_resolved_precision(cpu, tiny_bert_dir, dev_v1_slice, minilm_tokenizer, tmp_path):
    from distill.data.features import WindowConfig, prepare_features
    from distill.data.squad import load_squad
    from distill.models import load_qa_model, weights_hash
    from distill.teacher import build_logit_cache, cache_key

    features = prepare_features(load_squad(dev_v1_slice), minilm_tokenizer, WindowConfig(max_seq_length=64,
                                                                                         doc_stride=16,
                                                                                         max_query_length=16))
    features = features.select(range(8))
    teacher = load_qa_model(tiny_bert_dir)
    cpu(False)
    _, auto_plain = build_logit_cache(teacher, features, tmp_path, precision="auto", progress=False)
    _, fp32 = build_logit_cache(teacher, features, tmp_path, precision="fp32", progress=False)
    assert auto_plain["key"] == cache_key(features._fingerprint, weights_hash(teacher), "fp16", "cpu-fp32")
    assert fp32["reused"] and fp32["key"] == auto_plain["key"]  # auto meant fp32 here: the same numbers
    cpu(True)
    _, auto_native = build_logit_cache(teacher, features, tmp_path, precision="auto", progress=False)
    assert auto_native["key"] != auto_plain["key"] and not auto_native["reused"]


def test_teacher_finetune_key_holds_the_resolved_precision(cpu):
    from distill.recipe import FinetuneConfig
    from distill.teacher import finetune_key

    cpu(False)
    plain = finetune_key(FinetuneConfig(precision="auto"), "w", "f")
    assert plain == finetune_key(FinetuneConfig(precision="fp32"), "w", "f")
    cpu(True)
    assert finetune_key(FinetuneConfig(precision="auto"), "w", "f") != plain
    assert finetune_key(FinetuneConfig(precision="auto"), "w", "f") == finetune_key(FinetuneConfig(precision="bf16"),
                                                                                  "w", "f")


def test_teacher_finetune_key_holds_the_resolved_attention_kernel_and_sdpa_keeps_old_keys(cpu):
    from distill.recipe import FinetuneConfig
    from distill.teacher import finetune_key

    key = lambda **kw: finetune_key(FinetuneConfig(**kw), "w", "f")
    cpu(False)  # fp32: auto keeps the model's own kernel
    assert key(attn_implementation="auto") == key(attn_implementation="sdpa") != key(attn_implementation="eager")
    cpu(True)  # bf16: auto trains with eager
    assert key(attn_implementation="auto") == key(attn_implementation="eager") != key(attn_implementation="sdpa")
