"""SQuAD examples: one row per question.

Reads: an official nested SQuAD JSON file (v1.1 or v2.0), a flat JSON file (a list of rows or
{"data": [rows]}), a JSONL file of rows, or a `datasets` hub id ("owner/name", e.g. rajpurkar/squad_v2).
Writes: an Arrow file in the datasets cache (HF_DATASETS_CACHE, or `cache_dir`) via
`Dataset.from_generator`, keyed on the file's path and sha256, so an unchanged file reuses it (and
every later `.map` is fingerprint-cached on disk) while an edited file gets a new fingerprint.

Columns: id, title, context, question, answers {text: list[str], answer_start: list[int]}, is_impossible.

The SQuAD version is recorded in `ds.info.description` as "squad-version: 1.1|2.0". Official files:
their declared "version", else "2.0" when questions carry `is_impossible` keys. Flat rows and hub data:
a declared {"version", "data"} wins, else "2.0" when some question is impossible (is_impossible true, or
no answers and no is_impossible key, as in rajpurkar/squad_v2), so re-loading an export of v1.1 rows
with an all-false is_impossible column stays "1.1". `info` survives `select`/`map`/`filter`, so
`squad_version` works on slices; datasets built elsewhere fall back to looking at the rows.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Iterator

from distill.errors import InputError

VERSION_TAG = "squad-version: "
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_FILE_SUFFIXES = (".json", ".jsonl", ".gz")


def _features():
    from datasets import Features, List, Value

    return Features(
        {
            "id": Value("string"),
            "title": Value("string"),
            "context": Value("string"),
            "question": Value("string"),
            "answers": {"text": List(Value("string")), "answer_start": List(Value("int32"))},
            "is_impossible": Value("bool"),
        }
    )


def _one_line(text: str, limit: int = 80) -> str:
    text = repr(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _decode_json(path: Path, text: str, *, line_offset: int = 0) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(
            f"{path}: malformed JSON at line {err.lineno + line_offset} column {err.colno}: {err.msg}"
        ) from None


def _require(path: Path, obj: Any, field: str, where: str) -> Any:
    if not isinstance(obj, dict) or field not in obj:
        raise InputError(f"{path}: {where}: missing field '{field}'")
    return obj[field]


def _normalise_answers(path: Path, qid: str, answers: Any) -> tuple[list[str], list[int]]:
    """Official answers are a list of {text, answer_start}; hub/flat rows may use {text: [...], answer_start: [...]}."""
    where = f"question {qid}"
    if isinstance(answers, dict):
        texts = _require(path, answers, "text", f"{where}: answers")
        starts = _require(path, answers, "answer_start", f"{where}: answers")
        if not isinstance(texts, list) or not isinstance(starts, list) or len(texts) != len(starts):
            raise InputError(f"{path}: {where}: answers.text and answers.answer_start must be lists of equal length")
        pairs = list(zip(texts, starts))
    elif isinstance(answers, list):
        pairs = [
            (_require(path, a, "text", f"{where}: answers[{i}]"), _require(path, a, "answer_start", f"{where}: answers[{i}]"))
            for i, a in enumerate(answers)
        ]
    else:
        raise InputError(f"{path}: {where}: 'answers' must be a list of {{text, answer_start}}")
    for text, start in pairs:
        if not isinstance(text, str) or isinstance(start, bool) or not isinstance(start, int):
            raise InputError(f"{path}: {where}: answer text must be a string and answer_start an integer")
    return [t for t, _ in pairs], [s for _, s in pairs]


def _row(path: Path, raw: Any, title: str | None, context: str | None, where: str, labelled: bool = True
         ) -> tuple[dict, bool]:
    """Validate one question; returns the row and whether it carried an is_impossible key.

    Unlabelled (a transfer set): answers and is_impossible are ignored and an id may be missing."""
    if not labelled and isinstance(raw, dict) and "id" not in raw:
        raw = {**raw, "id": where.replace(" ", "")}
    qid = _require(path, raw, "id", where)
    if not isinstance(qid, str):
        qid = str(qid)
    where = f"question {qid}"
    question = _require(path, raw, "question", where)
    if context is None:
        context = _require(path, raw, "context", where)
        title = raw.get("title", "")
    if not isinstance(question, str) or not isinstance(context, str):
        raise InputError(f"{path}: {where}: 'question' and 'context' must be strings")
    if not labelled:
        return {"id": qid, "title": str(title if title is not None else raw.get("title", "")), "context": context,
                "question": question, "answers": {"text": [], "answer_start": []}, "is_impossible": False}, False
    has_flag = "is_impossible" in raw
    impossible = raw.get("is_impossible", False)
    if not isinstance(impossible, bool):
        raise InputError(f"{path}: {where}: 'is_impossible' must be true or false")
    answers = raw.get("answers", [] if impossible else None)
    if answers is None:
        raise InputError(f"{path}: {where}: missing field 'answers'")
    texts, starts = _normalise_answers(path, qid, answers)
    if impossible and texts:
        raise InputError(f"{path}: {where}: is_impossible is true but it has {len(texts)} answer(s)")
    for text, start in zip(texts, starts):
        found = context[start : start + len(text)] if start >= 0 else ""
        if found != text:
            raise InputError(
                f"{path}: {where}: answer {_one_line(text)} does not match context[{start}:{start + len(text)}]"
                f" = {_one_line(found)}"
            )
    row = {
        "id": qid,
        "title": str(title or ""),
        "context": context,
        "question": question,
        "answers": {"text": texts, "answer_start": starts},
        "is_impossible": impossible,
    }
    return row, has_flag


def _official_rows(path: Path, data: dict, labelled: bool = True) -> tuple[list[dict], str]:
    declared = str(data.get("version", "")).lstrip("v")
    articles = data["data"]
    rows, flagged = [], False
    for a, article in enumerate(articles):
        title = _require(path, article, "title", f"data[{a}]")
        paragraphs = _require(path, article, "paragraphs", f"article {title!r}")
        for p, para in enumerate(paragraphs):
            where = f"article {title!r} paragraph {p}"
            context = _require(path, para, "context", where)
            for q, qa in enumerate(_require(path, para, "qas", where)):
                row, has_flag = _row(path, qa, title, context, f"{where} qas[{q}]", labelled)
                flagged |= has_flag
                if row["is_impossible"] and declared == "1.1":
                    raise InputError(
                        f"{path}: question {row['id']}: is_impossible is a SQuAD v2.0 flag but the file declares"
                        ' "version": "1.1"'
                    )
                if labelled and not row["answers"]["text"] and not row["is_impossible"]:
                    raise InputError(
                        f"{path}: question {row['id']}: no answers and not marked is_impossible"
                    )
                rows.append(row)
    version = "2.0" if declared.startswith("2") or (declared != "1.1" and flagged) else "1.1"
    return rows, version


def _flat_rows(path: Path, items: list, *, line_numbers: list[int] | None = None, declared: str = "",
               labelled: bool = True) -> tuple[list[dict], str]:
    rows, v2 = [], False
    for i, item in enumerate(items):
        where = f"line {line_numbers[i]}" if line_numbers else f"row {i}"
        if not isinstance(item, dict):
            raise InputError(f"{path}: {where}: expected an object with id/question/context/answers")
        row, has_flag = _row(path, item, None, None, where, labelled)
        if not labelled:
            rows.append(row)
            continue
        if not has_flag:
            # Hub-style v2 rows (rajpurkar/squad_v2 exports) mark unanswerable questions only by empty answers.
            row["is_impossible"] = not row["answers"]["text"]
        elif not row["is_impossible"] and not row["answers"]["text"]:
            raise InputError(f"{path}: question {row['id']}: no answers and is_impossible is false")
        if row["is_impossible"] and declared == "1.1":
            raise InputError(f"{path}: question {row['id']}: unanswerable (SQuAD v2.0) but the file declares version 1.1")
        v2 |= row["is_impossible"]
        rows.append(row)
    if declared:
        return rows, "2.0" if declared.startswith("2") else "1.1"
    # Flat rows carry no version; an all-false is_impossible column (e.g. our own export of v1.1) stays 1.1.
    return rows, "2.0" if v2 else "1.1"


def read_squad_file(path: str | os.PathLike, *, labelled: bool = True) -> tuple[list[dict], str, str]:
    """Parse and validate a SQuAD file. Returns (rows, version, sha256 of the bytes).

    labelled=False reads a transfer set: question/context rows (or any SQuAD file) whose answers are ignored."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: SQuAD file not found")
    raw = path.read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise InputError(f"{path}: not UTF-8 text (byte {err.start})") from None
    if path.suffix == ".jsonl":
        items, lines = [], []
        for n, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                items.append(_decode_json(path, line, line_offset=n - 1))
                lines.append(n)
        rows, version = _flat_rows(path, items, line_numbers=lines, labelled=labelled)
    else:
        data = _decode_json(path, text)
        if isinstance(data, dict) and isinstance(data.get("data"), list):
            nested = any(isinstance(a, dict) and "paragraphs" in a for a in data["data"])
            rows, version = _official_rows(path, data, labelled) if nested else _flat_rows(
                path, data["data"], declared=str(data.get("version", "")).lstrip("v"), labelled=labelled
            )
        elif isinstance(data, list):
            rows, version = _flat_rows(path, data, labelled=labelled)
        else:
            raise InputError(
                f"{path}: expected the official SQuAD layout {{\"data\": [articles]}}, a list of rows or"
                f" {{\"data\": [rows]}}; got a top-level {type(data).__name__}"
                + (f" with keys {sorted(data)[:5]}" if isinstance(data, dict) else "")
            )
    if not rows:
        raise InputError(f"{path}: no questions found")
    seen: set[str] = set()
    for row in rows:
        if row["id"] in seen:
            raise InputError(f"{path}: question {row['id']}: duplicate id")
        seen.add(row["id"])
    return rows, version, digest


