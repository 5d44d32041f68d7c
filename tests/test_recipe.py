"""Recipe schema: unknown keys, types and combinations reported at once with their YAML path."""

from pathlib import Path

import pytest
import yaml

from distill.errors import InputError
from distill.recipe import apply_override, dump_resolved, help_text, load_recipe

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path, data) -> Path:
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def minimal():
    return {
        "output_dir": "out",
        "data": {"train": "t.json", "eval": "e.json"},
        "teacher": {"model": "minilm"},
        "student": {"from_teacher_layers": [0, 1]},
    }


def test_minimal_recipe_fills_documented_defaults(tmp_path):
    r = load_recipe(write(tmp_path, minimal()))
    assert r.data.window.max_seq_length == 384 and r.data.window.doc_stride == 128
    assert r.train.temperature == 2.0 and r.train.alpha == 0.5


def test_all_problems_are_reported_at_once_with_yaml_paths(tmp_path):
    data = minimal()
    data["train"] = {"lr": "fast", "batchsize": 8}
    data["data"]["window"] = {"max_seq_length": 128, "doc_stride": 200}
    data["surprise"] = 1
    with pytest.raises(InputError) as err:
        load_recipe(write(tmp_path, data))
    text = str(err.value)
    assert "train.lr" in text and "train.batchsize: unknown key" in text
    assert "data.window" in text and "surprise: unknown key" in text
    assert str(tmp_path / "r.yaml") in text


def test_set_overrides_go_through_the_same_validation(tmp_path):
    path = write(tmp_path, minimal())
    r = load_recipe(path, ["train.lr=3e-5", "data.window.doc_stride=64"])
    assert r.train.lr == 3e-5 and r.data.window.doc_stride == 64
    with pytest.raises(InputError, match="train.alpha"):
        load_recipe(path, ["train.alpha=1.5"])
    with pytest.raises(InputError, match="train.nope: unknown key"):
        load_recipe(path, ["train.nope=1"])


def test_override_without_equals_is_a_clear_error():
    with pytest.raises(InputError, match="KEY=VALUE"):
        apply_override({}, "train.lr")


def test_student_needs_exactly_one_source(tmp_path):
    data = minimal()
    data["student"] = {"model": "x", "from_teacher_layers": [0]}
    with pytest.raises(InputError, match="student: .*exactly one"):
        load_recipe(write(tmp_path, data))


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("data:\n  train: [unclosed\n")
    with pytest.raises(InputError, match=r"bad.yaml: not valid YAML \(line \d+"):
        load_recipe(path)


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "recipes").glob("*.yaml")))
def test_every_shipped_recipe_passes_the_schema(name):
    load_recipe(ROOT / "recipes" / name)


def test_help_lists_every_key_with_its_description():
    lines = "\n".join(help_text())
    assert "train.temperature = 2.0" in lines and "data.window.doc_stride = 128" in lines


def test_teacher_cache_key_ignores_settings_at_their_old_behaviour_and_changes_otherwise():
    from distill.recipe import FinetuneConfig
    from distill.precision import resolve
    from distill.teacher import finetune_key, settings_hash

    cfg = FinetuneConfig(lr=1e-4, attn_implementation="sdpa")
    later_options = {"group_by_length", "hidden_weight", "hidden_layers", "attention_dropout", "lr_scheduler",
                     "adam_betas", "adam_epsilon", "warmup_steps", "attn_implementation", "train_questions"}
    before_the_option = {k: v for k, v in cfg.model_dump(mode="json").items() if k not in later_options}
    before_the_option["precision"] = resolve(cfg.precision, quiet=True).key  # resolved, never "auto"
    assert finetune_key(cfg, "w", "f") == settings_hash(["w", "f", before_the_option])
    assert finetune_key(cfg.model_copy(update={"group_by_length": True}), "w", "f") != finetune_key(cfg, "w", "f")
    assert finetune_key(cfg.model_copy(update={"lr": 2e-4}), "w", "f") != finetune_key(cfg, "w", "f")
    assert finetune_key(cfg, "w", "g") != finetune_key(cfg, "w", "f")
    # the questions are named by the features' fingerprint, so a count that selects the same ones keeps the key
    assert finetune_key(cfg.model_copy(update={"train_questions": 99}), "w", "f") == finetune_key(cfg, "w", "f")
    for changed in ({"lr_scheduler": "cosine"}, {"adam_betas": (0.9, 0.98)}, {"adam_epsilon": 1e-6}):
        assert finetune_key(cfg.model_copy(update=changed), "w", "f") != finetune_key(cfg, "w", "f")
    with_steps = FinetuneConfig(lr=1e-4, attn_implementation="sdpa", warmup_steps=10)
    assert with_steps.warmup_ratio is None and finetune_key(with_steps, "w", "f") != finetune_key(cfg, "w", "f")


