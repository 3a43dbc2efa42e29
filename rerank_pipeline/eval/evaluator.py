"""A sentence-transformers evaluator running our protocol, for ``CrossEncoderTrainer(evaluator=...)``."""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Sequence

try:  # sentence-transformers >= 6
    from sentence_transformers.base.evaluation.evaluator import BaseEvaluator
except ImportError:  # sentence-transformers 5.x
    from sentence_transformers.evaluation.SentenceEvaluator import SentenceEvaluator as BaseEvaluator

from rerank_pipeline.datasets import RetrievalDataset
from rerank_pipeline.eval.protocol import metric_names, model_card_strings, rerank_protocol_suite
from rerank_pipeline.rankings import Rankings

logger = logging.getLogger(__name__)


class RerankingEvaluator(BaseEvaluator):
    """Evaluate a reranker on one or more datasets with the R``rerank_k`` protocol during training.

    ``RerankingEvaluator(dataset, rankings, rerank_k=100, name="dev")`` returns keys ``dev_R100_map``,
    ``dev_R100_mrr@10``, ``dev_R100_ndcg@10`` and their ``base_`` twins; ``primary_metric`` is
    ``dev_R100_ndcg@10``. Pass ``dataset`` as a list of (dataset, rankings) pairs to get per-dataset keys
    (``{dataset.name}_R100_*``) plus means under ``{name}_R100_mean_*`` (``name`` defaults to ``NanoBEIR``),
    exactly as ``CrossEncoderNanoBEIREvaluator`` names them. ``rankings=None`` uses the published ones.
    """

    def __init__(
        self,
        dataset: RetrievalDataset | Sequence[tuple[RetrievalDataset, Rankings | None]],
        rankings: Rankings | None = None,
        rerank_k: int = 100,
        at_k: int = 10,
        always_rerank_positives: bool = True,
        name: str | None = None,
        batch_size: int = 64,
        show_progress_bar: bool = False,
        write_csv: bool = True,
    ):
        super().__init__()
        self.suite = not isinstance(dataset, RetrievalDataset)
        if self.suite:
            self.items = [(item, item_rankings) for item, item_rankings in dataset]
            if not self.items:
                raise ValueError("RerankingEvaluator needs at least one dataset")
            self.name = name or "NanoBEIR"
        else:
            self.items = [(dataset, rankings)]
            self.name = name or dataset.name
        self.rerank_k = rerank_k
        self.at_k = at_k
        self.always_rerank_positives = always_rerank_positives
        self.batch_size = batch_size
        self.show_progress_bar = show_progress_bar
        self.write_csv = write_csv
        self.prefix = f"{self.name}_R{rerank_k}_mean" if self.suite else f"{self.name}_R{rerank_k}"
        self.primary_metric = f"{self.prefix}_ndcg@{at_k}"
        self.csv_file = f"RerankingEvaluator_{self.prefix}_results.csv"
        self.csv_headers = ["epoch", "steps", *[m.upper() for m in metric_names(at_k)], *[f"base_{m}" for m in metric_names(at_k)]]
        self.last_result = None

    def __call__(self, model, output_path: str | None = None, epoch: int = -1, steps: int = -1, *args, **kwargs) -> dict[str, float]:
        result = rerank_protocol_suite(
            self.items, model, suite_name=self.name, rerank_k=self.rerank_k, at_k=self.at_k,
            always_rerank_positives=self.always_rerank_positives, batch_size=self.batch_size,
            show_progress_bar=self.show_progress_bar,
        )
        self.last_result = result
        if self.suite:
            metrics = result.flat()
            headline = result.aggregate
        else:
            only = result.results[0]
            only.name = self.name
            metrics = only.prefixed()
            headline = only.metrics
        logger.info("RerankingEvaluator %s (epoch %s, steps %s): %s", self.prefix, epoch, steps, model_card_strings(headline, self.at_k))
        if hasattr(model, "model_card_data"):
            card = {f"{self.prefix}_{key}": value for key, value in model_card_strings(headline, self.at_k).items()}
            self.store_metrics_in_model_card_data(model, card, epoch, steps)
        if output_path is not None and self.write_csv:
            os.makedirs(output_path, exist_ok=True)
            csv_path = os.path.join(output_path, self.csv_file)
            exists = os.path.isfile(csv_path)
            with open(csv_path, "a" if exists else "w", newline="", encoding="utf-8") as handle:
                writer = csv.writer(handle)
                if not exists:
                    writer.writerow(self.csv_headers)
                names = metric_names(self.at_k)
                writer.writerow([epoch, steps, *[headline[m] for m in names], *[headline["base_" + m] for m in names]])
        return metrics

    def get_config_dict(self):
        return {"rerank_k": self.rerank_k, "at_k": self.at_k, "always_rerank_positives": self.always_rerank_positives}
