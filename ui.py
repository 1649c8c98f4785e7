"""Streamlit glue shared by the pages: cached model loading and cached per-image results.

Model weights load once per server process (st.cache_resource): the default reading's in the
background from the first visit (the combined reading's differential once no page reads),
any other model's when a page first needs it; listing the models reads their cards, not their
weights. Results are cached in memory only (nothing is written to disk) per image content, model
and setting, so moving a slider never recomputes a prediction:
decisions in each model's queue by image sha256 (`_reader`), maps with st.cache_data.

Readings come before maps on the whole server, and the probabilities a page shows first before
any page's later ones (`PRIORITY`): each session's script runs in its own thread and they share
the cores, so without it a clinic's maps hold back every pending probability.

TensorFlow is imported lazily, in that background warm-up: its import is most of a cold start, so
the pages render and the uploader accepts files while it loads.
"""

from __future__ import annotations

import contextlib
import io
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from PIL import Image
from streamlit.delta_generator import DeltaGenerator

from melanoma import plots
from melanoma.access import SESSION_CHECK, SESSION_USER
from melanoma.audit import Action, AuditLog, AuditUnavailable
from melanoma.batching import CachedBatchedCalls
from melanoma.cases import Decision, decide_all
from melanoma.combined import COMBINED_NAME, CombinedReading, CombinedSpec
from melanoma.data import MAX_PROBLEMS_SHOWN, DataError
from melanoma.inference import Predictor, load_predictor
from melanoma.store import InstalledModel, ModelUnavailableError, best_first, list_models, resolve_models_dir

MELANOMA_OUTPUT, MALIGNANT_OUTPUT = "melanoma", "malignant"  # what an explanation map explains
DISCLAIMER = (
    "Decision support, not a diagnosis. The probability comes from a model trained on "
    "dermoscopic images; read it alongside the clinical examination and dermoscopy."
)


def disclaimer() -> None:
    """The disclaimer at the top of every page that reads patients' images."""
    st.info(DISCLAIMER, icon=":material/medical_information:")


def models_dir() -> str:
    """The models folder: MELANOMA_MODELS_DIR, or the project's models/."""
    return str(resolve_models_dir())


@st.cache_resource(show_spinner="Loading model weights…")
def _load(name: str, folder: str) -> Predictor:
    """The model with its prediction graphs traced for any batch size: here, once, under the
    cache's lock, not in the first batch of a clinic's readings, which every queued image waits for."""
    active = load_predictor(name, folder)
    active.trace_graphs()
    return active


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
    if problem := CombinedSpec.problem_in(models_dir()):
        st.warning(f"The **combined** reading is unavailable: {problem}")
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


def members_missing(models: list[InstalledModel], spec: CombinedSpec) -> list[str]:
    """The models the combined reading reads that are not among `models` (the usable installed ones):
    while any is, the combined reading cannot be chosen."""
    installed = {entry.name for entry in models}
    return [member for member in spec.models if member not in installed]


def readings_best_first(models: list[InstalledModel], spec: CombinedSpec | None) -> list[str]:
    """What the clinician can pick, best test AUC first (the default is the first): the installed
    models and, when every member is installed, the combined reading."""
    complete = spec is not None and not members_missing(models, spec)
    return [reading.name for reading in best_first([*models, spec] if complete else models)]


def reading_models(choice: str, models: list[InstalledModel], spec: CombinedSpec | None) -> list[InstalledModel]:
    """The models a reading needs: every model the combined reading reads, or the one model chosen."""
    by_name = {entry.name: entry for entry in models}
    return [by_name[member] for member in spec.models] if choice == COMBINED_NAME else [by_name[choice]]


def models_read_first(choice: str, chosen: list[InstalledModel], spec: CombinedSpec | None) -> list[InstalledModel]:
    """The chosen models whose readings the page shows before the others': for the combined reading,
    its melanoma members, which alone decide its probability and verdict; else every chosen model.
    The differential's other models then read and complete the table: on a loaded server they were
    about half of the wait for the first probability (benchmarks/clinic_load.py)."""
    if choice != COMBINED_NAME or spec is None:
        return chosen
    return [entry for entry in chosen if entry.name in spec.members]


