"""Teacher stage: fine-tune a QA teacher when asked, then cache its soft start/end logits.

Reads: a teacher model (hub id, directory or `minilm`), the features Dataset from `data.features`.
Writes, under CACHE/teachers/<key>/: the fine-tuned teacher (HF format, with its tokenizer and its
train_log.jsonl), trained in
CACHE/teachers/<key>.work/ by `train.train_student` (CE only) and renamed into place when finished; the key
hashes the base weights, the features' fingerprint and the fine-tuning settings, with precision as resolved.
Writes, under CACHE/teacher_eval/<key>/: the teacher's score and predictions on the eval windows
(`evaluate_teacher`), so runs that change only the student never score the same teacher twice.
Writes, under CACHE/teacher_logits/<key>/: `shard-*.npz` while building (row ids and logits, each written
atomically, so an interrupted build resumes from the shards it finished), then `logits/` (a `datasets` Arrow table,
memory-mapped, one row per feature with `start_logits`/`end_logits`) and last `complete.json` (the
commit marker of distill.files, with sizes and sha256 of the table's files). A directory without `complete.json` is never read as a cache.

The cached logits are RAW (unmasked): question, special and padding positions keep whatever the
teacher produced (PAD_LOGIT beyond each batch's longest sequence). The KD loss masks them, so
changing the masking rule never requires rebuilding the cache.

The key hashes everything that changes the numbers: the features' fingerprint (data, tokenizer,
windowing), the teacher weights (sha256 over every tensor, not the name), the stored dtype and the
device and precision the teacher ran in, as resolved (a bf16 cache is never read by an fp32 run).

Shards are cut from the longest-first order that compute_logits batches in, on batch boundaries, so the
cached numbers do not depend on the shard size or on where an interrupted build stopped. The finished shards
are put back in feature order in memory (2 x features x max_seq_length values of the stored dtype: ~136 MB
for all of train-v1.1 at seq 384 in fp16) before the table is written.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

import numpy as np

from distill.distributed import barrier, launcher_rank
from distill.errors import InputError
from distill.files import atomic_open, is_committed, verify_marker, write_json, write_marker

log = logging.getLogger("distill")

# 2: shards cut from the longest-first order; key holds the resolved precision. 3: distill.files marker
CACHE_FORMAT = 3
EVAL_FORMAT = 1
LOGIT_DTYPES = {"fp16": np.float16, "fp32": np.float32}


def cache_key(features_fingerprint: str, teacher_hash: str, dtype: str, compute_key: str) -> str:
    """`compute_key` is the resolved device and precision (precision.Compute.key), never `auto`."""
    text = json.dumps([CACHE_FORMAT, features_fingerprint, teacher_hash, dtype, compute_key])
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def settings_hash(obj) -> str:
    """Short sha256 of a JSON-able object (sorted keys): the fine-tune cache key."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:20]


# settings added after teachers were first cached: at these values they train exactly as before,
# so they stay out of the key
_KEY_NEUTRAL = {"group_by_length": False, "hidden_weight": 0.0, "hidden_layers": None, "attention_dropout": None,
                "lr_scheduler": "linear", "adam_betas": [0.9, 0.999], "adam_epsilon": 1e-8, "warmup_steps": None}


def finetune_key(cfg, weights: str, fingerprint: str) -> str:
    """Base weights, features and settings, with `precision` as resolved here (device and dtype, never auto)."""
    from distill.models import training_attention
    from distill.precision import resolve

    # train_questions stays out: the features' fingerprint already names the questions
    settings = {k: v for k, v in cfg.model_dump(mode="json", exclude={"train_questions"}).items()
                if not (k in _KEY_NEUTRAL and v == _KEY_NEUTRAL[k])}
    compute = resolve(cfg.precision, quiet=True)
    settings["precision"] = compute.key
    # the kernel changes rounding and dropout draws, so it is keyed as resolved; sdpa (transformers' default, so
    # every teacher cached before this setting existed) stays out of the key
    kernel = training_attention(settings.pop("attn_implementation"), compute.device, compute.precision)
    if kernel not in (None, "sdpa"):
        settings["attn_implementation"] = kernel
    return settings_hash([weights, fingerprint, settings])


