"""DeepSpeed config filling: "auto" from the recipe, every mismatch at once, bad files, precision choice."""

import json
from pathlib import Path

import pytest

from distill.ds_config import build_ds_config
from distill.errors import InputError
from distill.recipe import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted(p.name for p in (ROOT / "ds_configs").glob("*.json"))


def write(tmp_path, data, name="my.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return str(path)


def test_the_configs_the_recipes_and_tests_name_are_shipped():
    assert {"zero2_fp16.json", "zero3_fp16.json", "zero2_bf16.json", "zero3_bf16.json", "zero2_fp32.json",
            "zero3_fp32.json"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_auto_values_are_filled_from_the_recipe(name):
    precision = "fp16" if "fp16" in name else "bf16" if "bf16" in name else "fp32"
    cfg = TrainConfig(batch_size=6, gradient_accumulation=3, max_grad_norm=0.5, ds_config=f"ds_configs/{name}",
                      precision=precision)
    ds = build_ds_config(cfg, world_size=2, total_steps=100, warmup_steps=10, device="cuda")
    assert ds["train_micro_batch_size_per_gpu"] == 6
    assert ds["gradient_accumulation_steps"] == 3
    assert ds["train_batch_size"] == 36
    assert ds["gradient_clipping"] == 0.5
    assert '"auto"' not in json.dumps(ds)
    if precision == "fp16":
        assert ds["fp16"]["enabled"] is True
    if precision == "bf16":
        assert ds.get("torch_autocast", {}).get("enabled") or ds.get("bf16", {}).get("enabled")


def test_fp32_recipe_turns_the_bf16_config_precision_off():
    ds = build_ds_config(TrainConfig(precision="fp32", ds_config="ds_configs/zero2_bf16.json"), device="cpu")
    assert ds["bf16"]["enabled"] is False
    assert not ds.get("fp16", {}).get("enabled")


def test_a_torch_autocast_block_satisfies_a_bf16_recipe(tmp_path):
    path = write(tmp_path, {"torch_autocast": {"enabled": "auto", "dtype": "bfloat16"}, "bf16": {"enabled": "auto"}})
    ds = build_ds_config(TrainConfig(precision="bf16", ds_config=path), device="cpu")
    assert ds["torch_autocast"]["enabled"] is True and ds["bf16"]["enabled"] is False
    ds = build_ds_config(TrainConfig(precision="fp32", ds_config=path), device="cpu")
    assert ds["torch_autocast"]["enabled"] is False and ds["bf16"]["enabled"] is False


def test_every_mismatch_is_reported_at_once_naming_file_and_keys(tmp_path):
    path = write(tmp_path, {
        "train_micro_batch_size_per_gpu": 16, "gradient_accumulation_steps": 2, "gradient_clipping": 5.0,
        "optimizer": {"type": "AdamW", "params": {"lr": 1e-3, "weight_decay": "auto", "betas": [0.8, 0.99]}},
        "scheduler": {"type": "WarmupDecayLR", "params": {"total_num_steps": 7, "warmup_num_steps": "auto"}},
        "bf16": {"enabled": True},
    }, "zero2_custom.json")
    cfg = TrainConfig(batch_size=8, ds_config=path, precision="fp32")
    with pytest.raises(InputError) as err:
        build_ds_config(cfg, world_size=1, total_steps=50, warmup_steps=5, device="cpu")
    text = str(err.value)
    assert text.startswith("ds_config zero2_custom.json: ")
    assert "\n" not in text
    for part in ("train_micro_batch_size_per_gpu=16 but recipe train.batch_size gives 8",
                 "gradient_accumulation_steps=2 but recipe train.gradient_accumulation gives 1",
                 "gradient_clipping=5.0 but recipe train.max_grad_norm gives 1.0",
                 "optimizer.params.lr=0.001 but recipe train.lr gives 5e-05",
                 "optimizer.params.betas=[0.8, 0.99]",
                 "scheduler.params.total_num_steps=7",
                 "bf16.enabled=true but recipe train.precision gives false"):
        assert part in text, part


def test_explicit_values_that_agree_are_accepted_and_optimizer_auto_is_filled(tmp_path):
    path = write(tmp_path, {
        "train_batch_size": 16, "train_micro_batch_size_per_gpu": 8, "gradient_clipping": 1.0,
        "optimizer": {"type": "AdamW", "params": {"lr": "auto", "weight_decay": "auto", "eps": "auto"}},
        "scheduler": {"type": "WarmupDecayLR", "params": {"total_num_steps": "auto", "warmup_num_steps": "auto",
                                                          "warmup_max_lr": "auto"}},
    })
    ds = build_ds_config(TrainConfig(batch_size=8, lr=3e-5, weight_decay=0.01, ds_config=path, precision="fp32"),
                         world_size=2, total_steps=40, warmup_steps=4, device="cpu")
    assert ds["optimizer"]["params"] == {"lr": 3e-5, "weight_decay": 0.01, "eps": 1e-8}
    assert ds["scheduler"]["params"] == {"total_num_steps": 40, "warmup_num_steps": 4, "warmup_max_lr": 3e-5}


def test_finetune_section_is_named_in_mismatches(tmp_path):
    from distill.recipe import FinetuneConfig

    path = write(tmp_path, {"train_micro_batch_size_per_gpu": 4})
    with pytest.raises(InputError, match="recipe teacher.finetune.batch_size gives 8"):
        build_ds_config(FinetuneConfig(ds_config=path, precision="fp32"), device="cpu")


def test_bad_json_names_file_line_and_column(tmp_path):
    path = write(tmp_path, '{\n  "train_micro_batch_size_per_gpu": 8,\n  "gradient_clipping": ,\n}', "broken.json")
    with pytest.raises(InputError, match=r"broken\.json: not valid JSON \(line 3, column 24\)"):
        build_ds_config(TrainConfig(ds_config=path, precision="fp32"), device="cpu")


def test_missing_file_is_an_input_error_listing_the_shipped_configs(tmp_path):
    with pytest.raises(InputError, match=r"nope\.json: file not found .*zero2_bf16\.json"):
        build_ds_config(TrainConfig(ds_config=str(tmp_path / "nope.json"), precision="fp32"), device="cpu")


def test_explicit_fp16_on_cpu_is_refused_by_the_config_builder():
    with pytest.raises(InputError, match="CUDA"):
        build_ds_config(TrainConfig(precision="fp16", ds_config="ds_configs/zero2_fp16.json"), device="cpu")


def test_train_config_rejects_bad_values_and_unknown_keys():
    from pydantic import ValidationError

    for bad in ({"alpha": 1.5}, {"temperature": 0}, {"batch_size": 0}, {"lr": -1}, {"batchsize": 8}):
        with pytest.raises(ValidationError):
            TrainConfig(**bad)
