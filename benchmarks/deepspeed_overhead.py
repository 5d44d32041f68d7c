"""What DeepSpeed costs per training step on CPU, against a plain PyTorch loop.

Reads: nothing but `ds_configs/zero2_bf16.json` (the shipped config, filled like train.py fills it).
Writes: benchmarks/results/deepspeed_overhead.json (and prints it).

A DistilBERT-base-sized QA model (random init from `DistilBertConfig()`), seq 384, batch 8, bf16:
  plain      fp32 weights, torch.autocast(bf16) forward, torch AdamW, grad clipping
  plain_pure_bf16   the model cast to bf16 (what DeepSpeed's `bf16` block does to the module)
  plain_fp32 no autocast at all (what a DeepSpeed engine without an enabled precision block computes)
  ds_before  the textbook ZeRO-2 bf16 config: `"bf16": {"enabled": true}`, overlap_comm, contiguous
             gradients, 5e8 buckets
  ds_fp32    the same ZeRO-2 engine without any precision block (isolates the engine from bf16)
  ds_after   ds_configs/zero2_bf16.json as shipped, filled by distill.ds_config like train.py does
All variants live in ONE process and their timed steps run round-robin, so the ratios compare like with like
even on a machine shared with other jobs. Wall s/step is the least-disturbed (min) step, median kept too;
CPU s/step (process time, median) is the figure least moved by other jobs on a shared machine.

Usage: DS_ACCELERATOR=cpu .venv/bin/python benchmarks/deepspeed_overhead.py [--warmup 2] [--steps 5]
       [--variants plain ds_before ds_after] [--profile]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "deepspeed_overhead.json"

SEQ, BATCH, LR = 384, 8, 5e-5

BEFORE = {
    "train_micro_batch_size_per_gpu": BATCH,
    "gradient_accumulation_steps": 1,
    "gradient_clipping": 1.0,
    "bf16": {"enabled": True},
    "zero_optimization": {
        "stage": 2, "overlap_comm": True, "contiguous_gradients": True,
        "reduce_scatter": True, "reduce_bucket_size": 5e8, "allgather_bucket_size": 5e8,
    },
    "steps_per_print": 10**9,
}


def make_model():
    from transformers import DistilBertConfig, DistilBertForQuestionAnswering

    torch.manual_seed(0)
    return DistilBertForQuestionAnswering(DistilBertConfig())


def make_batch():
    g = torch.Generator().manual_seed(1)
    return {
        "input_ids": torch.randint(1000, 30000, (BATCH, SEQ), generator=g),
        "attention_mask": torch.ones(BATCH, SEQ, dtype=torch.long),
        "start_positions": torch.randint(0, SEQ, (BATCH,), generator=g),
        "end_positions": torch.randint(0, SEQ, (BATCH,), generator=g),
    }


def plain_step_fn(pure_bf16: bool, autocast: bool = True):
    model = make_model()
    if pure_bf16:
        model = model.to(torch.bfloat16)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=LR)
    batch = make_batch()

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast and not pure_bf16):
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step, None


def ds_step_fn(config: dict):
    import deepspeed

    model = make_model()
    opt = torch.optim.AdamW(model.parameters(), lr=LR)
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=opt, config=copy.deepcopy(config))
    batch = make_batch()

    def step():
        loss = engine(**batch).loss
        engine.backward(loss)
        engine.step()

    return step, engine


def shipped_after_config() -> dict:
    from distill.ds_config import build_ds_config
    from distill.recipe import TrainConfig

    cfg = TrainConfig(batch_size=BATCH, precision="bf16", ds_config=str(ROOT / "ds_configs" / "zero2_bf16.json"))
    return build_ds_config(cfg, world_size=1)


def profile_once(step, label: str) -> list[str]:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12)
    print(f"--- profile {label}\n{table}")
    return table.splitlines()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--variants", nargs="+",
                    default=["plain", "plain_pure_bf16", "ds_before", "ds_fp32", "ds_after"])
    ap.add_argument("--profile", action="store_true", help="print a torch.profiler table of one step per variant")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()

    from distill.distributed import free_port

    for key, value in {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": str(free_port())}.items():
        os.environ.setdefault(key, value)
    import deepspeed

    deepspeed.init_distributed(dist_backend="gloo")

    ds_fp32 = {k: v for k, v in BEFORE.items() if k != "bf16"}
    configs = {"ds_before": BEFORE, "ds_fp32": ds_fp32, "ds_after": shipped_after_config()}
    results = {"model": "DistilBertForQuestionAnswering(DistilBertConfig()) random init", "seq": SEQ,
               "batch": BATCH, "warmup_steps": args.warmup, "timed_steps": args.steps,
               "torch_threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
               "configs": {k: configs[k] for k in args.variants if k in configs}, "s_per_step": {},
               "load_average_at_start": os.getloadavg()}
    steps_by_name = {}
    for name in args.variants:
        if name.startswith("plain"):
            steps_by_name[name] = plain_step_fn(pure_bf16=name == "plain_pure_bf16", autocast=name != "plain_fp32")[0]
        else:
            steps_by_name[name] = ds_step_fn(configs[name])[0]
        for _ in range(args.warmup):
            steps_by_name[name]()
    # round-robin: on a shared machine, load changes hit every variant alike instead of whichever ran then
    times = {name: [] for name in args.variants}
    cpu = {name: [] for name in args.variants}
    for _ in range(args.steps):
        for name, step in steps_by_name.items():
            t0, c0 = time.perf_counter(), time.process_time()
            step()
            times[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    # CPU seconds of this process per step: the work done, much less sensitive than wall time to other jobs
    results["cpu_s_per_step"] = {n: round(sorted(c)[len(c) // 2], 3) for n, c in cpu.items()}
    for name in args.variants:
        ts = sorted(times[name])
        # min = the least-disturbed step (the usual statistic on a shared machine); median kept for the record
        results["s_per_step"][name] = round(ts[0], 3)
        results.setdefault("s_per_step_median", {})[name] = round(ts[len(ts) // 2], 3)
        results.setdefault("all_step_times", {})[name] = [round(t, 3) for t in times[name]]
        print(f"{name:16s} min {ts[0]:.3f}  median {ts[len(ts) // 2]:.3f} s/step  "
              f"({', '.join(f'{t:.2f}' for t in times[name])})", flush=True)
        if args.profile:
            results.setdefault("profiles", {})[name] = profile_once(steps_by_name[name], name)

    base = results["s_per_step"].get("plain")
    if base:
        results["ratio_vs_plain"] = {k: round(v / base, 3) for k, v in results["s_per_step"].items()}
        med = results["s_per_step_median"]
        results["ratio_vs_plain_median"] = {k: round(v / med["plain"], 3) for k, v in med.items()}
        print("ratios vs plain (min):", json.dumps(results["ratio_vs_plain"]))
        print("ratios vs plain (median):", json.dumps(results["ratio_vs_plain_median"]))
        c = results["cpu_s_per_step"]
        results["cpu_ratio_vs_plain"] = {k: round(v / c["plain"], 3) for k, v in c.items()}
        print("CPU s/step (median):", json.dumps(c))
        print("CPU-time ratios vs plain:", json.dumps(results["cpu_ratio_vs_plain"]))
    results["load_average"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