def finetune_teacher(cfg, teacher, tokenizer, features, cache_root: Path) -> Path:
    """Fine-tune a base encoder on the training features (CE only); reused when already done."""
    from distill.models import weights_hash
    from distill.train import train_student

    key = finetune_key(cfg, weights_hash(teacher), features._fingerprint)
    final = Path(cache_root) / "teachers" / key
    if (final / "config.json").is_file():
        log.info("teacher fine-tune: reusing %s", final)
        return final
    work = Path(cache_root) / "teachers" / f"{key}.work"
    log.info("teacher fine-tune: training on %d features -> %s", len(features), final)
    student_dir = train_student(cfg, teacher, tokenizer, features, work, resume=(work / "checkpoints").exists())
    if launcher_rank()[0] == 0:
        tmp = final.with_name(final.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(student_dir, tmp)
        shutil.copy2(work / "train_log.jsonl", tmp / "train_log.jsonl")  # the model card's training record
        tmp.rename(final)
        shutil.rmtree(work, ignore_errors=True)
    barrier()
    return final


def load_logit_cache(cache_dir: Path):
    """Open a complete cache, verifying its checksums; InputError when it is damaged."""
    from datasets import Dataset

    info = verify_marker(cache_dir, what="teacher logit cache", fix=f"delete {cache_dir} to rebuild it")
    table_dir = cache_dir / "logits"
    ds = Dataset.load_from_disk(str(table_dir))
    if len(ds) != info["n_features"]:
        raise InputError(f"{table_dir}: teacher logit cache has {len(ds)} rows, expected {info['n_features']}")
    return ds


def build_logit_cache(teacher, features, cache_root: Path, *, dtype: str = "fp16", precision: str = "auto",
                      batch_size: int = 32, shard_size: int = 1024, progress: bool = True):
    """Return (logits Dataset aligned with `features`, info dict with key/reused/forwards/dir)."""
    from datasets import Dataset, Features, Sequence, Value

    from distill.data.features import window_lengths
    from distill.models import weights_hash
    from distill.precision import resolve
    from distill.predict import compute_logits

    if dtype not in LOGIT_DTYPES:
        raise InputError(f"teacher.logits_dtype: {dtype!r} must be one of {sorted(LOGIT_DTYPES)}")
    compute = resolve(precision, what="teacher.precision")
    key = cache_key(features._fingerprint, weights_hash(teacher), dtype, compute.key)
    cache_dir = Path(cache_root) / "teacher_logits" / key
    info = {"key": key, "dir": str(cache_dir), "n_features": len(features), "forwards": 0}
    if is_committed(cache_dir):
        ds = load_logit_cache(cache_dir)
        log.info("teacher logits: cache hit %s (%d features), no teacher forward", cache_dir, len(ds))
        return ds, {**info, "reused": True}

    cache_dir.mkdir(parents=True, exist_ok=True)
    np_dtype = LOGIT_DTYPES[dtype]
    n = len(features)
    # Shards are whole batches of the one longest-first order compute_logits uses, so every batch (rows and
    # padded width) and hence every logit is the same whatever the shard size or where a build was killed.
    order = np.argsort(-window_lengths(features), kind="stable")
    shard_rows = -(-shard_size // batch_size) * batch_size
    n_shards = (n + shard_rows - 1) // shard_rows
    # Shards of an interrupted build are reused only if they were cut the same way.
    layout = cache_dir / "shards.json"
    wanted = {"shard_rows": shard_rows, "batch_size": batch_size, "n_features": n}
    if not layout.is_file() or json.loads(layout.read_text()) != wanted:
        for stale in cache_dir.glob("shard-*.npz"):
            stale.unlink()
        write_json(layout, wanted)
    done = sum((cache_dir / f"shard-{i:05d}.npz").is_file() for i in range(n_shards))
    if done:
        log.info("teacher logits: resuming an interrupted build, %d/%d shards already done", done, n_shards)
    for i in range(n_shards):
        shard = cache_dir / f"shard-{i:05d}.npz"
        if shard.is_file():
            continue
        ids = order[i * shard_rows:(i + 1) * shard_rows]
        start, end = compute_logits(teacher, features.select(ids), batch_size=batch_size,
                                    precision=compute.precision, progress=progress,
                                    desc=f"teacher logits {i + 1}/{n_shards}")
        info["forwards"] += (len(ids) + batch_size - 1) // batch_size
        with atomic_open(shard, "wb") as f:
            np.savez(f, rows=ids, start=start.astype(np_dtype), end=end.astype(np_dtype))

    seq = len(features[0]["input_ids"]) if n else 0
    start_all, end_all = np.empty((n, seq), np_dtype), np.empty((n, seq), np_dtype)
    for i in range(n_shards):
        with np.load(cache_dir / f"shard-{i:05d}.npz") as z:
            start_all[z["rows"]], end_all[z["rows"]] = z["start"], z["end"]

    def rows():
        for s, e in zip(start_all, end_all):
            yield {"start_logits": s, "end_logits": e}

    value = "float16" if dtype == "fp16" else "float32"
    schema = Features({"start_logits": Sequence(Value(value)), "end_logits": Sequence(Value(value))})
    table_dir = cache_dir / "logits"
    shutil.rmtree(table_dir, ignore_errors=True)
    ds = Dataset.from_generator(rows, features=schema, cache_dir=str(cache_dir / ".build"))
    ds.save_to_disk(str(table_dir))
    del ds
    shutil.rmtree(cache_dir / ".build", ignore_errors=True)
    write_marker(cache_dir, covers=table_dir, format=CACHE_FORMAT, n_features=n, dtype=dtype,
                 precision=compute.precision, device=compute.device, features_fingerprint=features._fingerprint)
    for i in range(n_shards):
        (cache_dir / f"shard-{i:05d}.npz").unlink(missing_ok=True)
    layout.unlink(missing_ok=True)
    log.info("teacher logits: built %s (%d features, %d forward batches)", cache_dir, n, info["forwards"])
    return load_logit_cache(cache_dir), {**info, "reused": False}


def evaluate_teacher(teacher, examples, features, out_dir: Path, cache_root: Path, *, precision: str,
                     **settings) -> tuple[dict, bool]:
    """(score, reused): `predict.evaluate` of the teacher, done once per weights, eval windows and settings.

    Copies teacher_predictions.json (and teacher_na_probs.json for v2) into `out_dir` either way.
    """
    from distill.models import weights_hash
    from distill.precision import resolve
    from distill.predict import evaluate

    compute = resolve(precision, quiet=True)
    key = settings_hash([EVAL_FORMAT, weights_hash(teacher), features._fingerprint, compute.key, settings])
    cached = Path(cache_root) / "teacher_eval" / key
    reused = is_committed(cached)
    if reused:
        verify_marker(cached, what="teacher eval cache", fix=f"delete {cached} to score the teacher again")
        log.info("eval teacher: reusing the score and predictions in %s", cached)
    else:
        tmp = cached.with_name(key + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        score = evaluate(teacher, examples, features, out_dir=tmp, prefix="teacher_", precision=compute.precision,
                         desc="eval teacher", **settings)
        write_json(tmp / "score.json", score)
        write_marker(tmp, format=EVAL_FORMAT, n_features=len(features), precision=compute.precision,
                     device=compute.device, features_fingerprint=features._fingerprint)
        shutil.rmtree(cached, ignore_errors=True)
        tmp.rename(cached)
    for f in cached.glob("teacher_*.json"):
        shutil.copy2(f, Path(out_dir) / f.name)
    return json.loads((cached / "score.json").read_text()), reused
