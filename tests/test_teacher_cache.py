"""Teacher logit cache: reuse with zero forwards, invalidation, interrupted builds, corruption."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import kill_after_lines
from distill.data.features import WindowConfig, prepare_features
from distill.data.squad import load_squad
from distill.errors import InputError
from distill.models import load_qa_model, load_tokenizer
from distill.teacher import build_logit_cache, load_logit_cache

WINDOW = WindowConfig(max_seq_length=96, doc_stride=32, max_query_length=24)


@pytest.fixture
def features(dev_v1_slice, minilm_tokenizer, tmp_path):
    examples = load_squad(dev_v1_slice, cache_dir=tmp_path / "hf")
    return prepare_features(examples, minilm_tokenizer, WINDOW)


def test_second_build_reuses_cache_without_teacher_forward(features, tiny_bert_dir, tmp_path):
    teacher = load_qa_model(tiny_bert_dir)
    first, info1 = build_logit_cache(teacher, features, tmp_path / "cache", batch_size=16, shard_size=32)
    assert not info1["reused"] and info1["forwards"] > 0
    calls = []
    teacher.register_forward_hook(lambda *a: calls.append(1))
    second, info2 = build_logit_cache(teacher, features, tmp_path / "cache", batch_size=16, shard_size=32)
    assert info2["reused"] and info2["forwards"] == 0 and calls == []
    assert len(second) == len(features) == info2["n_features"]
    np.testing.assert_array_equal(np.asarray(first[3]["start_logits"]), np.asarray(second[3]["start_logits"]))


def test_cached_logits_match_a_direct_forward(features, tiny_bert_dir, tmp_path):
    teacher = load_qa_model(tiny_bert_dir)
    logits, _ = build_logit_cache(teacher, features, tmp_path / "cache", dtype="fp32", precision="fp32")
    row = features.with_format("torch")[5]
    n = int(row["attention_mask"].sum())
    with torch.no_grad():
        out = teacher(input_ids=row["input_ids"][None, :n], attention_mask=row["attention_mask"][None, :n],
                      token_type_ids=row["token_type_ids"][None, :n])
    np.testing.assert_allclose(np.asarray(logits[5]["start_logits"])[:n], out.start_logits[0].numpy(), atol=1e-5)


def test_length_sorted_batches_return_every_window_in_feature_order(features, tiny_bert_dir):
    from distill.predict import PAD_LOGIT, compute_logits

    teacher = load_qa_model(tiny_bert_dir)
    start, end = compute_logits(teacher, features, batch_size=4, precision="fp32", progress=False)
    rows = features.with_format("torch")
    lengths = [int(m.sum()) for m in rows["attention_mask"]]
    assert len(set(lengths)) > 1  # otherwise the order would not matter
    for i, n in enumerate(lengths):
        with torch.no_grad():
            out = teacher(**{k: rows[i][k][None, :n] for k in ("input_ids", "attention_mask", "token_type_ids")})
        np.testing.assert_allclose(start[i, :n], out.start_logits[0].numpy(), atol=1e-5)
        np.testing.assert_allclose(end[i, :n], out.end_logits[0].numpy(), atol=1e-5)
        assert (start[i, max(lengths):] == PAD_LOGIT).all()


def test_changing_one_teacher_parameter_invalidates_the_cache(features, tiny_bert_dir, tmp_path):
    teacher = load_qa_model(tiny_bert_dir)
    _, info1 = build_logit_cache(teacher, features, tmp_path / "cache")
    with torch.no_grad():
        teacher.qa_outputs.bias[0] += 1e-3
    _, info2 = build_logit_cache(teacher, features, tmp_path / "cache")
    assert info2["key"] != info1["key"] and not info2["reused"] and info2["forwards"] > 0


def test_dtype_and_windowing_are_part_of_the_key(features, dev_v1_slice, minilm_tokenizer, tiny_bert_dir, tmp_path):
    teacher = load_qa_model(tiny_bert_dir)
    _, a = build_logit_cache(teacher, features, tmp_path / "cache", dtype="fp16")
    _, b = build_logit_cache(teacher, features, tmp_path / "cache", dtype="fp32")
    other = prepare_features(load_squad(dev_v1_slice, cache_dir=tmp_path / "hf"), minilm_tokenizer,
                             WindowConfig(max_seq_length=128, doc_stride=32, max_query_length=24))
    _, c = build_logit_cache(teacher, other, tmp_path / "cache", dtype="fp16")
    assert len({a["key"], b["key"], c["key"]}) == 3


def test_killed_build_is_never_used_and_the_rerun_completes(dev_v1_slice, tiny_bert_dir, tmp_path):
    """SIGKILL a cache build midway: no commit marker; the next run resumes and gives a clean build's bytes."""
    script = tmp_path / "build.py"
    script.write_text(textwrap.dedent(f"""
        import logging, os, sys, time
        import distill.predict as predict
        logging.basicConfig(level=logging.INFO)
        from distill.data.features import WindowConfig, prepare_features
        from distill.data.squad import load_squad
        from distill.models import load_qa_model, load_tokenizer
        from distill.teacher import build_logit_cache
        slow = os.environ.get("SLOW_SHARDS") == "1"
        real = predict.compute_logits
        def compute(*a, **k):
            out = real(*a, **k)
            if slow:
                print("shard", flush=True)
                time.sleep(1.5)
            return out
        predict.compute_logits = compute  # teacher.py looks it up at call time
        ex = load_squad({str(dev_v1_slice)!r}, cache_dir={str(tmp_path / 'hf')!r})
        feats = prepare_features(ex, load_tokenizer({str(tiny_bert_dir)!r}),
                                 WindowConfig(max_seq_length=96, doc_stride=32, max_query_length=24))
        _, info = build_logit_cache(load_qa_model({str(tiny_bert_dir)!r}), feats, {str(tmp_path / 'cache')!r},
                                    batch_size=8, shard_size=8, progress=False)
        print("DONE", info["reused"], info["forwards"], flush=True)
    """))
    env = {**os.environ, "SLOW_SHARDS": "1"}
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=env)
    assert kill_after_lines(proc, "shard", 2) == 2, "the build never reached its second shard"
    proc.wait(timeout=60)
    cache_dirs = list((tmp_path / "cache" / "teacher_logits").iterdir())
    assert len(cache_dirs) == 1 and not (cache_dirs[0] / "complete.json").exists()
    assert list(cache_dirs[0].glob("shard-*.npz")), "finished shards are kept for resuming"

    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "DONE False" in done.stdout
    assert (cache_dirs[0] / "complete.json").is_file()
    assert "resuming an interrupted build" in done.stderr
    resumed = load_logit_cache(cache_dirs[0])
    features = prepare_features(load_squad(dev_v1_slice, cache_dir=tmp_path / "hf"), load_tokenizer(tiny_bert_dir),
                                WINDOW)
    clean, _ = build_logit_cache(load_qa_model(tiny_bert_dir), features, tmp_path / "clean", batch_size=8,
                                 progress=False)
    assert_same_bytes(resumed, clean)


