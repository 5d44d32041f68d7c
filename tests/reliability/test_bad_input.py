"""Bad input through the real CLI: exit 2, one `error:` line naming the file and key/question id, no
traceback, nothing of the user's touched, nothing created in output_dir or cache_dir."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from .conftest import DELETE, tree_hashes

case = pytest.mark.case


@dataclass
class Ctx:
    tmp: Path
    make: callable
    data: dict
    teacher: Path
    small_vocab: Path

    def file(self, name: str, text: str) -> Path:
        path = self.tmp / name
        path.write_text(text)
        return path

    def raw(self, name: str, data: bytes) -> Path:
        path = self.tmp / name
        path.write_bytes(data)
        return path

    def damaged_teacher(self) -> Path:
        path = self.tmp / "damaged_teacher"
        shutil.copytree(self.teacher, path)
        weights = path / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
        return path

    def base_encoder(self) -> Path:
        """The tiny teacher saved without its QA head, as a base encoder checkpoint is."""
        from transformers import AutoModel, AutoTokenizer

        path = self.tmp / "base_encoder"
        AutoModel.from_pretrained(self.teacher).save_pretrained(path)
        AutoTokenizer.from_pretrained(self.teacher).save_pretrained(path)
        return path

    def squad(self, name: str, edit, src: str = "dev") -> Path:
        """A copy of a slice, changed by `edit(data_dict)`."""
        data = json.loads(self.data[src].read_text())
        edit(data)
        return self.file(name, json.dumps(data))


def first_qa(data: dict) -> dict:
    return data["data"][0]["paragraphs"][0]["qas"][0]


def error_block(stderr: str) -> list[str]:
    """The `error:` line and the indented problem lines under it; asserts it is the only error and the end."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    starts = [i for i, line in enumerate(lines) if line.startswith("error: ")]
    assert len(starts) == 1, f"expected exactly one 'error:' line, got:\n{stderr}"
    block = lines[starts[0]:]
    assert all(line.startswith("  ") for line in block[1:]), f"unexpected lines after the error:\n{stderr}"
    return block


def assert_refused(result, *needles: str, problems: bool = False) -> str:
    out = result.stdout + result.stderr
    assert "Traceback" not in out, out
    assert result.exit_code == 2, f"exit {result.exit_code}:\n{out}\n{result.exception!r}"
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    block = error_block(result.stderr)
    if not problems:
        assert len(block) == 1, f"expected one line:\n{result.stderr}"
    text = "\n".join(block)
    for needle in needles:
        assert needle in text, f"{needle!r} not in:\n{text}"
    return text


# ---------------------------------------------------------------- recipes (`distill run`)


def _ds(ctx, name, body):
    return str(ctx.file(name, body))


