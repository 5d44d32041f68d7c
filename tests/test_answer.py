"""`distill answer`: the answer `distill eval` would give, with offsets and a probability, for one or many questions."""

import json

from typer.testing import CliRunner

from conftest import write_squad_slice
from distill.cli import app


def _questions(path, n):
    data = json.loads(path.read_text())
    return [{"id": qa["id"], "question": qa["question"], "context": p["context"]}
            for a in data["data"] for p in a["paragraphs"] for qa in p["qas"]][:n]


def test_answers_match_what_eval_predicts_and_point_into_the_context(tmp_path, squad_dir, tiny_bert_dir):
    dev = write_squad_slice(squad_dir / "dev-v1.1.json", tmp_path / "dev.json", n_paragraphs=2)
    runner = CliRunner()
    window = ["--max-seq-length", "96", "--doc-stride", "32", "--max-query-length", "24"]
    result = runner.invoke(app, ["eval", str(tiny_bert_dir), str(dev), "--out", str(tmp_path / "ev"),
                                 "--precision", "fp32", *window])
    assert result.exit_code == 0, result.output
    predicted = json.loads((tmp_path / "ev" / "predictions.json").read_text())
    items = _questions(dev, 6)
    batch = tmp_path / "q.jsonl"
    batch.write_text("".join(json.dumps(i) + "\n" for i in items))
    result = runner.invoke(app, ["answer", str(tiny_bert_dir), "--jsonl", str(batch), "--precision", "fp32", *window])
    assert result.exit_code == 0, result.output
    answers = [json.loads(line) for line in result.stdout.splitlines()]
    assert [a["id"] for a in answers] == [i["id"] for i in items]
    for item, a in zip(items, answers):
        assert a["answer"] == predicted[item["id"]] == item["context"][a["start"]:a["end"]]
        assert 0.0 <= a["score"] <= 1.0

    one = items[0]
    result = runner.invoke(app, ["answer", str(tiny_bert_dir), "--question", one["question"], "--context",
                                 one["context"], "--precision", "fp32", *window])
    assert result.exit_code == 0, result.output
    single = json.loads(result.stdout)
    assert single == {k: answers[0][k] for k in ("answer", "score", "start", "end")}


def test_a_no_answer_threshold_lets_a_model_decline(tmp_path, tiny_bert_dir):
    from distill.answer import answer

    got = answer(str(tiny_bert_dir), "Who wrote it?", "Victor Hugo wrote Les Miserables.", precision="fp32",
                 null_threshold=-1e9)  # any null score beats the best span by more than this
    assert got["answer"] == "" and got["start"] == got["end"] == -1 and 0.0 <= got["score"] <= 1.0


def test_answer_refuses_missing_or_conflicting_inputs(tiny_bert_dir, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["answer", str(tiny_bert_dir), "--question", "Who?"])
    assert result.exit_code == 2 and "give --question and --context" in result.stderr
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "Who?", "context": "Hugo."}\nnot json\n')
    result = runner.invoke(app, ["answer", str(tiny_bert_dir), "--jsonl", str(bad)])
    assert result.exit_code == 2 and "bad.jsonl: line 2: not JSON" in result.stderr
