"""Teacher stage: fine-tune a QA teacher when asked, then cache its soft start/end logits.

Reads: a teacher model (hub id, directory or `minilm`), the features Dataset from `data.features`.
Writes, under CACHE/teacher_logits/<key>/: `shard-*.npz` while building (row ids and logits, each written
atomically, so an interrupted build resumes from the shards it finished), then `logits/` (a `datasets` Arrow table,
memory-mapped, one row per feature with `start_logits`/`end_logits`) and last `complete.json` (the
commit marker, with checksums). A directory without `complete.json` is never read as a cache.

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
import os
import shutil
from pathlib import Path

import numpy as np

from distill.errors import InputError
from distill.files import sha256_file

log = logging.getLogger("distill")

CACHE_FORMAT = 2  # 2: shards cut from the longest-first order; key holds the resolved precision
LOGIT_DTYPES = {"fp16": np.float16, "fp32": np.float32}


def cache_key(features_fingerprint: str, teacher_hash: str, dtype: str, compute_key: str) -> str:
    """`compute_key` is the resolved device and precision (precision.Compute.key), never `auto`."""
    text = json.dumps([CACHE_FORMAT, features_fingerprint, teacher_hash, dtype, compute_key])
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _atomic_savez(path: Path, **arrays) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def load_logit_cache(cache_dir: Path):
    """Open a complete cache, verifying its checksums; InputError when it is damaged."""
    from datasets import Dataset

    marker = cache_dir / "complete.json"
    info = json.loads(marker.read_text())
    table_dir = cache_dir / "logits"
    for name, expected in info["checksums"].items():
        file = table_dir / name
        if not file.is_file() or sha256_file(file) != expected:
            raise InputError(
                f"{file}: teacher logit cache is corrupt (checksum mismatch); delete {cache_dir} to rebuild it"
            )
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
    if (cache_dir / "complete.json").is_file():
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
        layout.write_text(json.dumps(wanted))
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
        _atomic_savez(shard, rows=ids, start=start.astype(np_dtype), end=end.astype(np_dtype))

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
    checksums = {p.name: sha256_file(p) for p in sorted(table_dir.iterdir()) if p.is_file()}
    marker = {"format": CACHE_FORMAT, "n_features": n, "dtype": dtype, "precision": compute.precision,
              "device": compute.device,
              "features_fingerprint": features._fingerprint, "checksums": checksums}
    tmp = cache_dir / "complete.json.tmp"
    tmp.write_text(json.dumps(marker, indent=1))
    tmp.replace(cache_dir / "complete.json")
    for i in range(n_shards):
        (cache_dir / f"shard-{i:05d}.npz").unlink(missing_ok=True)
    layout.unlink(missing_ok=True)
    log.info("teacher logits: built %s (%d features, %d forward batches)", cache_dir, n, info["forwards"])
    return load_logit_cache(cache_dir), {**info, "reused": False}
