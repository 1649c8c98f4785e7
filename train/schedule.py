"""The study's three training phases: learning rate and trainable backbone layers per phase."""

from __future__ import annotations

from dataclasses import dataclass

from melanoma.models.architectures import Architecture


@dataclass(frozen=True)
class Phase:
    index: int
    start_epoch: int
    end_epoch: int
    learning_rate: float
    unfreeze_after: str | None  # the last frozen backbone layer (a block's output); None: none frozen
    fine_tuning: bool  # a pretrained backbone, whose batch normalisation stays frozen


def plan_phases(
    architecture: Architecture,
    epochs: int,
    phase_starts: list[int],
    learning_rates: tuple[float, ...],
    pretrained: bool,
) -> list[Phase]:
    """Phases for one model; empty phases (a short run) are dropped.

    Partial unfreezing only makes sense on top of pretrained weights: a randomly initialised
    backbone with frozen layers would keep random features, so without pretrained weights every
    layer trains in every phase and only the learning rate follows the schedule.
    """
    if len(phase_starts) != len(learning_rates):
        raise ValueError(f"{len(phase_starts)} phase starts but {len(learning_rates)} learning rates.")
    ends = phase_starts[1:] + [epochs]
    phases = []
    for index, (start, end, rate) in enumerate(zip(phase_starts, ends, learning_rates)):
        fine_tuning = architecture.is_transfer and pretrained
        after = architecture.unfreeze_after[index] if fine_tuning else None
        if end > start:
            phases.append(Phase(index, start, min(end, epochs), rate, after, fine_tuning))
    return phases


def phases_run(history: list[dict]) -> list[dict]:
    """The phases as they were run, read from the per-epoch history.

    A run resumed with a different --epochs changes the plan halfway, so the card records these
    rather than the last plan. Epochs are counted from 0, as in `Phase`.
    """
    phases: list[dict] = []
    for row in history:
        setting = (float(row["learning_rate"]), int(row["trainable_layers"]))
        if phases and (phases[-1]["learning_rate"], phases[-1]["trainable_layers"]) == setting:
            phases[-1]["end_epoch"] = int(row["epoch"])
        else:
            phases.append(
                {
                    "index": len(phases),
                    "start_epoch": int(row["epoch"]) - 1,
                    "end_epoch": int(row["epoch"]),
                    "learning_rate": setting[0],
                    "trainable_layers": setting[1],
                }
            )
    return phases
