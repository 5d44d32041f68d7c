"""Windowed model features: one row per (question, context window).

Reads: an examples Dataset from `distill.data.squad.load_squad`, a fast tokenizer, a `WindowConfig`.
Writes: an Arrow file in the datasets cache next to the examples' file, through a fingerprint-cached
`Dataset.map`, so the same (examples, tokenizer, window) never tokenises twice. Columns (see
docs/architecture.md): input_ids, attention_mask (+ token_type_ids), offset_mapping (None outside the
context), context_mask, start_positions, end_positions, example_id, feature_index.
`window_questions` windows one batch of question rows the same way into an in-memory Dataset (no
feature_index), writing nothing.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, model_validator


class WindowConfig(BaseModel):
    """How contexts are cut into model-sized windows (the recipe's `data.window` section)."""

    model_config = ConfigDict(extra="forbid")

    max_seq_length: PositiveInt = Field(384, description="Tokens per window: question, context and 3 special tokens.")
    doc_stride: PositiveInt = Field(128, description="Overlap in tokens between consecutive windows of one context "
                                                     "(as in HF run_qa); < max_seq_length - max_query_length - 3.")
    max_query_length: PositiveInt = Field(64, description="Questions are cut to this many tokens.")

    @model_validator(mode="after")
    def _fits(self) -> "WindowConfig":
        # [CLS] question [SEP] context [SEP]: at least one context token must fit after the question.
        room = self.max_seq_length - self.max_query_length - 3
        if room < 1:
            raise ValueError(
                f"max_query_length + 3 ({self.max_query_length + 3}) must be smaller than max_seq_length"
                f" ({self.max_seq_length})"
            )
        # doc_stride is the overlap between windows (as in HF run_qa): it must leave new context in each
        # window, or the tokenizer's overflow panics (a Rust PanicException, not a Python error).
        if self.doc_stride >= room:
            raise ValueError(
                f"doc_stride ({self.doc_stride}) is the overlap between windows and must be smaller than"
                f" max_seq_length - max_query_length - 3 = {room}, the context room left after the question"
            )
        return self


def _truncate_questions(questions: list[str], tokenizer, max_tokens: int) -> list[str]:
    """Cut each question to at most `max_tokens` tokens, at token boundaries.

    The fast tokenizer cannot truncate the first sequence to a limit while overflowing the second, so
    the question text is cut at the end offset of its last allowed token. For WordPiece this is exact:
    greedy longest-match of a word prefix that ends on a piece boundary yields the same pieces. Other
    tokenizers (BPE merges) may re-tokenise the cut text differently, so the result is checked and cut
    one token earlier until it fits.
    """
    enc = tokenizer(questions, add_special_tokens=False, return_offsets_mapping=True)
    out = list(questions)
    long = [i for i, ids in enumerate(enc["input_ids"]) if len(ids) > max_tokens]
    for i in long:
        offsets = enc["offset_mapping"][i]
        keep = max_tokens
        while keep > 0:
            cut = questions[i][: offsets[keep - 1][1]]
            if len(tokenizer(cut, add_special_tokens=False)["input_ids"]) <= max_tokens:
                break
            keep -= 1
        out[i] = cut
    return out


def _window_batch(batch: dict[str, list], tokenizer, max_seq_length: int, doc_stride: int, max_query_length: int,
                  with_token_types: bool) -> dict[str, list]:
    # Leading whitespace in some SQuAD questions would eat context room after truncation (as HF run_qa).
    questions = _truncate_questions([q.lstrip() for q in batch["question"]], tokenizer, max_query_length)
    enc = tokenizer(
        questions,
        batch["context"],
        truncation="only_second",
        max_length=max_seq_length,
        stride=doc_stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        padding="max_length",
    )
    out: dict[str, list] = {k: [] for k in ("input_ids", "attention_mask", "offset_mapping", "context_mask",
                                             "start_positions", "end_positions", "example_id")}
    if with_token_types:
        out["token_type_ids"] = []
    for i, sample in enumerate(enc["overflow_to_sample_mapping"]):
        seq_ids = enc.sequence_ids(i)
        offsets = enc["offset_mapping"][i]
        context_mask = [1 if s == 1 else 0 for s in seq_ids]
        out["input_ids"].append(enc["input_ids"][i])
        out["attention_mask"].append(enc["attention_mask"][i])
        if with_token_types:
            out["token_type_ids"].append(enc["token_type_ids"][i])
        out["offset_mapping"].append([list(o) if m else None for o, m in zip(offsets, context_mask)])
        out["context_mask"].append(context_mask)
        out["example_id"].append(batch["id"][sample])

        start_tok = end_tok = 0
        answers = batch["answers"][sample]
        if not batch["is_impossible"][sample] and answers["text"]:
            start_char = answers["answer_start"][0]
            end_char = start_char + len(answers["text"][0])
            first = context_mask.index(1)
            last = len(context_mask) - 1 - context_mask[::-1].index(1)
            if offsets[first][0] <= start_char and offsets[last][1] >= end_char:
                start_tok = first
                while start_tok <= last and offsets[start_tok][0] <= start_char:
                    start_tok += 1
                start_tok -= 1
                end_tok = last
                while end_tok >= first and offsets[end_tok][1] >= end_char:
                    end_tok -= 1
                end_tok += 1
        out["start_positions"].append(start_tok)
        out["end_positions"].append(end_tok)
    return out


def _feature_types(with_token_types: bool):
    from datasets import Features, List, Value

    # int32 keeps the Arrow file half the size of int64; embeddings and masks accept int32 tensors.
    cols = {
        "input_ids": List(Value("int32")),
        "attention_mask": List(Value("int32")),
        **({"token_type_ids": List(Value("int32"))} if with_token_types else {}),
        "offset_mapping": List(List(Value("int32"))),
        "context_mask": List(Value("int32")),
        "start_positions": Value("int64"),
        "end_positions": Value("int64"),
        "example_id": Value("string"),
    }
    return Features(cols)


def prepare_features(examples, tokenizer, window: WindowConfig | None = None, *, num_proc: int | None = None,
                     desc: str = "Windowing questions", load_from_cache_file: bool | None = None):
    """Tokenise and window `examples` (see module doc); cached by (examples, tokenizer, window)."""
    window = window or WindowConfig()
    if not getattr(tokenizer, "is_fast", False):
        raise TypeError("prepare_features needs a fast tokenizer (offset mappings)")
    # Windows are context-second with right padding: offsets and context_mask assume it.
    assert tokenizer.padding_side == "right", f"tokenizer padding_side must be 'right', got {tokenizer.padding_side!r}"
    with_token_types = "token_type_ids" in tokenizer.model_input_names
    # from_pretrained records HF_HUB_OFFLINE as local_files_only, and map hashes the whole tokenizer: left in, the
    # same windows (and the teacher and logit caches keyed on them) would get one key online and another offline
    tokenizer.init_kwargs.pop("local_files_only", None)
    features = examples.map(
        _window_batch,
        batched=True,
        remove_columns=examples.column_names,
        fn_kwargs={
            "tokenizer": tokenizer,
            "max_seq_length": window.max_seq_length,
            "doc_stride": window.doc_stride,
            "max_query_length": window.max_query_length,
            "with_token_types": with_token_types,
        },
        features=_feature_types(with_token_types),
        num_proc=num_proc,
        desc=desc,
        load_from_cache_file=load_from_cache_file,
    )
    # feature_index is a global row number, which a (possibly multi-process) batched map cannot know;
    # a small in-memory column with a deterministic fingerprint keeps the big file as the only cache file.
    return features.add_column("feature_index", list(range(len(features))))


def window_questions(rows: dict[str, list], tokenizer, window: WindowConfig):
    """prepare_features' windowing for one batch of question rows (columns as lists), as an in-memory Dataset.

    `prepare_features` itself runs `Dataset.map`, whose fingerprint hashes the whole tokenizer
    (~0.2 s a call): paid once per dataset in `distill eval`, it would swamp a per-batch latency.
    """
    from datasets import Dataset

    with_token_types = "token_type_ids" in tokenizer.model_input_names
    columns = _window_batch(rows, tokenizer, window.max_seq_length, window.doc_stride, window.max_query_length,
                            with_token_types)
    return Dataset.from_dict(columns, features=_feature_types(with_token_types))


def window_lengths(features):
    """Real (unpadded) tokens of each window, as a numpy int array in feature order."""
    import numpy as np

    if not len(features):
        return np.zeros(0, dtype=np.int64)
    return features.with_format("numpy", columns=["attention_mask"])[:]["attention_mask"].sum(axis=1)


def join_transfer(features, transfer):
    """The training windows followed by the transfer windows, with a `labelled` column (1: gold spans, 0: a
    transfer window, trained on the KD term alone); `features` unchanged when there is no transfer set."""
    from datasets import concatenate_datasets

    if transfer is None:
        return features
    return concatenate_datasets([features.add_column("labelled", [1] * len(features)),
                                 transfer.add_column("labelled", [0] * len(transfer))])