RECIPE_CASES = [
    pytest.param(lambda c: c.make(**{"train.learning_rate": 1e-3}), ["recipe.yaml", "train.learning_rate: unknown key"],
                 id="recipe-unknown-key", marks=case(input="train.learning_rate: 0.001 (no such key)",
                                                     expected="exit 2, names the key")),
    pytest.param(lambda c: c.make(**{"train.batch_size": "eight"}), ["train.batch_size", "'eight'"],
                 id="recipe-wrong-type", marks=case(input="train.batch_size: eight", expected="exit 2, names key and value")),
    pytest.param(lambda c: c.make(**{"train.batch_size": -4}), ["train.batch_size", "greater than 0"],
                 id="recipe-negative-size", marks=case(input="train.batch_size: -4", expected="exit 2, names the key")),
    pytest.param(lambda c: c.make(**{"data.window.max_seq_length": 0}), ["data.window.max_seq_length"],
                 id="recipe-zero-size", marks=case(input="data.window.max_seq_length: 0", expected="exit 2, names the key")),
    pytest.param(lambda c: c.make(**{"data.train_questions": 0}), ["data.train_questions"],
                 id="recipe-zero-questions", marks=case(input="data.train_questions: 0", expected="exit 2, names the key")),
    pytest.param(lambda c: c.make(**{"data.window.doc_stride": 96}),
                 ["data.window", "doc_stride (96) is the overlap between windows"], id="recipe-stride-ge-max-length",
                 marks=case(input="doc_stride 96 with max_seq_length 96", expected="exit 2, names data.window")),
    pytest.param(lambda c: c.make(**{"data.window.max_seq_length": 128, "data.window.doc_stride": 100,
                                     "data.window.max_query_length": 64}),
                 ["data.window", "doc_stride (100)", "max_seq_length - max_query_length - 3 = 61"],
                 id="recipe-stride-leaves-no-context",
                 marks=case(input="max_seq_length 128, doc_stride 100, max_query_length 64 (overlap > context room)",
                            expected="exit 2 at validation (was: a Rust PanicException traceback in the tokenizer)")),
    pytest.param(lambda c: c.make(**{"train.ds_config": "ds_configs/missing.json"}),
                 ["train.ds_config", "missing.json: file not found"], id="recipe-missing-ds-config",
                 marks=case(input="train.ds_config: ds_configs/missing.json", expected="exit 2, names key and file")),
    pytest.param(lambda c: c.make(**{"train.ds_config": _ds(c, "bad_ds.json", '{"zero_optimization": {"stage": 2,}')}),
                 ["train.ds_config", "bad_ds.json", "not valid JSON (line 1"], id="recipe-ds-config-bad-json",
                 marks=case(input="ds_config file with a trailing comma", expected="exit 2, file + line/column")),
    pytest.param(lambda c: c.make(**{"train.ds_config": _ds(c, "contra_ds.json", json.dumps(
                     {"train_micro_batch_size_per_gpu": 3, "gradient_clipping": 0.5, "zero_optimization": {"stage": 2}}))}),
                 ["contra_ds.json", "train_micro_batch_size_per_gpu=3 but recipe train.batch_size gives 8",
                  "gradient_clipping=0.5 but recipe train.max_grad_norm gives 1.0"], id="recipe-ds-config-contradicts",
                 marks=case(input="ds_config micro batch 3 and clipping 0.5 vs recipe 8 and 1.0",
                            expected="exit 2, every disagreement listed")),
    pytest.param(lambda c: c.make(**{"train.precision": "fp16", "train.ds_config": "ds_configs/zero2_fp16.json"}),
                 ["train.precision", "fp16 needs a CUDA GPU"], id="recipe-fp16-on-cpu-run",
                 marks=case(input="`distill run` with train.precision fp16 on a CPU-only machine",
                            expected="exit 2 before any stage")),
    pytest.param(lambda c: c.make(**{"student.from_teacher_layers": DELETE, "student.model": str(c.small_vocab)}),
                 ["student.model", "tokenise differently", "vocab differs"], id="recipe-tokenizer-vocab-mismatch",
                 marks=case(input="student.model with its own 100-word vocab vs the teacher's 30522",
                            expected="exit 2, names both models")),
    pytest.param(lambda c: c.make(**{"student.model": str(c.teacher)}), ["student", "exactly one of"],
                 id="recipe-two-student-sources",
                 marks=case(input="student.model and student.from_teacher_layers both set", expected="exit 2")),
    pytest.param(lambda c: c.make(**{"student.from_teacher_layers": [0, 7]}),
                 ["student.from_teacher_layers", "[0, 7]"], id="recipe-student-layers-out-of-range",
                 marks=case(input="from_teacher_layers [0, 7] for a 2-layer teacher",
                            expected="exit 2 in preflight (was: after features and teacher logits)")),
    pytest.param(lambda c: c.make(**{"teacher.model": str(c.tmp / "no_such_model")}),
                 ["teacher.model", "no_such_model: model directory not found"], id="recipe-teacher-dir-missing",
                 marks=case(input="teacher.model: a directory that does not exist", expected="exit 2, names the key")),
    pytest.param(lambda c: c.make(**{"teacher.model": str(c.damaged_teacher())}),
                 ["teacher.model", "damaged_teacher: cannot load model"], id="recipe-teacher-weights-truncated",
                 marks=case(input="teacher directory whose model.safetensors is cut in half",
                            expected="exit 2 in preflight (was: traceback after features, exit 1)")),
    pytest.param(lambda c: c.make(**{"teacher.model": str(c.base_encoder())}),
                 ["teacher.model", "base_encoder has no trained QA head", "add a teacher.finetune section"],
                 id="recipe-teacher-without-qa-head",
                 marks=case(input="teacher.model: an encoder checkpoint without QA weights, no teacher.finetune",
                            expected="exit 2 in preflight (was: distilled from a random head)")),
    pytest.param(lambda c: c.make(**{"teacher.model": "minilm", "student.from_teacher_layers": [0, 1]}),
                 ["teacher.model", "minilm has no trained QA head", "teacher.finetune"],
                 id="recipe-packaged-minilm-without-finetune",
                 marks=case(input="teacher.model: minilm (a sentence encoder) with no teacher.finetune",
                            expected="exit 2 in preflight, naming teacher.finetune")),
    pytest.param(lambda c: c.make(**{"data.train": str(c.tmp / "gone.json")}), ["data.train", "gone.json"],
                 id="recipe-data-file-missing",
                 marks=case(input="data.train: a file that does not exist", expected="exit 2, names key and file")),
    pytest.param(lambda c: c.make(**{"train.alpha": 0.0, "train.online_teacher": True}), ["train.online_teacher"],
                 id="recipe-impossible-combination",
                 marks=case(input="train.online_teacher with train.alpha 0", expected="exit 2")),
    pytest.param(lambda c: c.make(**{"train.hidden_weight": 1.0}), ["train.hidden_weight > 0 needs train.online_teacher"],
                 id="recipe-hidden-kd-without-online-teacher",
                 marks=case(input="train.hidden_weight 1 with cached teacher logits", expected="exit 2, names both keys")),
    pytest.param(lambda c: c.make(**{"train.warmup_steps": 10}),
                 ["train.warmup_steps and train.warmup_ratio are both set"], id="recipe-both-warmup-keys",
                 marks=case(input="train.warmup_steps 10 and train.warmup_ratio 0.2", expected="exit 2, names both keys")),
    pytest.param(lambda c: c.make(**{"eval.every": 0}), ["eval.every: must be `epoch` or a positive number of optimizer steps (got 0)"],
                 id="recipe-eval-every-zero",
                 marks=case(input="eval.every: 0", expected="exit 2, names the key")),
    pytest.param(lambda c: c.make(**{"eval.every": "weekly"}), ["eval.every: must be `epoch` or a positive number of optimizer steps (got 'weekly')"],
                 id="recipe-eval-every-word", marks=case(input="eval.every: weekly (only `epoch` or N steps)",
                                                         expected="exit 2, names the key and value")),
    pytest.param(lambda c: c.make(**{"teacher": DELETE, "student.from_teacher_layers": DELETE,
                                     "student.model": str(c.teacher), "train.alpha": 0.5}),
                 ["train.alpha: must be 0 without a teacher section"], id="recipe-finetune-with-alpha",
                 marks=case(input="no teacher section (fine-tune mode) and train.alpha 0.5",
                            expected="exit 2, names train.alpha")),
    pytest.param(lambda c: c.make(**{"eval.no_answer_probability": 1.5}),
                 ["eval.no_answer_probability", "less than or equal to 1"], id="recipe-v2-threshold-out-of-range",
                 marks=case(input="eval.no_answer_probability: 1.5 (a probability, like best_f1_thresh)",
                            expected="exit 2, names the key")),
    pytest.param(lambda c: c.make(**{"eval.no_answer_probability": 0.5, "eval.null_threshold": 0.0}),
                 ["eval.null_threshold and eval.no_answer_probability are both set"], id="recipe-two-v2-thresholds",
                 marks=case(input="eval.no_answer_probability 0.5 and eval.null_threshold 0.0",
                            expected="exit 2, names both keys")),
    pytest.param(lambda c: c.file("broken.yaml", "output_dir: out\ndata: [1, 2\n"), ["broken.yaml", "not valid YAML (line"],
                 id="recipe-not-yaml", marks=case(input="recipe with an unclosed list", expected="exit 2, line/column")),
    pytest.param(lambda c: c.file("list.yaml", "- a\n- b\n"), ["list.yaml", "YAML mapping"],
                 id="recipe-not-a-mapping", marks=case(input="recipe whose top level is a list", expected="exit 2")),
    pytest.param(lambda c: c.tmp / "nowhere.yaml", ["nowhere.yaml", "recipe file not found"],
                 id="recipe-file-missing", marks=case(input="a recipe path that does not exist", expected="exit 2")),
]


