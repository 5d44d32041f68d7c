"""Student training under DeepSpeed (placeholder while the loop is written)."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field


class TrainConfig(BaseModel):
    """The recipe's `train` section."""

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(3, gt=0, description="Passes over the training features (ignored when max_steps is set).")
    max_steps: Optional[int] = Field(None, gt=0, description="Stop after this many optimizer steps; overrides epochs.")
    batch_size: int = Field(8, gt=0, description="Micro batch per rank (DeepSpeed train_micro_batch_size_per_gpu).")
    gradient_accumulation: int = Field(1, gt=0, description="Micro batches per optimizer step.")
    lr: float = Field(5e-5, gt=0, description="Peak learning rate (AdamW), linear warmup then linear decay to 0.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    warmup_ratio: float = Field(0.1, ge=0, le=1, description="Fraction of optimizer steps spent warming up.")
    max_grad_norm: float = Field(1.0, ge=0, description="Gradient clipping (DeepSpeed gradient_clipping); 0 = off.")
    temperature: float = Field(2.0, gt=0, description="KD softmax temperature T (the KD term is scaled by T^2).")
    alpha: float = Field(0.5, ge=0, le=1, description="loss = alpha*KD + (1-alpha)*CE; 0 trains on gold spans only.")
    seed: int = Field(42, description="Seeds python, numpy, torch, dropout and the data order.")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto: fp16 on CUDA, bf16 on a CPU that supports it, else fp32.")
    ds_config: str = Field("ds_configs/zero2_bf16.json", description="DeepSpeed JSON; its \"auto\" values come from this section.")
    checkpoint_every: int = Field(0, ge=0, description="Checkpoint every N optimizer steps; 0 = only at the end.")
    keep_checkpoints: int = Field(2, gt=0, description="How many recent checkpoints to keep.")
    log_every: int = Field(10, gt=0, description="Log (train_log.jsonl, TensorBoard) every N optimizer steps.")
    online_teacher: bool = Field(False, description="Run the teacher every step instead of reading cached logits.")
