"""Streamlit glue shared by the pages: cached model loading and cached per-image results.

Model weights load once per server process (st.cache_resource). Results are cached in memory
per image content, model and setting (st.cache_data without persistence: nothing is written to
disk), so moving a slider never recomputes a prediction.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import streamlit as st
from PIL import Image

from melanoma.cases import Decision, decide, model_view
from melanoma.explain import grad_cam, occlusion_sensitivity
from melanoma.inference import Predictor, load_predictor
from melanoma.store import DEFAULT_MODELS_DIR, InstalledModel, ModelUnavailableError, best_first, list_models

DISCLAIMER = ("Decision support, not a diagnosis. The probability comes from a model trained on "
              "dermoscopic images; read it alongside the clinical examination and dermoscopy.")


def models_dir() -> str:
    """The models folder: MELANOMA_MODELS_DIR, or the project's models/."""
    return str(Path(os.environ.get("MELANOMA_MODELS_DIR", DEFAULT_MODELS_DIR)).resolve())


@st.cache_resource(show_spinner="Loading model weights…")
def _load(name: str, folder: str) -> Predictor:
    return load_predictor(name, folder)


def predictor(name: str) -> Predictor:
    """The loaded model, shared by every session of this server process."""
    return _load(name, models_dir())


def available_models() -> list[InstalledModel]:
    """Installed models that load; the others are reported once on the page with their reason."""
    usable, broken = [], []
    for entry in list_models(models_dir()):
        try:
            if entry.available:
                predictor(entry.name)
                usable.append(entry)
                continue
        except ModelUnavailableError as error:
            entry.problem = str(error)
        broken.append(entry)
    for entry in broken:
        st.warning(f"Model **{entry.name}** is unavailable: {entry.problem}")
    if not usable:
        st.error(f"No usable model is installed in `{models_dir()}`. Train the models with "
                 "`python -m train.run --data-dir PATH/TO/ISIC2018` (see the README), then reload this page.")
        st.stop()
    return best_first(usable)


def describe(entry: InstalledModel) -> str:
    auc = f", test AUC {entry.test_auc:.3f}" if entry.test_auc is not None else ""
    return f"{entry.name} ({entry.input_size} px{auc})"


@st.cache_data(max_entries=1024, show_spinner=False)
def _decision(key: str, model: str, folder: str, _pixels: np.ndarray) -> Decision:
    return decide(predictor(model), _pixels)


@st.cache_data(max_entries=256, show_spinner=False)
def _occlusion(key: str, model: str, folder: str, patch_size: int, _pixels: np.ndarray) -> np.ndarray:
    active = predictor(model)
    return occlusion_sensitivity(active.model, model_view(active, _pixels), patch_size)


@st.cache_data(max_entries=256, show_spinner=False)
def _gradcam(key: str, model: str, folder: str, _pixels: np.ndarray) -> np.ndarray:
    return grad_cam(predictor(model).model, model_view(predictor(model), _pixels))


def decision(key: str, model: str, pixels: np.ndarray) -> Decision:
    """The model's decision for an image, cached by image content, model and models folder."""
    return _decision(key, model, models_dir(), pixels)


def occlusion(key: str, model: str, patch_size: int, pixels: np.ndarray) -> np.ndarray:
    return _occlusion(key, model, models_dir(), patch_size, pixels)


def gradcam(key: str, model: str, pixels: np.ndarray) -> np.ndarray:
    return _gradcam(key, model, models_dir(), pixels)


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()
