"""How good are the samples: distances between sets of samples, the digit feature space, the report.

- ``metrics``: Frechet distance, MMD, nearest-neighbour distances.
- ``classifier``: the small MLP digit classifier whose features the digit metrics use.
- ``evaluate``: a trained model's samples against held-out real data, and the text report.
"""

from .evaluate import evaluate_model, evaluate_samples, feature_fn, format_report, split_halves

__all__ = ["evaluate_model", "evaluate_samples", "feature_fn", "format_report", "split_halves"]
