"""How a run makes every class count equally: by weighting the loss, by sampling, or half of each.

All three give each class the same expected share of the loss. They differ in how: weights keep
every image once per pass and multiply the rare classes' loss (up to 10.7 for dermatofibroma among
HAM10000's seven diagnoses, which made one diagnosis run oscillate at the binary model's learning
rate); sampling draws the rare images more often and leaves the loss unweighted, so they repeat
several times per epoch; `sqrt-sampling` draws each class in proportion to the square root of its
size and weights the rest (square-root sampling, as in Mahajan et al. 2018 and Kang et al. 2020),
so both the repetitions and the weights stay near the square root of the imbalance.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from melanoma.data import class_weights

METHODS = ("weights", "sampling", "sqrt-sampling")


@dataclass(frozen=True)
class Balance:
    """The loss weight of each class, and each training image's chance of being drawn (None: every
    image once per pass, in a fresh order each epoch)."""

    class_weights: dict[int, float]
    draw_probabilities: np.ndarray | None


def balance(classes: np.ndarray, n_classes: int, method: str) -> Balance:
    """The class weights and draw probabilities for training images of these class indices.

    The weights are scaled so that the drawn images' mean weight is 1, as with n / (k · n_class).
    """
    if method not in METHODS:
        raise ValueError(f"Unknown class balance {method!r}; expected one of {', '.join(METHODS)}.")
    weights = class_weights(classes, n_classes)  # also refuses a class without training images
    if method == "weights":
        return Balance(weights, None)
    counts = np.bincount(classes, minlength=n_classes).astype(float)
    # The share of the draws each class gets: equal, or in proportion to the square root of its size.
    share = np.ones(n_classes) if method == "sampling" else np.sqrt(counts)
    share /= share.sum()
    draw_probabilities = share[classes] / counts[classes]
    # Equal expected loss per class: the weight makes up what the share does not, mean 1 over the draws.
    loss_weights = (1.0 / n_classes) / share
    return Balance({int(c): float(w) for c, w in enumerate(loss_weights)}, draw_probabilities)
