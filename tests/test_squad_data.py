"""load_squad: formats, versions, validation errors (one line, naming file and question id), caching."""

import json

import pytest

from distill.data.squad import load_squad, squad_version, take_questions
from distill.errors import InputError


@pytest.fixture
def cache(tmp_path):
    return tmp_path / "hf-cache"


def _official(path, qas, version="1.1", context="Paris is the capital of France."):
    path.write_text(json.dumps({"version": version, "data": [
        {"title": "T", "paragraphs": [{"context": context, "qas": qas}]}]}))
    return path


def _qa(qid="q1", text="Paris", start=0, **extra):
    return {"id": qid, "question": "What is the capital?", "answers": [{"text": text, "answer_start": start}], **extra}


def _error(path, cache) -> str:
    with pytest.raises(InputError) as info:
        load_squad(path, cache_dir=cache)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_official_v1_slice_loads_one_row_per_question(dev_v1_slice, cache):
    ds = load_squad(dev_v1_slice, cache_dir=cache)
    raw = json.loads(dev_v1_slice.read_text())["data"][0]["paragraphs"]
    assert len(ds) == sum(len(p["qas"]) for p in raw)
    assert ds.column_names == ["id", "title", "context", "question", "answers", "is_impossible"]
    row = ds[0]
    assert row["id"] == raw[0]["qas"][0]["id"] and row["context"] == raw[0]["context"]
    assert row["answers"]["text"] == [a["text"] for a in raw[0]["qas"][0]["answers"]]
    assert not any(ds["is_impossible"]) and squad_version(ds) == "1.1"


def test_official_v2_slice_keeps_impossible_answers_empty(dev_v2_slice, cache):
    ds = load_squad(dev_v2_slice, cache_dir=cache)
    assert squad_version(ds) == "2.0"
    impossible = [r for r in ds if r["is_impossible"]]
    assert impossible and all(r["answers"] == {"text": [], "answer_start": []} for r in impossible)
    assert all(r["answers"]["text"] for r in ds if not r["is_impossible"])


def test_version_survives_slicing_and_map(dev_v2_slice, cache):
    ds = load_squad(dev_v2_slice, cache_dir=cache)
    answerable = ds.filter(lambda r: not r["is_impossible"])
    assert squad_version(take_questions(answerable, 2)) == "2.0"
    assert squad_version(ds.map(lambda r: {"n": len(r["question"])})) == "2.0"


def test_flat_json_list_dict_and_jsonl_give_the_same_rows(dev_v1_slice, tmp_path, cache):
    rows = load_squad(dev_v1_slice, cache_dir=cache).to_list()
    (tmp_path / "list.json").write_text(json.dumps(rows))
    (tmp_path / "dict.json").write_text(json.dumps({"data": rows}))
    (tmp_path / "rows.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    for name in ("list.json", "dict.json", "rows.jsonl"):
        ds = load_squad(tmp_path / name, cache_dir=cache)
        assert ds.to_list() == rows and squad_version(ds) == "1.1"


def test_flat_rows_without_flag_treat_empty_answers_as_v2_impossible(tmp_path, cache):
    ctx = "Paris is the capital of France."
    rows = [{"id": "a", "question": "q?", "context": ctx, "answers": {"text": ["Paris"], "answer_start": [0]}},
            {"id": "b", "question": "q?", "context": ctx, "answers": {"text": [], "answer_start": []}}]
    path = tmp_path / "hub-export.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    ds = load_squad(path, cache_dir=cache)
    assert ds["is_impossible"] == [False, True] and squad_version(ds) == "2.0"


def test_take_questions_is_the_first_n_in_file_order(dev_v1_slice, cache):
    ds = load_squad(dev_v1_slice, cache_dir=cache)
    assert take_questions(ds, 3)["id"] == ds["id"][:3]
    assert len(take_questions(ds, 10_000)) == len(ds)


def test_unchanged_file_reuses_cache_and_edited_file_gets_new_fingerprint(dev_v1_slice, cache):
    first = load_squad(dev_v1_slice, cache_dir=cache)
    again = load_squad(dev_v1_slice, cache_dir=cache)
    assert again._fingerprint == first._fingerprint and again.cache_files == first.cache_files
    data = json.loads(dev_v1_slice.read_text())
    data["data"][0]["paragraphs"][0]["qas"][0]["question"] = "edited?"
    dev_v1_slice.write_text(json.dumps(data))
    edited = load_squad(dev_v1_slice, cache_dir=cache)
    assert edited._fingerprint != first._fingerprint and edited[0]["question"] == "edited?"


def test_missing_file_is_an_input_error(tmp_path, cache):
    assert "not found" in _error(tmp_path / "nope.json", cache)


def test_malformed_json_names_line_and_column(tmp_path, cache):
    path = tmp_path / "bad.json"
    path.write_text('{"data": [\n  {"title": "T",, }\n]}')
    message = _error(path, cache)
    assert str(path) in message and "line 2 column" in message


def test_malformed_jsonl_names_the_file_line(tmp_path, cache):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"id": "a"}) + "\n\n{oops\n")
    assert "line 3 column 2" in _error(path, cache)


def test_wrong_top_level_shape(tmp_path, cache):
    path = tmp_path / "shape.json"
    path.write_text(json.dumps({"articles": []}))
    message = _error(path, cache)
    assert str(path) in message and "top-level dict" in message


def test_missing_field_is_named_with_question_id(tmp_path, cache):
    qa = _qa("q-missing")
    del qa["question"]
    message = _error(_official(tmp_path / "f.json", [qa]), cache)
    assert "q-missing" in message and "'question'" in message


def test_answer_text_not_at_answer_start(tmp_path, cache):
    message = _error(_official(tmp_path / "f.json", [_qa("q-off", "Paris", 3)]), cache)
    assert str(tmp_path / "f.json") in message and "q-off" in message and "does not match" in message


def test_duplicate_ids(tmp_path, cache):
    message = _error(_official(tmp_path / "f.json", [_qa("dup"), _qa("dup")]), cache)
    assert "dup" in message and "duplicate" in message


def test_empty_set(tmp_path, cache):
    message = _error(_official(tmp_path / "f.json", []), cache)
    assert "no questions" in message


def test_v2_flag_in_file_declared_v1(tmp_path, cache):
    qa = {"id": "q-v2", "question": "q?", "answers": [], "is_impossible": True}
    message = _error(_official(tmp_path / "f.json", [_qa(), qa], version="1.1"), cache)
    assert "q-v2" in message and "1.1" in message


def test_impossible_question_with_answers(tmp_path, cache):
    message = _error(_official(tmp_path / "f.json", [_qa("q-both", is_impossible=True)], version="v2.0"), cache)
    assert "q-both" in message and "is_impossible" in message


def test_hub_failure_is_one_line_input_error(cache):
    with pytest.raises(InputError) as info:
        load_squad("no-such-owner/no-such-squad", cache_dir=cache)
    assert "no-such-owner/no-such-squad" in str(info.value) and "\n" not in str(info.value)


def test_v2_flag_in_flat_rows_declared_v1(tmp_path, cache):
    row = {"id": "q-flat", "question": "q?", "context": "c", "answers": [], "is_impossible": True}
    path = tmp_path / "flat.json"
    path.write_text(json.dumps({"version": "1.1", "data": [row]}))
    message = _error(path, cache)
    assert "q-flat" in message and "1.1" in message
