"""Stand-in models for tests and benchmarks: tiny random-init BERT and DistilBERT QA models with the real
MiniLM vocab (that of bert-base-uncased and distilbert-base-uncased), shaped like the flagship's pair.

Reads: a tokenizer directory (usually `distill.models.packaged_minilm_dir()`). Writes: a Hugging Face
model directory (config, safetensors weights, tokenizer). The weights depend only on the arguments,
so the same call gives byte-identical weights on every run.
"""

from __future__ import annotations

from pathlib import Path


def make_tiny_bert(path: Path, tokenizer_dir: Path, *, layers: int = 2, hidden: int = 32, seed: int = 0) -> Path:
    """A tiny BERT QA model with the real MiniLM vocab, saved with its tokenizer; returns `path`."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForQuestionAnswering

    torch.manual_seed(seed)
    cfg = BertConfig(
        vocab_size=30522, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
        intermediate_size=hidden * 2, max_position_embeddings=512,
    )
    BertForQuestionAnswering(cfg).save_pretrained(path)
    AutoTokenizer.from_pretrained(str(tokenizer_dir)).save_pretrained(path)
    return path


def make_tiny_distilbert(path: Path, tokenizer_dir: Path, *, layers: int = 1, hidden: int = 32, seed: int = 0) -> Path:
    """A tiny DistilBERT QA model with the real MiniLM vocab, saved with a tokenizer that emits no token_type_ids."""
    import torch
    from transformers import AutoTokenizer, DistilBertConfig, DistilBertForQuestionAnswering

    from distill.models import save_tokenizer_for

    torch.manual_seed(seed)
    cfg = DistilBertConfig(vocab_size=30522, dim=hidden, n_layers=layers, n_heads=2, hidden_dim=hidden * 2,
                           max_position_embeddings=512)
    model = DistilBertForQuestionAnswering(cfg)
    model.save_pretrained(path)
    save_tokenizer_for(model, AutoTokenizer.from_pretrained(str(tokenizer_dir)), path)
    return path