def assert_same_bytes(a, b) -> None:
    for column in ("start_logits", "end_logits"):
        assert np.asarray(a[column]).tobytes() == np.asarray(b[column]).tobytes(), column


def test_cached_bytes_do_not_depend_on_the_shard_size(features, tiny_bert_dir, tmp_path):
    """Shards are whole batches of one longest-first order: same batches, same widths, same bytes."""
    teacher = load_qa_model(tiny_bert_dir)
    one, _ = build_logit_cache(teacher, features, tmp_path / "one", dtype="fp32", precision="fp32", batch_size=16,
                               shard_size=4096, progress=False)
    many, info = build_logit_cache(teacher, features, tmp_path / "many", dtype="fp32", precision="fp32",
                                   batch_size=16, shard_size=8, progress=False)
    assert info["forwards"] == -(-len(features) // 16) > 2  # shard_size 8 was rounded up to whole batches of 16
    assert_same_bytes(one, many)


def test_truncated_cache_file_is_refused_with_a_clear_message(features, tiny_bert_dir, tmp_path):
    teacher = load_qa_model(tiny_bert_dir)
    _, info = build_logit_cache(teacher, features, tmp_path / "cache")
    arrow = next((Path(info["dir"]) / "logits").glob("*.arrow"))
    arrow.write_bytes(arrow.read_bytes()[: arrow.stat().st_size // 2])
    with pytest.raises(InputError, match=rf"logits/{arrow.name} is truncated .*; delete .* to rebuild it"):
        build_logit_cache(teacher, features, tmp_path / "cache")


def test_altered_cache_file_of_the_same_size_is_refused(features, tiny_bert_dir, tmp_path):
    teacher = load_qa_model(tiny_bert_dir)
    _, info = build_logit_cache(teacher, features, tmp_path / "cache")
    arrow = next((Path(info["dir"]) / "logits").glob("*.arrow"))
    data = bytearray(arrow.read_bytes())
    data[-1] ^= 0xFF
    arrow.write_bytes(bytes(data))
    with pytest.raises(InputError, match=rf"logits/{arrow.name} is corrupt \(sha256 differs\)"):
        build_logit_cache(teacher, features, tmp_path / "cache")
