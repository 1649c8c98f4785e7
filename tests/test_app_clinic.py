"""The Diagnose page under a clinic's load: probabilities before maps, downloads built and recorded on request."""

import os
import threading
import time

import pytest

import ui
from melanoma import audit
from melanoma.audit import AuditUnavailable
from tests.test_app import app, jpeg, metric_values  # noqa: F401  app: the fixture

WAIT = 120  # seconds: a bound on every wait, so a gate that never opens fails the test instead of hanging it


def in_thread(target) -> threading.Thread:
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


def test_a_map_stage_waits_while_any_reading_is_pending_and_starts_when_none_is():
    gate = ui.ReadingsFirst()
    order = []
    first, second = gate.reading(), gate.reading()
    first.__enter__()
    second.__enter__()

    def map_stage():
        with gate.map_stage():
            order.append("map")

    mapper = in_thread(map_stage)
    mapper.join(0.3)
    assert mapper.is_alive() and order == []
    order.append("first reading shown")
    first.__exit__(None, None, None)
    mapper.join(0.3)
    assert mapper.is_alive() and order == ["first reading shown"]  # one reading is still pending
    order.append("second reading shown")
    second.__exit__(None, None, None)
    mapper.join(WAIT)
    assert order == ["first reading shown", "second reading shown", "map"]


def test_a_reading_never_waits_for_a_map_and_maps_run_one_at_a_time():
    gate = ui.ReadingsFirst()
    first_inside, release_first, reading_done, second_inside = (threading.Event() for _ in range(4))

    def first_map():
        with gate.map_stage():
            first_inside.set()
            release_first.wait(WAIT)

    def reading():
        with gate.reading():
            reading_done.set()

    def second_map():
        with gate.map_stage():
            second_inside.set()

    in_thread(first_map)
    assert first_inside.wait(WAIT)
    in_thread(reading)
    assert reading_done.wait(WAIT)  # while the map runs
    in_thread(second_map)
    assert not second_inside.wait(0.3)  # the first map still runs
    release_first.set()
    assert second_inside.wait(WAIT)


def test_a_reading_when_idle_waits_for_a_pending_reading_and_for_a_running_map_stage():
    """The warm-up's loading of models no page awaits yet begins only when nothing else runs."""
    gate = ui.ReadingsFirst()
    began = threading.Event()

    def when_idle():
        with gate.reading(when_idle=True):
            began.set()

    with gate.reading():
        in_thread(when_idle)
        assert not began.wait(0.3)
    assert began.wait(WAIT)

    began.clear()
    with gate.map_stage():
        in_thread(when_idle)
        assert not began.wait(0.3)
    assert began.wait(WAIT)


def test_a_later_reading_waits_for_every_first_reading_and_maps_wait_for_it():
    """A page that has shown its first readings reads its differential only once no other page's
    first reading is pending; a map stage waits for that later reading too."""
    gate = ui.ReadingsFirst()
    went_on, mapped, release = threading.Event(), threading.Event(), threading.Event()

    def page():
        with gate.reading() as later:
            later()
            went_on.set()
            release.wait(WAIT)

    def map_stage():
        with gate.map_stage():
            mapped.set()

    with gate.reading():  # another page's first reading
        in_thread(page)
        assert not went_on.wait(0.3)
    assert went_on.wait(WAIT)
    in_thread(map_stage)
    assert not mapped.wait(0.3)
    release.set()
    assert mapped.wait(WAIT)


def test_a_later_reading_does_not_wait_for_first_readings_begun_after_it():
    """Uploads that keep arriving cannot hold a page's differential back for ever: it waits for the
    first reading begun before it, not for one begun while it waited."""
    gate = ui.ReadingsFirst()
    began, went_on, earlier_done, newer_done = (threading.Event() for _ in range(4))

    def first_reading(done):
        with gate.reading():
            began.set()
            done.wait(WAIT)

    def page():
        with gate.reading() as later:
            later()
            went_on.set()

    in_thread(lambda: first_reading(earlier_done))
    assert began.wait(WAIT)
    in_thread(page)
    deadline = time.monotonic() + WAIT
    while not gate._later and time.monotonic() < deadline:  # the page is waiting in later()
        time.sleep(0.01)
    began.clear()
    in_thread(lambda: first_reading(newer_done))
    assert began.wait(WAIT)
    assert not went_on.wait(0.3)
    earlier_done.set()
    assert went_on.wait(WAIT / 4), "the later reading waited for a first reading begun after it"
    newer_done.set()


def test_a_reading_stopped_by_an_error_or_st_stop_opens_the_gate():
    gate = ui.ReadingsFirst()
    with pytest.raises(RuntimeError), gate.reading():
        raise RuntimeError("the page stopped")
    mapped = threading.Event()

    def map_stage():
        with gate.map_stage():
            mapped.set()

    in_thread(map_stage)
    assert mapped.wait(WAIT)


