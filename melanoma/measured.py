"""One row of a comparison: a model, or the combined reading, with the metrics measured of it.

The Compare and Validate pages and `melanoma.plots` show models and the combined reading side by
side; this is what they need of either, so the combined reading never poses as an installed model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from melanoma.combined import CombinedSpec
    from melanoma.store import InstalledModel

COMBINED_INPUT = "each member's"
COMBINED_INITIALISATION = "its members (averaged)"


@dataclass(frozen=True)
class Measured:
    name: str
    input: str  # "160 px", or the combined reading's "each member's"
    initialised_from: str
    threshold: float
    metrics: dict  # as metrics.json holds them
    malignant_threshold: float | None = None  # a diagnosis model's
    holdout_metrics: dict[str, dict] = field(default_factory=dict)  # source -> metrics at a source never seen
    is_combined: bool = False  # the combined reading, which was never trained itself
    # The bootstrap seed of its intervals: a model's training seed, with which train.run measured its
    # metrics.json, so that measuring its test split again repeats them.
    seed: int = 0

    @property
    def test_auc(self) -> float | None:
        return self.metrics.get("roc_auc")

    @classmethod
    def of_model(cls, entry: InstalledModel, metrics: dict | None = None) -> Measured:
        """An installed model with its stored test metrics, or with `metrics` measured elsewhere."""
        return cls(
            entry.name,
            f"{entry.input_size} px",
            entry.card.network.weights_initialisation,
            entry.threshold,
            entry.metrics if metrics is None else metrics,
            entry.malignant_threshold,
            entry.holdout_metrics,
            seed=entry.card.training.seed,
        )

    @classmethod
    def of_combined(cls, spec: CombinedSpec, metrics: dict | None = None) -> Measured:
        """The validated combination, named by its members, with its stored test metrics or `metrics`."""
        return cls(
            spec.label,
            COMBINED_INPUT,
            COMBINED_INITIALISATION,
            spec.threshold,
            spec.metrics if metrics is None else metrics,
            spec.malignant_threshold,
            spec.holdout_metrics,
            is_combined=True,
        )