def _generate(path: str, sha256: str, labelled: bool = True) -> Iterator[dict]:
    # sha256 only keys the datasets cache (it is part of gen_kwargs); runs only on a cache miss.
    rows, _, _ = read_squad_file(path, labelled=labelled)
    yield from rows


def _tag_version(ds, version: str):
    ds.info.description = f"{VERSION_TAG}{version}"
    return ds


def _looks_like_hub_id(text: str) -> bool:
    return bool(_HUB_ID.match(text)) and not text.endswith(_FILE_SUFFIXES)


def _load_hub(source: str, split: str, cache_dir: str | None):
    import datasets

    try:
        ds = datasets.load_dataset(source, split=split, cache_dir=cache_dir)
    except Exception as err:  # noqa: BLE001 - hub/network/format errors all become one user-facing line
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(f"{source}: cannot load dataset split '{split}' from the hub: {first}") from None
    missing = [c for c in ("id", "context", "question", "answers") if c not in ds.column_names]
    if missing:
        raise InputError(f"{source}: not a SQuAD-style dataset (missing column(s) {', '.join(missing)})")
    if len(ds) == 0:
        raise InputError(f"{source}: split '{split}' has no questions")
    if "is_impossible" not in ds.column_names:
        ds = ds.map(lambda a: {"is_impossible": [not t["text"] for t in a]}, input_columns="answers", batched=True)
    if "title" not in ds.column_names:
        ds = ds.add_column("title", [""] * len(ds))
    ds = ds.select_columns(list(_features())).cast(_features())
    version = "2.0" if "v2" in source.lower() or any(ds["is_impossible"]) else "1.1"
    return _tag_version(ds, version)


