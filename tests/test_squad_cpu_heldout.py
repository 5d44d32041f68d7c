"""benchmarks/squad_cpu.py: held-out questions never overlap the training slice; run dirs never mix runs."""

import importlib.util
import json

import pytest

from conftest import ROOT


@pytest.fixture(scope="module")
def squad_cpu():
    spec = importlib.util.spec_from_file_location("squad_cpu", ROOT / "benchmarks" / "squad_cpu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _squad(tmp_path, questions_per_article):
    data = [{"title": f"a{i}", "paragraphs": [{"context": "c", "qas": [
        {"id": f"a{i}q{j}", "question": "q", "answers": [{"text": "c", "answer_start": 0}]} for j in range(n)]}]}
        for i, n in enumerate(questions_per_article)]
    path = tmp_path / "train.json"
    path.write_text(json.dumps({"version": "1.1", "data": data}))
    return path


def _ids(path):
    return {qa["id"] for a in json.loads(path.read_text())["data"] for p in a["paragraphs"] for qa in p["qas"]}


def test_heldout_takes_whole_articles_from_the_end_disjoint_from_the_train_slice(squad_cpu, tmp_path):
    train = _squad(tmp_path, [3, 3, 3, 3, 3, 3])
    held = squad_cpu.write_heldout(train, train_questions=5, out=tmp_path / "held.json", min_questions=6)
    assert _ids(held) == {f"a{i}q{j}" for i in (4, 5) for j in range(3)}
    # the slice's first 5 questions end inside article 1, so article 1 is never held out
    held = squad_cpu.write_heldout(train, train_questions=5, out=tmp_path / "held.json", min_questions=12)
    assert _ids(held) == {f"a{i}q{j}" for i in (2, 3, 4, 5) for j in range(3)}


def test_heldout_with_too_few_unused_questions_exits_with_a_message(squad_cpu, tmp_path):
    train = _squad(tmp_path, [3, 3, 3])
    with pytest.raises(SystemExit, match="only 3 questions after the first 5"):
        squad_cpu.write_heldout(train, train_questions=5, out=tmp_path / "held.json", min_questions=6)
    with pytest.raises(SystemExit, match="only 0 questions after the first 50"):
        squad_cpu.write_heldout(train, train_questions=50, out=tmp_path / "held.json", min_questions=6)


def test_heldout_and_other_eval_files_do_not_default_to_the_committed_dev_result(squad_cpu, monkeypatch):
    outs = {}
    for flags in ([], ["--heldout"], ["--eval-file", "/data/mine.json"], ["--quick", "--heldout"]):
        monkeypatch.setattr("sys.argv", ["squad_cpu.py", *flags])
        out = squad_cpu.parse_args().out
        assert out.parent == ROOT / "benchmarks" / "results" / "squad_cpu"
        outs[" ".join(flags)] = out.name
    assert outs == {"": "squad_cpu.json", "--heldout": "squad_cpu_heldout.json",
                    "--eval-file /data/mine.json": "squad_cpu_mine.json",
                    "--quick --heldout": "squad_cpu_quick_heldout.json"}


def test_students_of_another_seed_or_teacher_get_their_own_work_dir(squad_cpu, monkeypatch):
    def tag(flags, key="8a0e2a6d39d09a2379c9", alpha=0.5):
        monkeypatch.setattr("sys.argv", ["squad_cpu.py", *flags])
        return squad_cpu.student_tag(squad_cpu.parse_args(), key, alpha, 0.0, True)

    default = tag([])
    assert default == "t8a0e2a6d_s42_T2.0_a0.5_e2_lr0.0003_l0-2-4_grouped"
    assert tag(["--seed", "43"]) == tag(["--student-seed", "43"]) != default
    assert len({default, tag([], key="0123456789abcdef0123"), tag(["--alpha", "0.7"], alpha=0.7),
                tag(["--student-lr", "4e-4"]), tag(["--layers", "0,2,5"])}) == 5


def test_shared_key_ignores_what_tells_the_two_students_apart_but_not_the_rest(squad_cpu):
    from distill.recipe import load_recipe

    def key(*overrides):
        return squad_cpu.shared_key(load_recipe(squad_cpu.RECIPE, ["output_dir=/tmp/x", *overrides]))

    kd = key("train.alpha=0.5", "output_dir=/tmp/kd")
    assert key("train.alpha=0", "eval.teacher=false", "output_dir=/tmp/ce") == kd
    assert key("train.alpha=0.5", "train.hidden_weight=1.0", "train.online_teacher=true") == kd
    others = {key("teacher.finetune.lr=3e-4"), key("data.eval=/data/other.json"), key("data.train_questions=99"),
              key("train.batch_size=8"), key("cache_dir=/tmp/other_cache")}
    assert kd not in others and len(others) == 5