@pytest.fixture
def ctx(tmp_path, recipe_factory, rel_data, tiny_teacher, small_vocab_model):
    return Ctx(tmp_path, recipe_factory, rel_data, tiny_teacher, small_vocab_model)


@pytest.mark.parametrize("build, needles", RECIPE_CASES)
def test_bad_recipe_is_refused_by_run_before_any_stage(build, needles, ctx, cli, observed):
    """A bad recipe: `distill run` exits 2 with the listed problems and creates nothing."""
    recipe = build(ctx)
    before = tree_hashes(ctx.tmp)
    result = cli("run", recipe)
    observed("\n".join(error_block(result.stderr)) if "error:" in result.stderr else result.stderr[-500:])
    text = assert_refused(result, *needles, problems=True)
    assert recipe.name in text.splitlines()[0], "the header names the recipe file"
    assert not (ctx.tmp / "out").exists() and not (ctx.tmp / "cache").exists()
    assert tree_hashes(ctx.tmp) == before


def refused_env_setting(ctx, cli, observed, monkeypatch, var: str, value: str, message: str) -> None:
    """`distill run` with `var`=`value` exits 2 with `message`, before any stage: nothing created or changed."""
    monkeypatch.setenv(var, value)
    recipe = ctx.make()
    before = tree_hashes(ctx.tmp)
    result = cli("run", recipe)
    observed("\n".join(error_block(result.stderr)) if "error:" in result.stderr else result.stderr[-500:])
    assert_refused(result, recipe.name, message, problems=True)
    assert not (ctx.tmp / "out").exists() and not (ctx.tmp / "cache").exists()
    assert tree_hashes(ctx.tmp) == before


