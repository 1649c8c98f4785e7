"""Streamlit glue shared by the pages: cached model loading and cached per-image results.

Model weights load once per server process (st.cache_resource), and only when a page first
needs that model: listing the models reads their cards, not their weights. Results are cached in
memory per image content, model and setting (st.cache_data without persistence: nothing is
written to disk), so moving a slider never recomputes a prediction.

TensorFlow is imported lazily: its import is most of a cold start, so the pages render and the
uploader accepts files while it loads in the background.
"""

from __future__ import annotations

import functools
import io
import threading
from pathlib import Path

import numpy as np
import streamlit as st
from PIL import Image

from melanoma.access import SESSION_USER
from melanoma.audit import Action, AuditLog, AuditUnavailable
from melanoma.cases import Decision, decide, model_view
from melanoma.combined import COMBINED_NAME, CombinedSpec
from melanoma.inference import Predictor, load_predictor
from melanoma.store import InstalledModel, ModelUnavailableError, best_first, list_models, resolve_models_dir

MELANOMA_OUTPUT, MALIGNANT_OUTPUT = "melanoma", "malignant"  # what an explanation map explains
DISCLAIMER = (
    "Decision support, not a diagnosis. The probability comes from a model trained on "
    "dermoscopic images; read it alongside the clinical examination and dermoscopy."
)


def models_dir() -> str:
    """The models folder: MELANOMA_MODELS_DIR, or the project's models/."""
    return str(resolve_models_dir())


@st.cache_resource(show_spinner="Loading model weights…")
def _load(name: str, folder: str) -> Predictor:
    return load_predictor(name, folder)


def predictor(name: str) -> Predictor:
    """The loaded model, shared by every session of this server process."""
    return _load(name, models_dir())


def available_models() -> list[InstalledModel]:
    """Installed models with a complete folder, best first; a broken one is reported with its reason.

    Only the cards are read here, so the Compare and Model cards pages never wait for weights.
    """
    usable = []
    for entry in list_models(models_dir()):
        if entry.available:
            usable.append(entry)
        else:
            st.warning(f"Model **{entry.name}** is unavailable: {entry.problem}")
    if not usable:
        st.error(
            f"No usable model is installed in `{models_dir()}`. Train the models with "
            "`python -m train.run --data-dir PATH/TO/ISIC2018` (see the README), then reload this page."
        )
        st.stop()
    return best_first(usable)


def combined_spec() -> CombinedSpec | None:
    """The validated combination of models in the models folder (train.combine), if any."""
    return CombinedSpec.load(models_dir())


def readings_best_first(models: list[InstalledModel], spec: CombinedSpec | None) -> list[str]:
    """What the clinician can pick, best test AUC first (the default is the first): the installed
    models and, when every member is installed, the combined reading."""
    by_name = {entry.name: entry for entry in models}
    aucs = {entry.name: entry.test_auc or 0.0 for entry in models}
    if spec is not None and all(member in by_name for member in spec.members):
        aucs[COMBINED_NAME] = spec.test_auc or 0.0
    return sorted(aucs, key=lambda name: -aucs[name])


def describe_reading(name: str, models: list[InstalledModel], spec: CombinedSpec | None) -> str:
    """The picker's label for a model or the combined reading."""
    if name == COMBINED_NAME:
        return f"Combined reading of {', '.join(spec.members)} (test AUC {spec.test_auc:.3f})"
    return describe(next(entry for entry in models if entry.name == name))


def combined_entry() -> InstalledModel | None:
    """The combined reading as a row of the comparison page, beside the models it averages."""
    spec = combined_spec()
    if spec is None:
        return None
    name = f"combined ({' + '.join(spec.members)})"
    return InstalledModel(
        name=name, folder=Path(models_dir()), card={"input_size": 0, "threshold": spec.threshold}, metrics=spec.metrics
    )


def loaded(entries: list[InstalledModel]) -> list[InstalledModel]:
    """The chosen models whose weights load; one that fails is reported and left out."""
    ready = []
    for entry in entries:
        try:
            predictor(entry.name)
            ready.append(entry)
        except ModelUnavailableError as error:
            st.error(f"{error} Choose another model above.")
    if not ready:
        st.stop()
    return ready


