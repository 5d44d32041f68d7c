"""Model cards: a README.md beside every saved model, in Hugging Face's model-card format.

Reads: the resolved recipe, the run's train_log.jsonl, the training data file, and the score dicts of
metrics.json. Writes DIR/README.md: YAML front matter (base_model, datasets, tags, a model-index with the
exact_match/f1 values), then what the model is, its training data, hyperparameters, per-epoch training
results, evaluation results under the official key names, framework versions and usage. Every number
comes from those files; nothing is typed in by hand.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path

import yaml

from distill.models import hub_id


def epoch_table(train_log: Path) -> list[dict]:
    """Per epoch: last step, mean training loss of the logged steps, mean validation loss where logged."""
    rows: dict[int, dict] = {}
    if not train_log.is_file():
        return []
    for line in train_log.read_text().splitlines():
        rec = json.loads(line)
        epoch = max(1, -int(-rec["epoch"] // 1))  # the epoch a step belongs to (1-based)
        row = rows.setdefault(epoch, {"epoch": epoch, "step": 0, "train": [], "eval": []})
        row["step"] = max(row["step"], rec["step"])
        (row["eval"] if "eval_loss" in rec else row["train"]).append(rec.get("eval_loss", rec.get("loss")))
    return [{"epoch": r["epoch"], "step": r["step"],
             "training_loss": sum(r["train"]) / len(r["train"]) if r["train"] else None,
             "validation_loss": r["eval"][-1] if r["eval"] else None} for r in rows.values()]


def _versions() -> dict:
    import deepspeed
    import torch
    import transformers

    import distill

    return {"distill": distill.__version__, "transformers": transformers.__version__, "torch": torch.__version__,
            "deepspeed": deepspeed.__version__, "python": platform.python_version()}


def _front_matter(name: str, base_model: str | None, dataset: str, version: str, scores: dict | None) -> str:
    # the hub validates these two as hub ids; local paths are named in the card's text instead
    meta = {"library_name": "transformers", "pipeline_tag": "question-answering",
            "tags": ["question-answering", "distill"]}
    if hub_id(dataset):
        meta["datasets"] = [hub_id(dataset)]
    if hub_id(base_model):
        meta["base_model"] = hub_id(base_model)
    if scores:
        metrics = [{"type": "exact_match", "value": round(scores.get("exact_match", scores.get("exact")), 2)},
                   {"type": "f1", "value": round(scores["f1"], 2)}]
        meta["model-index"] = [{"name": name, "results": [{
            "task": {"type": "question-answering", "name": "Question Answering"},
            "dataset": {"type": "squad_v2" if version == "2.0" else "squad", "name": dataset},
            "metrics": metrics}]}]
    return "---\n" + yaml.safe_dump(meta, sort_keys=False) + "---\n"


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def render_card(*, name: str, what: str, base_model: str | None, cfg, data: dict, epochs: list[dict],
                scores: dict | None, eval_data: dict | None, compute: str) -> str:
    """The card's Markdown. `data`: source, sha256, questions, windows, version. `cfg`: the train section."""
    hyper = {k: v for k, v in cfg.model_dump(mode="json").items() if k not in ("section",)}
    lines = [_front_matter(name, base_model, data["source"], data["version"], scores), f"# {name}", "", what, "",
             "## Training data", "",
             f"`{data['source']}` (sha256 `{data['sha256']}`): {data['questions']} questions, {data['windows']} "
             f"windows, SQuAD v{data['version']}.", *([data["transfer"]] if data.get("transfer") else []), "",
             "## Training hyperparameters", "", f"Computed as: {compute}.", "", "| key | value |", "|---|---|",
             *[f"| {k} | `{json.dumps(v)}` |" for k, v in hyper.items()], "",
             "## Training results", "", "| Epoch | Step | Training Loss | Validation Loss |", "|---:|---:|---:|---:|",
             *[f"| {r['epoch']} | {r['step']} | {_fmt(r['training_loss'])} | {_fmt(r['validation_loss'])} |"
               for r in epochs], "",
             "Training loss: the mean of the logged steps' losses in that epoch (`train_log.jsonl`).", ""]
    if scores:
        lines += ["## Evaluation results", "",
                  f"On `{eval_data['source']}` ({eval_data['questions']} questions), official SQuAD "
                  f"v{eval_data['version']} scoring:", "", "| metric | value |", "|---|---:|",
                  *[f"| {k} | {_fmt(v)} |" for k, v in scores.items()], ""]
    lines += ["## Framework versions", "", *[f"- {k} {v}" for k, v in _versions().items()], "",
              "## Usage", "", "```bash", f"distill answer {name} --question \"...\" --context \"...\"", "```", ""]
    return "\n".join(lines)