@case(input="`distill run` with DISTILL_HOST_MALLOC=tcmalloc in the environment",
      expected="exit 2, names the variable and its choices; nothing created")
def test_a_bad_host_malloc_setting_is_refused_by_run_before_any_stage(ctx, cli, observed, monkeypatch):
    """DISTILL_HOST_MALLOC is read when training starts; a bad value must stop the run before any stage."""
    refused_env_setting(ctx, cli, observed, monkeypatch, "DISTILL_HOST_MALLOC", "tcmalloc",
                        "DISTILL_HOST_MALLOC='tcmalloc': must be one of keep, system")


@case(input="`distill run` with DISTILL_CPU_DROPOUT=mkl in the environment",
      expected="exit 2, names the variable and its choices; nothing created")
def test_a_bad_cpu_dropout_setting_is_refused_by_run_before_any_stage(ctx, cli, observed, monkeypatch):
    """DISTILL_CPU_DROPOUT is read when training starts; a bad value must stop the run before any stage."""
    refused_env_setting(ctx, cli, observed, monkeypatch, "DISTILL_CPU_DROPOUT", "mkl",
                        "DISTILL_CPU_DROPOUT='mkl': must be one of bits, torch")


@case(input="`distill validate` with train.precision fp16 on a CPU-only machine",
      expected="exit 0, a note that fp16 needs CUDA (the recipe may target a GPU machine)")