def test_hidden_state_kd_needs_the_online_teacher_and_one_teacher_layer_per_student_layer(tmp_path):
    path = write(tmp_path, minimal())
    with pytest.raises(InputError, match="train.hidden_weight > 0 needs train.online_teacher"):
        load_recipe(path, ["train.hidden_weight=1.0"])
    with pytest.raises(InputError, match="train.hidden_layers: 3 entries for a student of 2 layers"):
        load_recipe(path, ["train.hidden_weight=1.0", "train.online_teacher=true", "train.hidden_layers=[1,2,3]"])
    with pytest.raises(InputError, match="train.hidden_layers is set but train.hidden_weight is 0"):
        load_recipe(path, ["train.hidden_layers=[1,2]"])
    with pytest.raises(InputError, match="teacher.finetune.hidden_weight"):
        load_recipe(path, ["teacher.finetune.hidden_weight=1.0"])
    r = load_recipe(path, ["train.hidden_weight=1.0", "train.online_teacher=true", "train.alpha=0"])
    assert r.train.hidden_weight == 1.0 and r.train.hidden_layers is None


def finetune_only():
    return {"output_dir": "out", "data": {"train": "t.json", "eval": "e.json"}, "student": {"model": "m"}}


def test_a_recipe_without_teacher_fine_tunes_the_student_on_gold_spans(tmp_path):
    r = load_recipe(write(tmp_path, finetune_only()))
    assert r.teacher is None and r.train.alpha == 0 and r.eval.teacher is False
    again = load_recipe(write(tmp_path, yaml.safe_load(dump_resolved(r))))
    assert again == r  # the resolved recipe loads back to the same thing


@pytest.mark.parametrize("override, needle", [
    ("train.alpha=0.5", "train.alpha: must be 0 without a teacher section"),
    ("train.online_teacher=true", "train.online_teacher/hidden_weight: need a teacher section"),
    ("eval.teacher=true", "eval.teacher: there is no teacher section"),
])
def test_fine_tune_mode_refuses_what_needs_a_teacher(tmp_path, override, needle):
    with pytest.raises(InputError, match=needle):
        load_recipe(write(tmp_path, finetune_only()), [override])


def test_fine_tune_mode_refuses_teacher_layers(tmp_path):
    data = finetune_only()
    data["student"] = {"from_teacher_layers": [0]}
    with pytest.raises(InputError, match="student.from_teacher_layers: needs a teacher section"):
        load_recipe(write(tmp_path, data))


def test_warmup_is_given_as_steps_or_as_a_ratio_not_both(tmp_path):
    path = write(tmp_path, minimal())
    r = load_recipe(path, ["train.warmup_steps=814"])
    assert r.train.warmup_steps == 814 and r.train.warmup_ratio is None and r.train.warmup_for(10_000) == 814
    assert load_recipe(path).train.warmup_for(1000) == 100  # the default ratio 0.1
    with pytest.raises(InputError, match="train.warmup_steps and train.warmup_ratio are both set; give one"):
        load_recipe(path, ["train.warmup_steps=814", "train.warmup_ratio=0.1"])
    assert load_recipe(write(tmp_path, yaml.safe_load(dump_resolved(r)))).train.warmup_steps == 814


def test_optimizer_keys_are_checked(tmp_path):
    path = write(tmp_path, minimal())
    r = load_recipe(path, ["train.adam_betas=[0.9, 0.98]", "train.adam_epsilon=1e-6", "train.lr_scheduler=cosine"])
    assert r.train.adam_betas == (0.9, 0.98) and r.train.adam_epsilon == 1e-6 and r.train.lr_scheduler == "cosine"
    with pytest.raises(InputError, match="train.adam_betas"):
        load_recipe(path, ["train.adam_betas=[0.9, 1.5]"])
    with pytest.raises(InputError, match="train.lr_scheduler"):
        load_recipe(path, ["train.lr_scheduler=exponential"])