def write_card(model_dir: Path, text: str) -> Path:
    from distill.files import write_text

    path = Path(model_dir) / "README.md"
    write_text(path, text)
    return path


def data_summary(source: str, examples, features) -> dict:
    """What the card says of the training data: source, sha256 of a local file, counts, SQuAD version."""
    from distill.data.squad import squad_version
    from distill.files import sha256_file

    path = Path(source).expanduser()
    return {"source": source, "sha256": sha256_file(path) if path.is_file() else "n/a (hub dataset)",
            "questions": len(examples), "windows": len(features), "version": squad_version(examples)}


def _compute(cfg) -> str:
    from distill.ds_config import load_ds_json, zero_stage
    from distill.precision import resolve

    return f"{resolve(cfg.precision, quiet=True).key}, DeepSpeed ZeRO stage {zero_stage(load_ds_json(cfg.ds_config)[1])}"


def _student_what(recipe) -> tuple[str, str | None]:
    t, s = recipe.train, recipe.student
    how = f"under DeepSpeed with the loss alpha·KD·T² + (1 − alpha)·CE (T {t.temperature}, alpha {t.alpha})"
    if recipe.teacher is None:
        return f"`{s.model}` fine-tuned on SQuAD gold spans (cross-entropy) under DeepSpeed.", s.model
    teacher = f"the teacher `{recipe.teacher.model}`" + (" (fine-tuned on the training data first)"
                                                         if recipe.teacher.finetune else "")
    if s.from_teacher_layers is not None:
        kind = "DistilBERT" if s.architecture == "distilbert" else "model of the teacher's class"
        return (f"A {kind} made from layers {s.from_teacher_layers} of {teacher} (its embeddings and QA head too), "
                f"distilled {how}.", recipe.teacher.model)
    source = s.model or s.config
    return f"`{source}` distilled from {teacher} {how}.", s.model


def write_student_card(recipe, student_dir: Path, data: dict, metrics: dict) -> Path:
    what, base = _student_what(recipe)
    if "n_transfer_questions" in metrics:
        data = {**data, "transfer": f"Transfer set (answers ignored, trained on the teacher's logits alone): "
                                    f"`{recipe.data.transfer}`, {metrics['n_transfer_questions']} questions, "
                                    f"{metrics['n_transfer_features']} windows."}
    eval_data = {"source": recipe.data.eval, "questions": metrics["n_questions"], "version": metrics["version"]}
    text = render_card(name=str(student_dir), what=what, base_model=base, cfg=recipe.train, data=data,
                       epochs=epoch_table(Path(student_dir).parent / "train_log.jsonl"), scores=metrics["student"],
                       eval_data=eval_data, compute=_compute(recipe.train))
    return write_card(student_dir, text)


def write_teacher_card(recipe, teacher_dir: Path, data: dict) -> Path:
    """The fine-tuned teacher's card (training only: runs that use it report its scores in their metrics.json)."""
    what = (f"`{recipe.teacher.model}` fine-tuned on SQuAD gold spans (cross-entropy) under DeepSpeed, as the "
            "teacher of a distillation run; the runs that use it give its scores in their metrics.json.")
    text = render_card(name=str(teacher_dir), what=what, base_model=recipe.teacher.model, cfg=recipe.teacher.finetune,
                       data=data, epochs=epoch_table(Path(teacher_dir) / "train_log.jsonl"), scores=None,
                       eval_data=None, compute=_compute(recipe.teacher.finetune))
    return write_card(teacher_dir, text)