def test_validate_only_notes_fp16_on_cpu(ctx, cli, observed):
    """`distill validate` reports fp16-on-CPU as a note, not an error: the recipe may be meant for a GPU."""
    recipe = ctx.make(**{"train.precision": "fp16", "train.ds_config": "ds_configs/zero2_fp16.json"})
    result = cli("validate", recipe)
    observed(next((line for line in result.stderr.splitlines() if "note:" in line), result.stderr[-300:]))
    assert result.exit_code == 0, result.stderr
    assert "note: train: ds_config zero2_fp16.json" in result.stderr or "fp16 needs a CUDA GPU" in result.stderr
    assert "fp16 needs a CUDA GPU" in result.stderr and result.stdout.strip().endswith(": ok")


@case(input="`distill validate` with a teacher that has no QA head and no teacher.finetune",
      expected="exit 2, names teacher.model and teacher.finetune; nothing created")
def test_validate_refuses_a_teacher_without_qa_head(ctx, cli, observed):
    recipe = ctx.make(**{"teacher.model": str(ctx.base_encoder())})
    before = tree_hashes(ctx.tmp)
    result = cli("validate", recipe)
    observed("\n".join(error_block(result.stderr)))
    assert_refused(result, "teacher.model", "no trained QA head", "teacher.finetune", problems=True)
    assert tree_hashes(ctx.tmp) == before


# ---------------------------------------------------------------- data files (`distill score`)


def _set_start(data, delta):
    first_qa(data)["answers"][0]["answer_start"] += delta


def _dup_ids(data):
    qas = data["data"][0]["paragraphs"][0]["qas"]
    qas[1]["id"] = qas[0]["id"]


def _v2_flag(data):
    qa = first_qa(data)
    qa["is_impossible"], qa["answers"] = True, []


DATA_CASES = [
    pytest.param(lambda c: c.tmp / "absent.json", ["absent.json", "not found"], id="data-missing-file",
                 marks=case(input="score a data file that does not exist", expected="exit 2, names the file")),
    pytest.param(lambda c: c.file("notjson.json", '{"data": [\n  {"title": "x",,}]}'), ["notjson.json", "line 2 column"],
                 id="data-not-json", marks=case(input="data file with a syntax error on line 2", expected="exit 2, line/column")),
    pytest.param(lambda c: c.raw("latin1.json", b'{"data": "caf\xe9"}'),
                 ["latin1.json", "not UTF-8"], id="data-not-utf8",
                 marks=case(input="data file in Latin-1", expected="exit 2, names the byte")),
    pytest.param(lambda c: c.file("shape.json", '{"articles": []}'), ["shape.json", "top-level dict", "articles"],
                 id="data-wrong-top-level-shape",
                 marks=case(input='{"articles": []} instead of {"data": [...]}', expected="exit 2, names the keys found")),
    pytest.param(lambda c: c.squad("off.json", lambda d: _set_start(d, 1)), ["off.json", "question 56be4db0acb8001400a502ec",
                 "does not match context"], id="data-answer-start-off",
                 marks=case(input="first answer_start shifted by one", expected="exit 2, names the question id")),
    pytest.param(lambda c: c.squad("dup.json", _dup_ids), ["dup.json", "56be4db0acb8001400a502ec: duplicate id"],
                 id="data-duplicate-ids", marks=case(input="two questions with the same id", expected="exit 2, names the id")),
    pytest.param(lambda c: c.file("empty.json", '{"version": "1.1", "data": []}'), ["empty.json", "no questions"],
                 id="data-empty", marks=case(input='{"version": "1.1", "data": []}', expected="exit 2")),
    pytest.param(lambda c: c.squad("v2flag.json", _v2_flag), ["v2flag.json", "56be4db0acb8001400a502ec",
                 "is_impossible is a SQuAD v2.0 flag"], id="data-v2-flag-in-v1-file",
                 marks=case(input='is_impossible: true in a file declaring "version": "1.1"', expected="exit 2, names the id")),
    pytest.param(lambda c: c.squad("noans.json", lambda d: first_qa(d).pop("answers")),
                 ["noans.json", "56be4db0acb8001400a502ec", "missing field 'answers'"], id="data-missing-field",
                 marks=case(input="a question without `answers`", expected="exit 2, names the id and field")),
]


