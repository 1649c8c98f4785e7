"""How a run makes every class count equally: by weighting the loss, by sampling, or half of each.

All three give each class the same expected share of the loss. They differ in how: weights keep
every image once per pass and multiply the rare classes' loss (up to 10.7 for dermatofibroma among
HAM10000's seven diagnoses, which made one diagnosis run oscillate at the binary model's learning
rate); sampling draws the rare images more often and leaves the loss unweighted, so they repeat
several times per epoch; `sqrt-sampling` draws each class in proportion to the square root of its
size and weights the rest (square-root sampling, as in Mahajan et al. 2018 and Kang et al. 2020),
so both the repetitions and the weights stay near the square root of the imbalance.

Emphasis departs from equality on purpose: a class emphasised by f gets f times the others' share
of the loss (drawn f times as often, or weighted f times as much by `weights`). Benign keratoses
are melanoma's classic look-alike, and a diagnosis model that sees them as often as the rarest
class may never learn the difference; emphasising them is hard-negative weighting by class.
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


def balance(classes: np.ndarray, n_classes: int, method: str, emphasis: dict[int, float] | None = None) -> Balance:
    """The class weights and draw probabilities for training images of these class indices.

    `emphasis` maps a class index to the factor by which its share of the loss exceeds the others'
    (default: none, every class equal). The weights are scaled so that the drawn images' mean weight
    is 1, as with n / (k · n_class).
    """
    if method not in METHODS:
        raise ValueError(f"Unknown class balance {method!r}; expected one of {', '.join(METHODS)}.")
    factors = np.ones(n_classes)
    for index, factor in (emphasis or {}).items():
        factors[index] = factor
    weights = np.array(list(class_weights(classes, n_classes).values()))  # refuses a class without images
    if method == "weights":
        weights *= factors
        weights /= np.mean(weights[classes])
        return Balance({int(c): float(w) for c, w in enumerate(weights)}, None)
    counts = np.bincount(classes, minlength=n_classes).astype(float)
    # The share of the draws each class gets: equal, or in proportion to the square root of its size.
    share = np.ones(n_classes) if method == "sampling" else np.sqrt(counts)
    share /= share.sum()
    # Equal expected loss per class: the weight makes up what the share does not.
    loss_weights = (1.0 / n_classes) / share
    # Emphasis draws a class more often at the same weight, then the weights are rescaled to mean 1.
    drawn_share = share * factors / np.sum(share * factors)
    loss_weights /= np.sum(drawn_share * loss_weights)
    draw_probabilities = drawn_share[classes] / counts[classes]
    return Balance({int(c): float(w) for c, w in enumerate(loss_weights)}, draw_probabilities)
