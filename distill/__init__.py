"""distill: distil a teacher question-answering model into a smaller, faster student.

Pipeline, one module per stage:
raw SQuAD JSON (data.squad) -> windowed features (data.features) -> teacher logit cache (teacher)
-> student training (train, losses) -> predictions (predict, postprocess) -> EM/F1 (metrics)
-> bench.json / report.md (bench, report).
"""

__version__ = "0.1.0"
