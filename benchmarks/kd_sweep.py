"""KD settings sweep for the squad_cpu benchmark shape, scored on HELD-OUT TRAIN questions (never dev).

Reads: a train slice and a held-out slice of train-v1.1 (articles disjoint from the train slice), a base
encoder directory (all-MiniLM-L6-v2). Writes: one JSON with the teacher's and every student's held-out
EM/F1, rewritten after each variant so a cut-short run still reports what it finished.

Same shape as benchmarks/squad_cpu.py (teacher fine-tuned once with CE, logits cached once, 3-layer
students, same data and steps per variant pair) and the same distill modules for windowing, loss,
post-processing and scoring; the loop is plain PyTorch with bf16 autocast instead of DeepSpeed, so the
sweep runs wherever torch does (it was run on a lent GPU to try many settings quickly). Its purpose is
to choose T / alpha / epochs / init / lr / masking before the real CPU benchmark, without touching dev.

    python benchmarks/kd_sweep.py --train train.json --heldout heldout.json --model MINILM_DIR --out sweep.json
    python benchmarks/kd_sweep.py --render results/kd_sweep.json results/kd_sweep_lr2e-4.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# name: (temperature, alpha, epochs, lr, init, layers, kd_mask)
#   init "teacher" = layers of the fine-tuned teacher (its QA head too); "base" = base encoder layers + new head
#   kd_mask "context" = KD over context tokens + CLS (distill's loss); "all" = every real token
VARIANTS = {  # most informative first: a time budget cuts from the end
    "ce_e1": (2.0, 0.0, 1, 1e-4, "teacher", (0, 2, 4), "context"),
    "T2_a0.5_e1": (2.0, 0.5, 1, 1e-4, "teacher", (0, 2, 4), "context"),
    "T2_a0.9_e1": (2.0, 0.9, 1, 1e-4, "teacher", (0, 2, 4), "context"),
    "T2_a1.0_e1": (2.0, 1.0, 1, 1e-4, "teacher", (0, 2, 4), "context"),
    "ce_e2": (2.0, 0.0, 2, 1e-4, "teacher", (0, 2, 4), "context"),
    "T2_a0.9_e2": (2.0, 0.9, 2, 1e-4, "teacher", (0, 2, 4), "context"),
    "ce_e3": (2.0, 0.0, 3, 1e-4, "teacher", (0, 2, 4), "context"),
    "T2_a0.9_e3": (2.0, 0.9, 3, 1e-4, "teacher", (0, 2, 4), "context"),
    "T4_a0.9_e1": (4.0, 0.9, 1, 1e-4, "teacher", (0, 2, 4), "context"),
    "T1_a0.9_e1": (1.0, 0.9, 1, 1e-4, "teacher", (0, 2, 4), "context"),
    "T2_a0.5_e1_base": (2.0, 0.5, 1, 1e-4, "base", (0, 2, 4), "context"),
    "ce_e1_base": (2.0, 0.0, 1, 1e-4, "base", (0, 2, 4), "context"),
    "T2_a0.5_e1_allmask": (2.0, 0.5, 1, 1e-4, "teacher", (0, 2, 4), "all"),
    "T2_a0.5_e1_lr2e-4": (2.0, 0.5, 1, 2e-4, "teacher", (0, 2, 4), "context"),
    "ce_e1_lr2e-4": (2.0, 0.0, 1, 2e-4, "teacher", (0, 2, 4), "context"),
    "T2_a0.5_e1_L135": (2.0, 0.5, 1, 1e-4, "teacher", (1, 3, 5), "context"),
    "T2_a0.5_e1_L012": (2.0, 0.5, 1, 1e-4, "teacher", (0, 1, 2), "context"),
    "T4_a0.5_e1": (4.0, 0.5, 1, 1e-4, "teacher", (0, 2, 4), "context"),
    "T2_a0.5_e2": (2.0, 0.5, 2, 1e-4, "teacher", (0, 2, 4), "context"),
    "T2_a0.5_e3": (2.0, 0.5, 3, 1e-4, "teacher", (0, 2, 4), "context"),
    "ce_e2_lr2e-4": (2.0, 0.0, 2, 2e-4, "teacher", (0, 2, 4), "context"),
    "T2_a0.5_e2_lr2e-4": (2.0, 0.5, 2, 2e-4, "teacher", (0, 2, 4), "context"),
    "T2_a0.9_e2_lr2e-4": (2.0, 0.9, 2, 2e-4, "teacher", (0, 2, 4), "context"),
    "T2_a0.7_e2_lr2e-4": (2.0, 0.7, 2, 2e-4, "teacher", (0, 2, 4), "context"),
}


def render(runs: list[dict]) -> str:
    """Markdown table of one or more sweep JSONs; each KD row is paired with the CE-only row that shares
    its epochs, lr, init and layers (same data and steps), which gives its KD gain."""
    lines = []
    for run in runs:
        v = {k: x for k, x in run["variants"].items() if isinstance(x, dict)}
        lines += [f"teacher (held-out F1 {run['teacher']['f1']}, EM {run['teacher']['exact_match']}), "
                  f"{run['n_train_questions']} train questions ({run['n_train_features']} windows), "
                  f"{run['n_heldout_questions']} held-out train questions, device {run['device']}", "",
                  "| variant | T | alpha | epochs | lr | init | layers | KD mask | EM | F1 | retention | KD gain (F1) |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for name, x in v.items():
            twin = next((y for y in v.values() if y["alpha"] == 0 and all(
                y[k] == x[k] for k in ("epochs", "lr", "init", "layers"))), None)
            gain = f"{x['f1'] - twin['f1']:+.2f}" if twin and x["alpha"] > 0 else ""
            lines.append(f"| {name} | {x['T']} | {x['alpha']} | {x['epochs']} | {x['lr']} | {x['init']} | "
                         f"{','.join(map(str, x['layers']))} | {x['kd_mask']} | {x['exact_match']} | {x['f1']} | "
                         f"{100 * x['retention']:.1f}% | {gain} |")
        lines.append("")
    return "\n".join(lines)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--render", nargs="+", metavar="JSON", help="only print the Markdown table of earlier sweeps")
    p.add_argument("--train")
    p.add_argument("--heldout")
    p.add_argument("--model", help="base encoder directory (all-MiniLM-L6-v2)")
    p.add_argument("--out")
    p.add_argument("--train-questions", type=int, default=12000)
    p.add_argument("--max-seq-length", type=int, default=256)
    p.add_argument("--doc-stride", type=int, default=96)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--teacher-lr", type=float, default=1e-4)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--budget-s", type=float, default=1e9, help="skip the remaining variants past this")
    return p.parse_args()


def load_qa(model_dir: str):
    import torch
    from transformers import AutoModelForQuestionAnswering

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # the same new head as distill.models.load_qa_model
        return AutoModelForQuestionAnswering.from_pretrained(model_dir, dtype=torch.float32)


def train(model, features, *, device, epochs, lr, batch_size, seed, temperature=2.0, alpha=0.0, logits=None,
          kd_mask="context", weight_decay=0.01, warmup_ratio=0.1, max_grad_norm=1.0):
    """distill.train's loop without DeepSpeed: same order, trimming, loss, AdamW groups and schedule."""
    import torch
    from transformers import get_linear_schedule_with_warmup

    from distill.losses import distillation_loss, valid_positions_mask
    from distill.train import MODEL_INPUTS, epoch_order, seed_everything, trim_padding

    seed_everything(seed)
    model.to(device).train()
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=lr)
    steps_per_epoch = math.ceil(len(features) / batch_size)
    total = steps_per_epoch * epochs
    sched = get_linear_schedule_with_warmup(opt, math.ceil(total * warmup_ratio), total)
    cols = [c for c in (*MODEL_INPUTS, "context_mask", "start_positions", "end_positions") if c in features.column_names]
    rows = features.with_format("torch", columns=cols)
    for epoch in range(epochs):
        order = epoch_order(len(features), batch_size, seed, epoch)
        for s in range(steps_per_epoch):
            idx = order[s * batch_size:(s + 1) * batch_size]
            batch = trim_padding({k: v.to(device) for k, v in rows[idx].items()})
            width = batch["input_ids"].shape[1]
            t_start = t_end = None
            if alpha > 0:
                t_start = torch.from_numpy(logits[0][idx, :width]).to(device)
                t_end = torch.from_numpy(logits[1][idx, :width]).to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16):
                out = model(**{k: batch[k] for k in MODEL_INPUTS if k in batch})
            mask = (valid_positions_mask(batch["context_mask"]) if kd_mask == "context"
                    else batch["attention_mask"].bool())
            loss = distillation_loss(out.start_logits, out.end_logits, t_start, t_end, batch["start_positions"],
                                     batch["end_positions"], mask, temperature=temperature, alpha=alpha)["loss"]
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
    return model.eval()


