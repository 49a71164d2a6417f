"""Aggregate noisy annotations: majority vote, Dawid-Skene EM reliability, Bradley-Terry with raters.

Pure numpy. Estimators return a posterior per item and a reliability per annotator; the export helpers
turn posteriors into weighted feedback records in the JSONL shape that `train-rm` reads.
- labels:   `majority_vote`, `dawid_skene` (Dawid & Skene 1979; one-coin / two-coin, gold-anchored)
- crowd_bt: `crowd_bradley_terry` (Bradley-Terry with per-annotator temperature and sign)
- ratings:  `rating_reliability` (precision-weighted consensus of numeric ratings)
- export:   `pairwise_records`, `label_records`, `annotation_records`, `write_jsonl`
- rows:     `aggregate_records` (API annotation rows -> one record per task; used by the export endpoint)
- report:   `quality_report` (per-annotator reliability and Krippendorff's alpha per task kind)
"""

from rlhfkit.feedback.aggregate.crowd_bt import Comparison, CrowdBTResult, crowd_bradley_terry, ranking_to_comparisons
from rlhfkit.feedback.aggregate.export import (
                                               LabelItem,
                                               PairItem,
                                               annotation_records,
                                               label_records,
                                               pairwise_records,
                                               write_jsonl,
)
from rlhfkit.feedback.aggregate.labels import (
                                               AggregateResult,
                                               AnnotatorReliability,
                                               ReliabilityModel,
                                               Vote,
                                               dawid_skene,
                                               majority_vote,
)
from rlhfkit.feedback.aggregate.ratings import rating_reliability
from rlhfkit.feedback.aggregate.report import quality_report
from rlhfkit.feedback.aggregate.rows import AggregateMethod, aggregate_records

__all__ = ["AggregateMethod", "AggregateResult", "AnnotatorReliability", "Comparison", "CrowdBTResult", "LabelItem",
           "PairItem", "ReliabilityModel", "Vote", "aggregate_records", "annotation_records", "crowd_bradley_terry",
           "dawid_skene", "label_records", "majority_vote", "pairwise_records", "quality_report",
           "ranking_to_comparisons", "rating_reliability", "write_jsonl"]