def mapped_models(choice: str, chosen: list[InstalledModel], reading: CombinedReading | None) -> list[InstalledModel]:
    """The chosen models the page draws a map for: for the combined reading, the models whose
    probabilities it averaged (`reading.members`: its validated members, or with one that failed to
    load every model read, as melanoma.combined.combine decides); else every chosen model. The
    differential's other models add nothing to the melanoma probability, so their melanoma maps
    explain no number the reading shows (and were four of its seven maps per image, most of a
    loaded server's map time)."""
    if choice != COMBINED_NAME or reading is None:
        return chosen
    return [entry for entry in chosen if entry.name in reading.members]


def describe_reading(name: str, models: list[InstalledModel], spec: CombinedSpec | None) -> str:
    """The picker's label for a model or the combined reading."""
    if name == COMBINED_NAME:
        return f"Combined reading of {', '.join(spec.members)} (test AUC {spec.test_auc:.3f}){spec.differential_note}"
    return describe(next(entry for entry in models if entry.name == name))


def loaded(
    entries: list[InstalledModel], required: bool = True, hint: str = "Choose another model above."
) -> list[InstalledModel]:
    """The chosen models whose weights load; one that fails is reported, with the `hint` on what the
    page does next, and left out. With none, the page stops where they are `required`, else goes on
    without them."""
    ready = []
    for entry in entries:
        try:
            predictor(entry.name)
            ready.append(entry)
        except ModelUnavailableError as error:
            st.error(f"{error} {hint}")
    if required and not ready:
        st.stop()
    return ready


class ReadingsFirst:
    """Readings before maps, and first readings before later ones, across every session of this
    server process. Three kinds of work share the cores, in this order:

    1. first readings, the probabilities and verdicts a page shows first: they never wait;
    2. later readings, what completes a page's table (the combined reading's differential): a
       reading becomes one when its page calls the `later` that `reading` yields, and goes on once
       every first reading begun before that call has ended, so that the first probabilities of
       pages already reading come before this page's differential (benchmarks/clinic_load.py, 20
       sessions on a cold server: the first results at p95 18.9 and 22.7 s, against 24.7 s with the
       differential's four models read beside them). First readings begun after that call share
       the cores with it: a steady stream of uploads cannot hold a differential back for ever;
    3. map stages, one at a time, once no reading of either kind is pending.

    Without the map rule, twenty sessions on two cores computed their readings and maps all at once,
    and each probability came about two minutes after its upload; their first maps would also each
    build the same per-model graphs (melanoma.explain.per_model holds no lock). One map at a time
    loses little: TensorFlow spreads one over every core.
    """

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._begun = 0  # readings begun so far: each reading's ticket is the count before it
        self._first: set[int] = set()  # tickets of the first readings in progress
        self._later: set[int] = set()  # tickets of the later readings in progress
        self._mapping = False

    def _idle(self) -> bool:
        return not self._first and not self._later and not self._mapping

    @contextlib.contextmanager
    def reading(self, when_idle: bool = False) -> Iterator[Callable[[], None]]:
        """While a page reads its images and shows the probabilities: map stages not yet begun wait.
        Yields `later()`, to call once the page has shown its first readings: the rest of its reading
        then waits until every first reading begun before the call has ended. `when_idle`: a later
        reading that begins only once nothing else is pending or mapping (the warm-up's loading of
        models no page awaits yet)."""
        with self._changed:
            if when_idle:
                self._changed.wait_for(self._idle)
            ticket, self._begun = self._begun, self._begun + 1
            (self._later if when_idle else self._first).add(ticket)

        def later() -> None:
            with self._changed:
                if ticket in self._first:
                    self._first.remove(ticket)
                    self._later.add(ticket)
                    self._changed.notify_all()
                begun = self._begun
                self._changed.wait_for(lambda: all(other >= begun for other in self._first))

        try:
            yield later
        finally:
            with self._changed:
                self._first.discard(ticket)
                self._later.discard(ticket)
                self._changed.notify_all()

    @contextlib.contextmanager
    def map_stage(self) -> Iterator[None]:
        """One map stage (a progressive occlusion stage, or a Grad-CAM), alone and after every pending reading."""
        with self._changed:
            self._changed.wait_for(self._idle)
            self._mapping = True
        try:
            yield
        finally:
            with self._changed:
                self._mapping = False
                self._changed.notify_all()


PRIORITY = ReadingsFirst()  # process-wide: it counts work, and holds nothing of any session


