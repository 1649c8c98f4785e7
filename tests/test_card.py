"""The card's words for how its weights were trained."""

from dataclasses import asdict
from pathlib import Path

from melanoma.card import Training, read_card
from melanoma.config import TrainConfig

MODELS = Path(__file__).resolve().parent.parent / "models"


def test_a_run_with_the_recipes_defaults_names_no_departure():
    config = TrainConfig(data_dir="data", recipe="cpu_transfer_plain").resolved()
    training = Training(recipe=config.recipe_values, config=asdict(config))
    assert training.recipe_text == (
        "cpu_transfer_plain, run with input 160 px, 16 epochs, batch 32, learning rates 0.0003 / 0.0001 / 3e-05"
    )


def test_a_shipped_card_says_which_of_its_recipes_values_the_command_line_changed():
    """Its recipe's notes say 160 px; the run was at 192 px, which the card must not hide."""
    training = read_card(MODELS / "efficientnet_lite0_diagnosis_sampled_192").training
    assert training.recipe_text == (
        "cpu_transfer_plain, run with input 192 px, 20 epochs, batch 32, learning rates 0.0001 / 0.0001 / 5e-05, "
        "4,000 images per epoch (the recipe's own: input 160 px, 16 epochs, learning rates 0.0003 / 0.0001 / 3e-05)"
    )