def test_the_page_reads_at_once_but_starts_its_map_after_another_sessions_pending_reading(app, monkeypatch):  # noqa: F811
    """Another session's reading is pending throughout: this page's own reading goes ahead and is
    shown, and its first map stage starts only once the other reading has ended."""
    import melanoma.explain.occlusion as occlusion

    at, _ = app
    entered, read = threading.Event(), threading.Event()
    released, map_started = [], []
    decide_all, sensitivity = ui.decide_all, occlusion.occlusion_sensitivity

    def reading(*args):
        decisions = decide_all(*args)
        read.set()
        return decisions

    def mapping(*args, **kwargs):
        map_started.append(time.monotonic())
        return sensitivity(*args, **kwargs)

    def other_session():
        with ui.PRIORITY.reading():
            entered.set()
            read.wait(WAIT)
            time.sleep(1)
            released.append(time.monotonic())

    monkeypatch.setattr(ui, "decide_all", reading)
    monkeypatch.setattr(occlusion, "occlusion_sensitivity", mapping)
    other = in_thread(other_session)
    assert entered.wait(WAIT)
    at.file_uploader[0].set_value(("lesion.jpg", jpeg(True, seed=21), "image/jpeg")).run()
    other.join(WAIT)
    assert not at.exception
    assert read.is_set() and released, "this page's reading waited for the other session's"
    assert map_started and min(map_started) >= released[0]
    assert any(label.endswith(": melanoma probability") for label in metric_values(at))
    captions = [caption for image in at.image for caption in image.captions]
    assert "Occlusion sensitivity overlay" in captions


def test_a_sessions_uploads_reach_each_model_in_one_batch_and_read_as_one_by_one(app):  # noqa: F811
    """Three new uploads, every model side by side: each model reads the three in one call, and each
    probability is the one the library gives for that image alone."""
    from melanoma.images import decode_image
    from melanoma.inference import load_predictor

    at, output_dir = app
    at.selectbox[0].set_value(at.selectbox[0].options[-1]).run()
    uploads = [(f"lesion-{index}.jpg", jpeg(index % 2 == 0, seed=60 + index), "image/jpeg") for index in range(3)]
    at.file_uploader[0].set_value(uploads).run()
    assert not at.exception
    table = at.dataframe[0].value
    assert list(table["File"]) == [name for name, _, _ in uploads]
    models = [column.removesuffix(" probability") for column in table if column.endswith(" probability")]
    models.remove("combined")
    assert len(models) >= 2
    for model in models:
        assert list(ui._reader(model, ui.models_dir()).batch_sizes)[-1] == 3, model
        alone = [
            load_predictor(model, output_dir).probabilities([decode_image(data).pixels])[0] for _, data, _ in uploads
        ]
        assert list(table[f"{model} probability"]) == pytest.approx([100 * p for p in alone], rel=1e-6)


def test_downloads_are_built_and_recorded_only_when_asked_for(app, downloads, monkeypatch):  # noqa: F811
    import melanoma.report

    at, _ = app
    built = []
    report_pdf = melanoma.report.case_report_pdf
    monkeypatch.setattr(melanoma.report, "case_report_pdf", lambda report: built.append(1) or report_pdf(report))
    at.file_uploader[0].set_value(("lesion.jpg", jpeg(False, seed=22), "image/jpeg")).run()
    assert not at.exception
    trail = os.environ[audit.AUDIT_DIR_ENV]
    actions = lambda: [event["action"] for event in audit.read_events(trail)]  # noqa: E731
    assert built == [] and actions() == ["reading", "explanation"]  # nothing built or recorded for the buttons

    buttons = {button.label: button for button in at.download_button}
    data, mimetype, filename = downloads[buttons["Download results (CSV)"]]
    assert (mimetype, filename) == ("text/csv", "melanoma_results.csv") and b"lesion.jpg" in data
    assert actions() == ["reading", "explanation", "results download"]
    pdf, _, _ = downloads[buttons["Download report (PDF)"]]
    assert pdf.startswith(b"%PDF-") and built == [1]
    [event] = [event for event in audit.read_events(trail) if event["action"] == "report download"]
    assert event["user"]["subject"] == "local" and len(event["sha256"]) == 64
    # The overlay shows the patient's image too: recorded with the one model whose map it is.
    [overlay] = [button for label, button in buttons.items() if label.startswith("Download overlay (")]
    png, mimetype, _ = downloads[overlay]
    assert png.startswith(b"\x89PNG") and mimetype == "image/png"
    [event] = [event for event in audit.read_events(trail) if event["action"] == "overlay download"]
    assert event["sha256"] == next(audit.read_events(trail))["sha256"] and event["method"] == "occlusion"
    assert [model["model"] for model in event["models"]] == [overlay.label.removeprefix("Download overlay (")[:-1]]

    # A trail that cannot be written refuses the download: no bytes without their event (the folder
    # named lies under the log file, so it cannot be made).
    monkeypatch.setenv(audit.AUDIT_DIR_ENV, os.path.join(trail, audit.LOG_NAME, "under-a-file"))
    with pytest.raises(AuditUnavailable):
        downloads[buttons["Download report (PDF)"]]