@pytest.mark.parametrize("build, needles", DATA_CASES)
def test_bad_data_file_is_refused_by_score(build, needles, ctx, cli, observed):
    """A malformed SQuAD file: `distill score` exits 2 with one line naming the file (and question id)."""
    data = build(ctx)
    pred = ctx.file("pred.json", '{"56be4db0acb8001400a502ec": "Denver Broncos"}')
    before = tree_hashes(ctx.tmp)
    result = cli("score", data, pred)
    observed(result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "")
    assert_refused(result, *needles)
    assert tree_hashes(ctx.tmp) == before


# ---------------------------------------------------------------- predictions (`distill score`)


def _all_ids(path: Path) -> list[str]:
    data = json.loads(path.read_text())
    return [qa["id"] for a in data["data"] for p in a["paragraphs"] for qa in p["qas"]]


PRED_CASES = [
    pytest.param("dev", lambda ids: ["Denver Broncos"], None, ["pred.json", "expected a JSON object", "an array"],
                 id="pred-not-an-object", marks=case(input='predictions file is a JSON array', expected="exit 2")),
    pytest.param("dev", lambda ids: {i: 3 for i in ids}, None, ["pred.json", "question ", "must be a string, got a number"],
                 id="pred-answer-not-string", marks=case(input="an answer given as the number 3", expected="exit 2, names the id")),
    pytest.param("dev", None, None, ["pred.json", "not valid JSON"], id="pred-not-json",
                 marks=case(input="predictions file that is not JSON", expected="exit 2")),
    pytest.param("dev_v2", lambda ids: {i: "" for i in ids[1:]}, None, ["pred.json", "no prediction for"],
                 id="pred-v2-missing-id", marks=case(input="v2.0 data, one question id missing from predictions",
                                                     expected="exit 2 (official v2 script fails too)")),
    pytest.param("dev_v2", lambda ids: {i: "" for i in ids}, {"na": "high"}, ["na.json", "must be a number"],
                 id="pred-na-prob-not-number", marks=case(input="v2.0 --na-prob-file with a string probability",
                                                          expected="exit 2, names the id")),
]


@pytest.mark.parametrize("src, preds, na, needles", PRED_CASES)
def test_bad_predictions_are_refused_by_score(src, preds, na, needles, ctx, cli, observed):
    """Malformed predictions (or v2 predictions missing ids): exit 2, one line naming the file."""
    ids = _all_ids(ctx.data[src])
    pred = ctx.file("pred.json", "{oops" if preds is None else json.dumps(preds(ids)))
    args = ["score", ctx.data[src], pred]
    if na:
        args += ["--na-prob-file", ctx.file("na.json", json.dumps({ids[0]: na["na"]}))]
    before = tree_hashes(ctx.tmp)
    result = cli(*args)
    observed(result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "")
    assert_refused(result, *needles)
    assert tree_hashes(ctx.tmp) == before


@case(input="v1.1 data, one question id missing from predictions",
      expected="exit 0, that question scores 0, `Unanswered question ID will receive score 0.` on stderr")
