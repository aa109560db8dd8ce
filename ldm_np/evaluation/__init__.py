"""How good are the samples: distances between sets of samples, the digit feature space, the report.

- ``metrics``: Frechet distance, MMD, nearest-neighbour distances.
- ``classifier``: the small MLP digit classifier whose features the digit metrics use.
- ``evaluate``: a trained model's samples against held-out real data, and the text report.
"""

from .evaluate import (
    evaluate_model,
    evaluate_run,
    evaluate_samples,
    feature_fn,
    feature_spaces,
    format_report,
    format_table,
    score_sets,
    split_halves,
    summarise,
)

__all__ = [
    "evaluate_model",
    "evaluate_run",
    "evaluate_samples",
    "feature_fn",
    "feature_spaces",
    "format_report",
    "format_table",
    "score_sets",
    "split_halves",
    "summarise",
]