def _import_tensorflow() -> None:
    import keras  # noqa: F401

    import melanoma.explain  # noqa: F401  TensorFlow, Keras and the explanation graphs' module


@functools.cache
def prepare_in_background() -> None:
    """Start importing TensorFlow once per server process, while the clinician chooses files.

    Not a daemon thread: an import cut off by interpreter shutdown fails with misleading errors.
    """
    threading.Thread(target=_import_tensorflow, name="tensorflow-import").start()


def describe(entry: InstalledModel) -> str:
    auc = f", test AUC {entry.test_auc:.3f}" if entry.test_auc is not None else ""
    return f"{entry.name} ({entry.input_size} px{auc})"


@st.cache_data(max_entries=1024, show_spinner=False)
def _decision(key: str, model: str, folder: str, _pixels: np.ndarray) -> Decision:
    return decide(predictor(model), _pixels)


def explained_network(active: Predictor, output: str):
    """The network an explanation reads: the melanoma output, or a diagnosis model's skin-cancer one."""
    return active.malignant_model if output == MALIGNANT_OUTPUT and active.is_diagnosis else active.model


@st.cache_data(max_entries=256, show_spinner=False)
def _occlusion(
    key: str, model: str, folder: str, patch_size: int, stride: int | None, output: str, _pixels: np.ndarray
) -> np.ndarray:
    from melanoma.explain import occlusion_sensitivity

    active = predictor(model)
    return occlusion_sensitivity(explained_network(active, output), model_view(active, _pixels), patch_size, stride)


@st.cache_data(max_entries=256, show_spinner=False)
def _gradcam(key: str, model: str, folder: str, output: str, _pixels: np.ndarray) -> np.ndarray:
    from melanoma.explain import grad_cam

    active = predictor(model)
    return grad_cam(explained_network(active, output), model_view(active, _pixels), active.gradcam_layer)


def occlusion_stages(entry: InstalledModel, patch_size: int, fine: bool) -> list:
    """The progressive maps for this model, quickest first (explain imports TensorFlow, hence here)."""
    from melanoma.explain import occlusion_stages

    return occlusion_stages(entry.input_size, patch_size, fine)


def decision(key: str, model: str, pixels: np.ndarray) -> Decision:
    """The model's decision for an image, cached by image content, model and models folder."""
    return _decision(key, model, models_dir(), pixels)


def occlusion(
    key: str, model: str, patch_size: int, pixels: np.ndarray, stride: int | None = None, output: str = MELANOMA_OUTPUT
) -> np.ndarray:
    return _occlusion(key, model, models_dir(), patch_size, stride, output, pixels)


def gradcam(key: str, model: str, pixels: np.ndarray, output: str = MELANOMA_OUTPUT) -> np.ndarray:
    return _gradcam(key, model, models_dir(), output, pixels)


AUDIT_FAILURE = "melanoma_audit_failure"  # st.session_state key: a download's event that could not be written


def audit(action: Action, **details) -> None:
    """Record what this session's user is about to see, before it is shown (once per session for
    an identical event); a trail that cannot be written stops the page, so nothing unrecorded is shown."""
    if AUDIT_FAILURE in st.session_state:
        st.error(st.session_state[AUDIT_FAILURE], icon="⛔")
        st.stop()
    key = repr((action, sorted(details.items())))
    done = st.session_state.setdefault("audited", set())
    if key in done:
        return
    try:
        AuditLog().record(st.session_state[SESSION_USER], action, **details)
    except AuditUnavailable as error:
        st.error(str(error), icon="⛔")
        st.stop()
    done.add(key)


def _record_download(action: Action, details: dict) -> None:
    try:
        AuditLog().record(st.session_state[SESSION_USER], action, **details)
    except AuditUnavailable as error:
        st.session_state[AUDIT_FAILURE] = f"{error} The download was not recorded; nothing more is shown."


def audited(action: Action, **details) -> dict:
    """A download button's on_click and args that record the download in the audit trail; should
    that fail, the page's next run says so and stops (`audit`)."""
    return {"on_click": _record_download, "args": (action, details)}


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()
