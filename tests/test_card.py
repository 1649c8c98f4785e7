"""The card's words for how its weights were trained."""

import json
from dataclasses import asdict
from pathlib import Path

import pytest

from melanoma.card import ModelCard, Training, read_card
from melanoma.config import TrainConfig

MODELS = Path(__file__).resolve().parent.parent / "models"
PHASES = [
    {"start_epoch": 0, "end_epoch": 6, "learning_rate": 3e-4},
    {"start_epoch": 6, "end_epoch": 13, "learning_rate": 1e-4},
    {"start_epoch": 13, "end_epoch": 16, "learning_rate": 3e-5},
]


def test_a_run_with_the_recipes_defaults_names_no_departure():
    config = TrainConfig(data_dir="data", recipe="cpu_transfer_plain").resolved()
    training = Training(recipe=config.recipe_values, config=asdict(config), phases=PHASES)
    assert training.recipe_text == (
        "cpu_transfer_plain, run with input 160 px, batch 32, a full pass of the training split per epoch, 16 epochs, "
        "learning rate 0.0003 (epochs 1–6), 0.0001 (epochs 7–13), 3e-05 (epochs 14–16)"
    )


def test_a_resumed_run_is_described_by_its_phases_not_its_last_command():
    """Resumed with other flags, a card's config holds only the last command's: its phases say what ran."""
    config = TrainConfig(data_dir="data", recipe="cpu_transfer_plain", epochs=20, learning_rates=(3e-4, 1e-4, 1e-4))
    config = config.resolved()
    phases = [*PHASES, {"start_epoch": 16, "end_epoch": 20, "learning_rate": 1e-4}]
    training = Training(recipe=config.recipe_values, config=asdict(config), phases=phases)
    assert training.recipe_text.endswith(
        "20 epochs, learning rate 0.0003 (epochs 1–6), 0.0001 (epochs 7–13), 3e-05 (epochs 14–16), 0.0001 "
        "(epochs 17–20) (the recipe's own: 16 epochs, learning rates 0.0003 / 0.0001 / 3e-05)"
    )


def test_a_wider_colour_augmentation_is_named_as_a_departure():
    config = TrainConfig(data_dir="data", recipe="cpu_transfer_plain", colour_jitter=2.5).resolved()
    training = Training(recipe=config.recipe_values, config=asdict(config), phases=PHASES)
    assert training.recipe_text.endswith(
        "3e-05 (epochs 14–16), colour augmentation ranges x2.5 (the recipe's own: colour augmentation ranges x1)"
    )


def test_a_shipped_card_says_which_of_its_recipes_values_the_command_line_changed():
    """Its recipe's notes say 160 px; the run was at 192 px, which the card must not hide."""
    training = read_card(MODELS / "efficientnet_lite0_diagnosis_sampled_192").training
    assert training.recipe_text == (
        "cpu_transfer_plain, run with input 192 px, batch 32, 4,000 images per epoch, 20 epochs, learning rate "
        "0.0001 (epochs 1–8), 0.0001 (epochs 9–16), 5e-05 (epochs 17–20) (the recipe's own: input 160 px, a full "
        "pass of the training split per epoch, 16 epochs, learning rates 0.0003 / 0.0001 / 3e-05)"
    )


def test_every_shipped_diagnosis_card_has_its_malignant_threshold():
    cards = [read_card(folder) for folder in sorted(MODELS.iterdir()) if (folder / "card.json").is_file()]
    diagnosis = [card for card in cards if card.serving.is_diagnosis]
    assert diagnosis and all(0 < card.operating.malignant_threshold < 1 for card in diagnosis)


def test_a_diagnosis_card_without_its_malignant_threshold_is_refused_saying_how_to_fit_it():
    """It was listed as available, and its metrics then crashed with a TypeError (None compared with a probability)."""
    card = json.loads((MODELS / "efficientnet_lite0_diagnosis" / "card.json").read_text())
    del card["malignant_threshold"], card["malignant_threshold_rule"]
    with pytest.raises(ValueError, match="must have malignant_threshold.*python -m train.calibrate --models efficie"):
        ModelCard.from_dict(card, "efficientnet_lite0_diagnosis")