def test_v1_missing_prediction_scores_zero_with_the_official_warning(ctx, cli, observed):
    """v1.1 like the official script: a missing id is a warning on stderr and scores 0, not an error."""
    from distill.data.squad import load_squad
    from distill.metrics import golds_from_examples

    ids = _all_ids(ctx.data["dev"])
    golds = golds_from_examples(load_squad(ctx.data["dev"]))
    preds = {i: golds[i][0] for i in ids[1:]}
    result = cli("score", ctx.data["dev"], ctx.file("pred.json", json.dumps(preds)))
    observed(result.stderr.strip())
    assert result.exit_code == 0, result.stderr
    assert result.stderr.strip() == f"Unanswered question {ids[0]} will receive score 0."
    scores = json.loads(result.stdout)
    expected = 100.0 * (len(ids) - 1) / len(ids)
    assert scores["exact_match"] == pytest.approx(expected) and scores["f1"] == pytest.approx(expected)


# ---------------------------------------------------------------- CLI arguments


@case(input="`distill score DATA` without PRED", expected="exit 2, one line naming the missing argument")
def test_missing_argument_is_one_line(ctx, cli, observed):
    """A missing positional argument: one `error:` line, not click's multi-line usage box."""
    result = cli("score", ctx.data["dev"])
    observed(result.stderr)
    assert_refused(result, "score: Missing argument 'pred_file'")


@case(input="`distill run RECIPE --lr 3e-5` (no such option)", expected="exit 2, one line naming the option")
def test_unknown_option_is_one_line(ctx, cli, observed):
    """An unknown option: one `error:` line, the recipe is not read."""
    result = cli("run", ctx.make(), "--lr", "3e-5")
    observed(result.stderr)
    assert_refused(result, "run: No such option: --lr")
    assert not (ctx.tmp / "out").exists()


@case(input="`distill eval MODEL DATA --out DIR --batch-size 0`", expected="exit 2, one line naming the option")
def test_option_below_its_minimum_is_one_line(ctx, cli, observed):
    """Typed options out of range: one `error:` line naming the option."""
    result = cli("eval", ctx.teacher, ctx.data["dev"], "--out", ctx.tmp / "ev", "--batch-size", "0")
    observed(result.stderr)
    assert_refused(result, "'--batch-size'")
    assert not (ctx.tmp / "ev").exists()


@case(input="`distill run RECIPE --set train.lr` (no =)", expected="exit 2, shows the KEY=VALUE form")
def test_set_without_equals_is_refused(ctx, cli, observed):
    """--set needs KEY=VALUE."""
    result = cli("run", ctx.make(), "--set", "train.lr")
    observed(result.stderr)
    assert_refused(result, "--set 'train.lr': expected KEY=VALUE")
    assert not (ctx.tmp / "out").exists()


@case(input="`--set data.train.path=x` where data.train is a string", expected="exit 2, names the key")
def test_set_into_a_scalar_is_refused(ctx, cli, observed):
    """--set cannot descend into a value that is not a section."""
    result = cli("validate", ctx.make(), "--set", "data.train.path=x")
    observed(result.stderr)
    assert_refused(result, "--set data.train.path: data.train is not a section")


@case(input="`--set train.batch_size=zero`", expected="exit 2, names the key and value")
def test_set_with_a_wrong_type_is_refused(ctx, cli, observed):
    """--set values are schema-checked like the YAML."""
    result = cli("validate", ctx.make(), "--set", "train.batch_size=zero")
    observed("\n".join(error_block(result.stderr)))
    assert_refused(result, "train.batch_size", "'zero'", problems=True)


@case(input="`distill eval MODEL DATA --precision fp8`", expected="exit 2, lists the valid precisions; --out not created")
def test_eval_bad_precision(ctx, cli, observed):
    """An unknown --precision is refused before any model is loaded."""
    result = cli("eval", ctx.teacher, ctx.data["dev"], "--out", ctx.tmp / "ev", "--precision", "fp8")
    observed(result.stderr)
    assert_refused(result, "--precision 'fp8'", "auto, fp32, bf16 or fp16")
    assert not (ctx.tmp / "ev").exists()