def _load_if_usable(entry: InstalledModel) -> None:
    try:
        predictor(entry.name)
    except ModelUnavailableError:
        pass  # the page says why, should the clinician choose it


def _warm_up() -> None:
    """Import TensorFlow, then load the default reading's models (`_load`) as readings: a cold
    server's first probabilities then wait for less of it, and no map for any of it. Those a page
    reads first (`models_read_first`) load at once; each of the differential's others begins to
    load only when nothing else is pending or mapping, since a page that needs one loads it itself
    (measured with 20 sessions uploading to a cold server, benchmarks/clinic_load.py: loading them
    beside the first readings put those at p95 27.1 s, against 24.7 s when they waited)."""
    import keras  # noqa: F401

    import melanoma.explain.occlusion  # noqa: F401  TensorFlow, Keras and the explanation graphs' module

    usable = best_first([entry for entry in list_models(models_dir()) if entry.available])
    if not usable:
        return
    spec = combined_spec()
    default = readings_best_first(usable, spec)[0]
    needed = reading_models(default, usable, spec)
    first = models_read_first(default, needed, spec)
    with PRIORITY.reading():
        for entry in first:
            _load_if_usable(entry)
    for entry in needed:
        if entry not in first:
            with PRIORITY.reading(when_idle=True):
                _load_if_usable(entry)


_warm_up_started = threading.Lock()  # acquired once, never released: unlike functools.cache, atomic
WARM_UP_THREAD = "warm-up"


def prepare_in_background() -> None:
    """Start the warm-up once per server process, while the clinician signs in and chooses files.

    A daemon, as Streamlit makes every thread a script starts: a stopping server does not wait for
    the models to load, and a read it cuts off is safe (`melanoma.models.saved`).
    """
    if _warm_up_started.acquire(blocking=False):
        threading.Thread(target=_warm_up, name=WARM_UP_THREAD, daemon=True).start()


def describe(entry: InstalledModel) -> str:
    auc = f", test AUC {entry.test_auc:.3f}" if entry.test_auc is not None else ""
    return f"{entry.name} ({entry.input_size} px{auc})"


@st.cache_resource(show_spinner=False)
def _reader(name: str, folder: str) -> CachedBatchedCalls[str, np.ndarray, Decision]:
    """The model's one queue on this server, with its latest decisions by image sha256 (a decision
    holds nothing of who asked): images that sessions send while it reads others are read together
    in its next batch (melanoma.batching)."""
    active = _load(name, folder)
    return CachedBatchedCalls(lambda images: decide_all(active, images))


def explains_skin_cancer(active: Predictor, output: str) -> bool:
    """Whether a map explains a diagnosis model's skin-cancer probability: melanoma models always
    explain their melanoma one, whatever the page asks."""
    return output == MALIGNANT_OUTPUT and active.is_diagnosis


@st.cache_data(max_entries=256, show_spinner=False)
def _occlusion(
    key: str, model: str, folder: str, patch_size: int, stride: int | None, output: str, _pixels: np.ndarray
) -> np.ndarray:
    active = predictor(model)
    with PRIORITY.map_stage():  # inside the cache: a map already computed is shown at once
        return active.occlusion(_pixels, patch_size, stride, explains_skin_cancer(active, output))


@st.cache_data(max_entries=256, show_spinner=False)
def _gradcam(key: str, model: str, folder: str, output: str, _pixels: np.ndarray) -> np.ndarray:
    active = predictor(model)
    with PRIORITY.map_stage():
        return active.grad_cam(_pixels, explains_skin_cancer(active, output))


def occlusion_stages(entry: InstalledModel, patch_size: int, fine: bool) -> list:
    """The progressive maps for this model, quickest first (explain imports TensorFlow, hence here)."""
    from melanoma.explain.occlusion import occlusion_stages

    return occlusion_stages(entry.input_size, patch_size, fine)


