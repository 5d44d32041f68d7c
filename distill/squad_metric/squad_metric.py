"""`evaluate` wrapper around distill.metrics: the official SQuAD v1.1 / v2.0 EM and F1.

Load offline with `evaluate.load("<path>/distill/squad_metric")` or `distill.metrics.load_evaluate_metric()`;
config_name "squad" (default, v1.1) or "squad_v2". Reads predictions and references in the format of
Hugging Face's "squad" / "squad_v2" metrics; writes nothing but evaluate's own temporary Arrow cache.
Returns exactly what `distill.metrics.score_v1` / `score_v2` return.
"""

import datasets
import evaluate

from distill.metrics import score_v1, score_v2

_DESCRIPTION = "SQuAD v1.1 / v2.0 exact match and F1 with the official scripts' semantics (distill.metrics)."
_CITATION = """@inproceedings{rajpurkar-etal-2016-squad, title = "{SQ}u{AD}: 100,000+ Questions for Machine
Comprehension of Text", author = "Rajpurkar, Pranav and Zhang, Jian and Lopyrev, Konstantin and Liang, Percy",
booktitle = "EMNLP", year = "2016"}"""
_KWARGS_DESCRIPTION = """
Args:
    predictions: list of {"id": str, "prediction_text": str}; "squad_v2" also needs
        "no_answer_probability": float (so best_* keys are returned, as with the official --na-prob-file).
    references: list of {"id": str, "answers": {"text": list[str], "answer_start": list[int]}};
        "squad_v2": empty answers mean the question is unanswerable.
    no_answer_threshold ("squad_v2" only): predict no answer when the probability exceeds it (default 1.0).
Returns:
    "squad": {"exact_match", "f1"}; "squad_v2": exact, f1, total, HasAns_*, NoAns_*[, best_*].
"""

_ANSWERS = datasets.Sequence({"text": datasets.Value("string"), "answer_start": datasets.Value("int32")})


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class SquadMetric(evaluate.Metric):
    def _info(self):
        if self.config_name not in ("default", "squad", "squad_v2"):
            raise ValueError(f"config_name {self.config_name!r}: expected 'squad' or 'squad_v2'")
        references = {"id": datasets.Value("string"), "answers": _ANSWERS}
        prediction = {"id": datasets.Value("string"), "prediction_text": datasets.Value("string")}
        if self.config_name == "squad_v2":
            # Required, as in HF "squad_v2"; float64 rather than its float32 so probabilities compare exactly
            # as they do in the official script.
            prediction["no_answer_probability"] = datasets.Value("float64")
        features = datasets.Features({"predictions": prediction, "references": references})
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=features,
            reference_urls=["https://rajpurkar.github.io/SQuAD-explorer/"],
        )

    def _compute(self, predictions, references, no_answer_threshold: float = 1.0):
        preds = {p["id"]: p["prediction_text"] for p in predictions}
        golds = {r["id"]: list(r["answers"]["text"]) for r in references}
        if self.config_name != "squad_v2":
            return score_v1(golds, preds)
        na_probs = {p["id"]: p["no_answer_probability"] for p in predictions}
        return dict(score_v2(golds, preds, na_probs, no_answer_threshold))
