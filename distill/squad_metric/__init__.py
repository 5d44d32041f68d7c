"""Local `evaluate` module (squad_metric.py) delegating to distill.metrics; see distill.metrics.load_evaluate_metric."""