def decisions(
    images: list[tuple[str, np.ndarray]], models: list[str], done: Callable[[int, int], None]
) -> list[tuple[Decision, ...]]:
    """Every model's decision for every (sha256, pixels) image: one tuple per image, in `models`' order.

    Each model gets all of a session's images at once, so it reads them in one batch (with whatever
    other sessions sent meanwhile) instead of one turn per image, and the models read side by side.
    `done(finished, total)` is called in the script's thread as each model finishes.
    """
    readers = [_reader(model, models_dir()) for model in models]
    with ThreadPoolExecutor(len(readers), thread_name_prefix="reading") as pool:
        futures = {pool.submit(reader.many, images): model for reader, model in zip(readers, models)}
        read = {}
        for finished, future in enumerate(as_completed(futures), 1):
            read[futures[future]] = future.result()  # a failed reading stops the page here
            done(finished, len(futures))
    return [tuple(read[model][index] for model in models) for index in range(len(images))]


def occlusion(
    key: str, model: str, patch_size: int, pixels: np.ndarray, stride: int | None = None, output: str = MELANOMA_OUTPUT
) -> np.ndarray:
    return _occlusion(key, model, models_dir(), patch_size, stride, output, pixels)


def gradcam(key: str, model: str, pixels: np.ndarray, output: str = MELANOMA_OUTPUT) -> np.ndarray:
    return _gradcam(key, model, models_dir(), output, pixels)


def audit(action: Action, **details) -> None:
    """Record what this session's user is about to see, before it is shown (once per session for
    an identical event); a trail that cannot be written stops the page, so nothing unrecorded is shown."""
    key = repr((action, sorted(details.items())))
    done = st.session_state.setdefault("audited", set())
    if key in done:
        return
    try:
        AuditLog().record(st.session_state[SESSION_USER], action, **details)
    except AuditUnavailable as error:
        st.error(str(error), icon=":material/block:")
        st.stop()
    done.add(key)


def recorded(build: Callable[[], bytes | str], action: Action, **details) -> Callable[[], bytes | str]:
    """A download button's data, built only when the clinician asks for it and recorded in the audit
    trail before it leaves the server; pass it with on_click="ignore".

    Built on request, a page run makes no report it is not asked for. Recorded in the request, no
    download goes unrecorded: a click recorded by the rerun it starts would never be recorded when
    the tab closes first (one of twenty sessions in benchmarks/clinic_load.py). A trail
    that cannot be written fails the download, and the button says it failed.
    """
    user = st.session_state[SESSION_USER]  # the download runs outside this session's script thread
    # With sign-in: a button drawn before the user signed out (in another tab) or the session grew
    # too old must not hand out the patient's data; access.SignInAgain fails the download.
    still_signed_in = st.session_state.get(SESSION_CHECK)

    def data() -> bytes | str:
        if still_signed_in is not None:
            still_signed_in()
        content = build()
        AuditLog().record(user, action, **details)
        return content

    return data


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def column_grid(count: int, per_row: int) -> list[DeltaGenerator]:
    """`count` columns, `per_row` to a row, all of one width (fewer than `per_row` share the whole row):
    ten models in one row left each a sliver."""
    columns = []
    for start in range(0, count, per_row):
        columns += st.columns(min(per_row, count))[: count - start]
    return columns


def figure_rows(figures: dict[str, go.Figure], per_row: int) -> None:
    """Figures side by side in rows of `per_row`, each under its own widget key."""
    for column, (key, figure) in zip(column_grid(len(figures), per_row), figures.items()):
        column.plotly_chart(figure, key=key)


def markdown_list(items: list[str], shown: int) -> str:
    """The first `shown` items as a Markdown list, then how many more there are: in the browser, the
    indented lines of a terminal message run together into one paragraph."""
    listed = [f"- {item}" for item in items[:shown]]
    more = [f"- and {len(items) - shown} more"] if len(items) > shown else []
    return "\n".join(listed + more)


def refuse(error: DataError) -> None:
    """Stop the page on data it cannot use, the problems listed one to a line as in the terminal."""
    st.error(f"{error.summary}\n{markdown_list(error.problems, MAX_PROBLEMS_SHOWN)}")
    st.stop()


def show_table(table: pd.DataFrame, best: dict[str, str] | None = None) -> None:
    """A table of measurements: three decimals, a dash where nothing was measured, and with `best`
    (column → model) each column's best model highlighted."""
    styled = plots.dash_missing(table).style.format(precision=plots.DECIMALS)
    if best:
        styled = styled.apply(
            lambda column: [
                "font-weight: bold; background-color: rgba(46, 139, 87, 0.25)" if best.get(column.name) == model else ""
                for model in table.Model
            ],
            axis=0,
        )
    st.dataframe(styled, hide_index=True, width="stretch")