def main() -> int:
    args = parse_args()
    if args.render:
        print(render([json.loads(Path(f).read_text()) for f in args.render]))
        return 0
    if not (args.train and args.heldout and args.model and args.out):
        sys.exit("kd_sweep.py: --train, --heldout, --model and --out are required (or --render)")
    import torch

    from distill.data.features import WindowConfig, prepare_features
    from distill.data.squad import load_squad, take_questions
    from distill.metrics import score_examples
    from distill.models import load_tokenizer, student_from_teacher_layers
    from distill.predict import compute_logits, predict

    t_all = time.perf_counter()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tok = load_tokenizer(args.model)
    window = WindowConfig(max_seq_length=args.max_seq_length, doc_stride=args.doc_stride)
    train_ex = take_questions(load_squad(args.train, split="train"), args.train_questions)
    held_ex = load_squad(args.heldout, split="validation")
    train_f = prepare_features(train_ex, tok, window)
    held_f = prepare_features(held_ex, tok, window)
    result = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
              "torch": torch.__version__, "settings": vars(args), "n_train_questions": len(train_ex),
              "n_train_features": len(train_f), "n_heldout_questions": len(held_ex), "variants": {}}

    def score(model):
        preds, _, version = predict(model, held_ex, held_f, batch_size=128, precision="bf16", progress=False)
        s = score_examples(held_ex, preds, version=version)
        return {"exact_match": round(s["exact_match"], 2), "f1": round(s["f1"], 2)}

    def save():
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2))

    t0 = time.perf_counter()
    teacher = train(load_qa(args.model), train_f, device=device, epochs=1, lr=args.teacher_lr,
                    batch_size=args.batch_size, seed=args.seed)
    result["teacher"] = {**score(teacher), "train_s": round(time.perf_counter() - t0, 1)}
    logits = compute_logits(teacher, train_f, batch_size=128, precision="bf16", device=str(device), progress=False)
    print("teacher", result["teacher"], flush=True)
    save()

    base = load_qa(args.model)
    for name in args.variants.split(","):
        if time.perf_counter() - t_all > args.budget_s:
            result["variants"][name] = "skipped: time budget"
            continue
        T, alpha, epochs, lr, init, layers, kd_mask = VARIANTS[name]
        t0 = time.perf_counter()
        student = student_from_teacher_layers(teacher if init == "teacher" else base, list(layers))
        student = train(student, train_f, device=device, epochs=epochs, lr=lr, batch_size=args.batch_size,
                        seed=args.seed, temperature=T, alpha=alpha, logits=logits, kd_mask=kd_mask)
        s = score(student)
        s.update(retention=round(s["f1"] / result["teacher"]["f1"], 4), train_s=round(time.perf_counter() - t0, 1),
                 T=T, alpha=alpha, epochs=epochs, lr=lr, init=init, layers=list(layers), kd_mask=kd_mask)
        result["variants"][name] = s
        print(name, s, flush=True)
        save()
        del student
    result["total_s"] = round(time.perf_counter() - t_all, 1)
    save()
    Path(args.out).with_suffix(".md").write_text(render([result]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