def load_squad(source: str | os.PathLike, *, split: str = "validation", cache_dir: str | os.PathLike | None = None,
               labelled: bool = True):
    """Load SQuAD questions from a file or hub id into a disk-backed `datasets.Dataset` (see module doc).

    labelled=False: a transfer set, whose answers are ignored (every row has none, is_impossible false)."""
    from datasets import Dataset

    text = str(source)
    path = Path(text).expanduser()
    if not path.exists() and _looks_like_hub_id(text):
        ds = _load_hub(text, split, None if cache_dir is None else str(cache_dir))
        return ds if labelled else unlabel(ds)
    if path.is_dir():
        raise InputError(f"{path}: is a directory, expected a SQuAD .json or .jsonl file")
    rows, version, digest = read_squad_file(path, labelled=labelled)
    ds = Dataset.from_generator(
        _generate,
        features=_features(),
        gen_kwargs={"path": str(path.resolve()), "sha256": digest, **({} if labelled else {"labelled": False})},
        cache_dir=None if cache_dir is None else str(cache_dir),
        split="validation" if split is None else split,
    )
    if len(ds) != len(rows):  # a stale cache entry could only come from a hash collision or a bug
        raise InputError(f"{path}: cached dataset has {len(ds)} rows, file has {len(rows)}; clear the datasets cache")
    return _tag_version(ds, version)


def squad_version(ds) -> str:
    """"1.1" or "2.0" as recorded by `load_squad`; otherwise "2.0" when any question is impossible."""
    description = ds.info.description or ""
    if description.startswith(VERSION_TAG):
        return description[len(VERSION_TAG) :].strip()
    if "is_impossible" in ds.column_names:
        return "2.0" if any(ds["is_impossible"]) else "1.1"
    return "2.0" if any(not a["text"] for a in ds["answers"]) else "1.1"


def take_questions(ds, n: int | None):
    """The first `n` questions in file order (all when n is None or larger than the set)."""
    if n is None or n >= len(ds):
        return ds
    if n < 1:
        raise InputError(f"number of questions must be positive, got {n}")
    return ds.select(range(n))


def take_articles(ds, span: tuple[float, float] | None):
    """The questions of the articles in [lo, hi) of the article list (fractions, in file order).

    A fixed split by article: no article (and so no context) is on both sides of, e.g., [0, 0.8] / [0.8, 1].
    """
    if span is None:
        return ds
    titles = list(dict.fromkeys(ds["title"]))  # first-appearance order
    lo, hi = round(span[0] * len(titles)), round(span[1] * len(titles))
    keep = set(titles[lo:hi])
    if not keep:
        raise InputError(f"article span {list(span)} selects none of the {len(titles)} articles")
    return ds.select([i for i, t in enumerate(ds["title"]) if t in keep])


def unlabel(ds):
    """The same questions with their answers dropped (a transfer set's rows)."""
    return ds.map(lambda q: {"answers": {"text": [], "answer_start": []}, "is_impossible": False},
                  features=ds.features, desc="Dropping answers")


def drop_seen(ds, ids: set[str], contexts: set[str]):
    """The questions whose id is not in `ids` and whose context is not in `contexts`.

    A transfer set never repeats a labelled or evaluated question, nor asks about an evaluated paragraph."""
    keep = [i for i, (qid, ctx) in enumerate(zip(ds["id"], ds["context"])) if qid not in ids and ctx not in contexts]
    return ds if len(keep) == len(ds) else ds.select(keep)