@case(input="`distill eval /no/such/dir DATA --out DIR`", expected="exit 2, names the directory; --out not created")
def test_eval_nonexistent_model_dir(ctx, cli, observed):
    """A model directory that does not exist: one line, nothing written."""
    result = cli("eval", ctx.tmp / "no_model", ctx.data["dev"], "--out", ctx.tmp / "ev")
    observed(result.stderr.strip().splitlines()[-1])
    assert_refused(result, "no_model: model directory not found")
    assert not (ctx.tmp / "ev").exists()


@case(input="`distill eval MODEL DATA --doc-stride 400` (>= max-seq-length 384)", expected="exit 2, names the options")
def test_eval_stride_longer_than_window(ctx, cli, observed):
    """Window options are validated together."""
    result = cli("eval", ctx.teacher, ctx.data["dev"], "--out", ctx.tmp / "ev", "--doc-stride", "400")
    observed(result.stderr)
    assert_refused(result, "window options: doc_stride (400) is the overlap between windows",
                   "max_seq_length - max_query_length - 3 = 317")


@case(input="`distill score DATA PRED --version 3.0`", expected="exit 2")
def test_score_bad_version(ctx, cli, observed):
    """Only SQuAD 1.1 and 2.0 exist."""
    result = cli("score", ctx.data["dev"], ctx.file("pred.json", "{}"), "--version", "3.0")
    observed(result.stderr)
    assert_refused(result, "--version '3.0': expected 1.1 or 2.0")


# ---------------------------------------------------------------- output_dir protection


def _fake_other_run(out: Path, recipe_path: Path, ctx) -> None:
    """output_dir holding a finished run of a *different* recipe (another seed)."""
    from distill.recipe import dump_resolved, load_recipe

    other = load_recipe(recipe_path, ["train.seed=99"])
    out.mkdir(parents=True)
    (out / "recipe.resolved.yaml").write_text(dump_resolved(other))
    (out / "train_log.jsonl").write_text('{"step": 1, "loss": 1.0}\n')
    (out / "metrics.json").write_text('{"student": {"f1": 50.0}}')
    (out / "student").mkdir()
    (out / "student" / "config.json").write_text("{}")


@pytest.mark.parametrize("resume", [False, True], ids=["plain", "resume"])
@case(input="output_dir holds a run of a different recipe (seed 99)",
      expected="exit 2 with and without --resume, naming the changed key; every file in it unchanged")
def test_output_dir_of_another_run_is_refused_and_untouched(resume, ctx, cli, observed):
    """An output_dir holding another recipe's run is never reused or overwritten, even with --resume."""
    recipe = ctx.make()
    out = ctx.tmp / "out"
    _fake_other_run(out, recipe, ctx)
    before = tree_hashes(out)
    result = cli("run", recipe, *(["--resume"] if resume else []))
    observed(result.stderr.strip().splitlines()[-1])
    assert_refused(result, f"output_dir {out}", "different recipe", "differs in train.seed")
    assert tree_hashes(out) == before and not (ctx.tmp / "cache").exists()


@case(input="output_dir holds unrelated user files (notes.txt, data/)", expected="exit 2; files unchanged")
def test_output_dir_with_user_files_is_refused_and_untouched(ctx, cli, observed):
    """A directory that is not a distill run is never written into."""
    recipe = ctx.make()
    out = ctx.tmp / "out"
    (out / "data").mkdir(parents=True)
    (out / "notes.txt").write_text("mine")
    (out / "data" / "x.bin").write_bytes(b"\0\1\2")
    before = tree_hashes(out)
    result = cli("run", recipe, "--resume")
    observed(result.stderr.strip().splitlines()[-1])
    assert_refused(result, f"output_dir {out}", "not a distill run")
    assert tree_hashes(out) == before and sorted(p.name for p in out.iterdir()) == ["data", "notes.txt"]
