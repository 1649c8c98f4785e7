"""The audit trail: typed events, append-only durable lines, rotation, concurrency, fail-closed, export."""

import io
import json
import multiprocessing
import os
import threading
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from melanoma import audit
from melanoma.audit import Action, AuditCorrupt, AuditLog, AuditUnavailable, Method, Model, Reading, User

IMAGE = "a" * 64
LITE = Model("efficientnet_lite0", "b" * 64)
ALICE = User("alice-sub", "alice@clinic.example")
BOB = User("bob-sub", "bob@clinic.example")


def reading(probability: float = 0.7, assessed: bool = True) -> Reading:
    return Reading(LITE, probability, 0.3, assessed)


def lines(folder) -> list[str]:
    return (folder / audit.LOG_NAME).read_text().splitlines()


def test_an_event_holds_who_what_and_each_models_reading(tmp_path):
    event = AuditLog(tmp_path).record(
        ALICE,
        Action.READING,
        sha256=IMAGE,
        readings=[reading(), Reading(Model("combined", None), 0.2, None, True), reading(0.9, assessed=False)],
    )
    [stored] = map(json.loads, lines(tmp_path))
    assert stored == event
    assert stored["user"] == {"subject": "alice-sub", "email": "alice@clinic.example"}
    assert stored["action"] == "reading" and stored["sha256"] == IMAGE
    assert datetime.fromisoformat(stored["time"]).utcoffset() == timedelta(0)
    first, combined, ungated = stored["readings"]
    assert first == {
        "model": "efficientnet_lite0",
        "weights_sha256": "b" * 64,
        "probability": 0.7,
        "threshold": 0.3,
        "gate": "passed",
        "verdict": "suspicious",
    }
    assert combined["verdict"] == "no validated threshold" and combined["weights_sha256"] is None
    assert ungated["gate"] == "failed" and ungated["verdict"] == "not assessed"


def test_a_reading_is_built_from_a_decision_with_its_skin_cancer_reading():
    from melanoma.cases import Decision

    decision = Decision(
        "efficientnet_lite0_diagnosis", 0.1, 0.3, None, None, malignant_probability=0.6, malignant_threshold=0.5
    )
    entry = Reading.of(decision, Model(decision.model, "c" * 64)).to_dict()
    assert entry["verdict"] == "not flagged"
    assert (entry["skin_cancer_probability"], entry["skin_cancer_threshold"]) == (0.6, 0.5)


@pytest.mark.parametrize(
    "build",
    [
        lambda: Model("lesion_0042.jpg", "b" * 64),  # a file name where a model name belongs
        lambda: Model("../models/x", "b" * 64),
        lambda: Model("efficientnet_lite0", "lesion_0042.jpg"),
        lambda: Reading(LITE, np.full((4, 4), 0.5), 0.3, True),  # pixels where a probability belongs
        lambda: Reading(LITE, 1.5, 0.3, True),
        lambda: Reading(LITE, float("nan"), 0.3, True),
        lambda: Reading(LITE, 0.5, 0.3, "yes"),
        lambda: Reading(LITE, 0.5, 0.3, True, skin_cancer_probability=0.4),
        lambda: User("alice\nforged line"),
        lambda: User("alice", "not an e-mail"),
    ],
)
def test_free_form_values_are_refused_when_the_event_is_built(build):
    with pytest.raises(ValueError):
        build()


@pytest.mark.parametrize(
    "fields",
    [
        {"sha256": "lesion_0042.jpg"},
        {"sha256": np.zeros(64, np.uint8).tobytes().hex()[:63]},
        {"readings": ["efficientnet_lite0 0.7"]},
        {"readings": reading()},  # one reading, not a sequence of them
        {"images": np.arange(3)},
        {"method": "occlusion of lesion_0042.jpg"},
    ],
)
def test_record_refuses_untyped_fields_and_writes_nothing(tmp_path, fields):
    with pytest.raises(ValueError):
        AuditLog(tmp_path).record(ALICE, Action.READING, **fields)
    with pytest.raises(ValueError):
        AuditLog(tmp_path).record(ALICE, "reading")
    assert not (tmp_path / audit.LOG_NAME).exists()


def test_the_log_is_append_only_and_each_line_is_synced(tmp_path, monkeypatch):
    log = AuditLog(tmp_path)
    log.record(ALICE, Action.SESSION)
    before = (tmp_path / audit.LOG_NAME).read_bytes()
    synced, opened = [], []
    real_fsync, real_open = os.fsync, os.open
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd) or real_fsync(fd))
    monkeypatch.setattr(
        os, "open", lambda path, flags, *mode: opened.append((str(path), flags)) or real_open(path, flags, *mode)
    )
    log.record(BOB, Action.EXPLANATION, sha256=IMAGE, method=Method.GRAD_CAM)
    after = (tmp_path / audit.LOG_NAME).read_bytes()
    assert after.startswith(before) and after.count(b"\n") == 2
    [flags] = [flags for path, flags in opened if path.endswith(audit.LOG_NAME)]
    assert flags & os.O_APPEND and not flags & os.O_TRUNC
    assert synced  # the line is on disk before record returns
    assert oct((tmp_path / audit.LOG_NAME).stat().st_mode & 0o777) == oct(0o600)


def test_a_full_log_rotates_and_every_event_is_still_read_in_order(tmp_path):
    log = AuditLog(tmp_path, max_bytes=1024)
    for index in range(40):
        log.record(ALICE, Action.VALIDATION_RUN, sha256=IMAGE, models=[LITE], images=index)
    rotated = sorted(p.name for p in tmp_path.glob(f"{audit.LOG_NAME}.*"))
    assert len(rotated) >= 3 and all(p.stat().st_size <= 1024 for p in tmp_path.glob(f"{audit.LOG_NAME}*"))
    assert [event["images"] for event in audit.read_events(tmp_path)] == list(range(40))


def test_rotation_keeps_at_most_keep_files_when_bounded(tmp_path):
    log = AuditLog(tmp_path, max_bytes=1024, keep=2)
    for index in range(40):
        log.record(ALICE, Action.VALIDATION_RUN, models=[LITE], images=index)
    assert sorted(p.name for p in tmp_path.glob(f"{audit.LOG_NAME}.*")) == [f"{audit.LOG_NAME}.{n}" for n in (1, 2)]
    kept = [event["images"] for event in audit.read_events(tmp_path)]
    assert kept == list(range(40 - len(kept), 40))  # the newest, in order


def test_concurrent_appends_from_threads_keep_every_line_intact(tmp_path):
    def write(user: User) -> None:
        log = AuditLog(tmp_path, max_bytes=64 * 1024)  # one object per thread, as separate sessions would
        for _ in range(50):
            log.record(user, Action.READING, sha256=IMAGE, readings=[reading()] * 4)

    threads = [threading.Thread(target=write, args=(User(f"user-{n}"),)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    events = list(audit.read_events(tmp_path))  # raises on any torn line
    assert len(events) == 400
    assert {event["user"]["subject"] for event in events} == {f"user-{n}" for n in range(8)}


def _write_from_process(folder: str, subject: str) -> None:
    log = AuditLog(folder, max_bytes=16 * 1024)
    for _ in range(40):
        log.record(User(subject), Action.READING, sha256=IMAGE, readings=[reading()])


def test_concurrent_appends_from_processes_keep_every_line_intact(tmp_path):
    context = multiprocessing.get_context("fork")
    processes = [context.Process(target=_write_from_process, args=(str(tmp_path), f"p{n}")) for n in range(4)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=60)
    assert all(process.exitcode == 0 for process in processes)
    assert len(list(audit.read_events(tmp_path))) == 160


def test_a_log_that_cannot_be_appended_to_fails_closed(tmp_path):
    """What a clinic's server meets when the log's permissions are wrong (a directory in the log's place
    stands in for them: root, as CI runs, writes through file permissions)."""
    folder = tmp_path / "audit"
    (folder / audit.LOG_NAME).mkdir(parents=True)
    with pytest.raises(AuditUnavailable, match=audit.AUDIT_DIR_ENV):
        AuditLog(folder).record(ALICE, Action.READING, sha256=IMAGE)


def test_a_folder_that_cannot_be_made_fails_closed_even_for_root(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the audit folder should be")
    with pytest.raises(AuditUnavailable, match="cannot be written") as caught:
        AuditLog(blocker / "audit").record(ALICE, Action.READING, sha256=IMAGE)
    assert str(blocker) in str(caught.value)


def _record_on_a_full_disk(folder: str, room: int) -> None:
    """In a child process: the file-size limit stands in for a disk that fills part-way through a line."""
    import resource
    import signal

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() then fails with EFBIG instead of killing the process
    resource.setrlimit(resource.RLIMIT_FSIZE, (room, resource.RLIM_INFINITY))
    try:
        AuditLog(folder).record(ALICE, Action.READING, sha256=IMAGE, readings=[reading()])
    except AuditUnavailable:
        os._exit(0)
    os._exit(1)  # the write should have failed


def test_a_write_that_fails_part_way_leaves_no_half_line_for_the_next_event(tmp_path):
    """The disk filled 40 bytes into a line: the next event, once there was room, was glued onto the
    half line and the export stopped there. Now the half line is taken back and both events read."""
    log = AuditLog(tmp_path)
    log.record(ALICE, Action.SESSION)
    before = (tmp_path / audit.LOG_NAME).read_bytes()
    child = multiprocessing.get_context("fork").Process(
        target=_record_on_a_full_disk, args=(str(tmp_path), len(before) + 40)
    )
    child.start()
    child.join(timeout=60)
    assert child.exitcode == 0, "the write on a full disk did not raise AuditUnavailable"
    assert (tmp_path / audit.LOG_NAME).read_bytes() == before
    log.record(BOB, Action.READING, sha256=IMAGE, readings=[reading()])
    assert [event["user"]["subject"] for event in audit.read_events(tmp_path)] == ["alice-sub", "bob-sub"]


def test_after_a_line_a_crash_left_unfinished_the_next_event_starts_its_own_line(tmp_path):
    log = AuditLog(tmp_path)
    log.record(ALICE, Action.SESSION)
    with open(tmp_path / audit.LOG_NAME, "ab") as handle:  # the server died part-way through a line
        handle.write(b'{"time":"2026-01-31T')
    log.record(BOB, Action.READING, sha256=IMAGE, readings=[reading()])
    first, torn, last = (tmp_path / audit.LOG_NAME).read_bytes().splitlines()
    assert torn == b'{"time":"2026-01-31T' and json.loads(last)["user"]["subject"] == "bob-sub"
    with pytest.raises(AuditCorrupt, match="line 2.*never completed.*remove this one line"):
        list(audit.read_events(tmp_path))
    (tmp_path / audit.LOG_NAME).write_bytes(first + b"\n" + last + b"\n")  # as the advice says, in a copy
    assert len(list(audit.read_events(tmp_path))) == 2


def test_the_folder_comes_from_the_environment_else_the_users_state_folder(tmp_path):
    assert audit.audit_dir({audit.AUDIT_DIR_ENV: str(tmp_path)}) == tmp_path
    home = {"HOME": "/home/dr", "XDG_STATE_HOME": ""}
    assert audit.audit_dir(home) == audit.Path("/home/dr/.local/state/melanoma/audit")
    assert audit.audit_dir({"XDG_STATE_HOME": "/var/lib/x"}) == audit.Path("/var/lib/x/melanoma/audit")


def test_export_filters_by_time_and_user(tmp_path):
    log = AuditLog(tmp_path)
    for user in (ALICE, BOB, ALICE):
        log.record(user, Action.READING, sha256=IMAGE, readings=[reading()])
    assert len(list(audit.read_events(tmp_path, user="alice-sub"))) == 2
    assert len(list(audit.read_events(tmp_path, user="BOB@clinic.example"))) == 1
    future = datetime.now(timezone.utc) + timedelta(minutes=1)
    assert not list(audit.read_events(tmp_path, since=future))
    assert len(list(audit.read_events(tmp_path, since=future.replace(tzinfo=None) - timedelta(hours=1)))) == 3


def test_a_torn_line_is_reported_with_its_file_and_line(tmp_path):
    AuditLog(tmp_path).record(ALICE, Action.SESSION)
    with open(tmp_path / audit.LOG_NAME, "a") as handle:
        handle.write('{"time": "2026-')
    with pytest.raises(AuditCorrupt, match=f"{audit.LOG_NAME}, line 2"):
        list(audit.read_events(tmp_path))


@pytest.mark.parametrize(
    "damage, since, reason",
    [
        (lambda line: line[:20] + b"\xff" + line[20:], None, "can't decode byte 0xff"),
        (lambda line: line.replace(b"+00:00", b""), datetime(2023, 1, 1), "names no time zone"),
        (lambda line: line.replace(b'"action"', b'"readings":"abc","action"'), None, "its readings must be a list"),
        (lambda line: line.replace(b'"action"', b'"models":[1],"action"'), None, "its models must be a list"),
        (lambda line: b"[1]\n", None, "expected a JSON object"),
    ],
)
def test_a_damaged_line_is_reported_with_its_file_and_line_never_a_traceback(tmp_path, capsys, damage, since, reason):
    """A stray byte, a time without its zone or a list that is not one was a UnicodeDecodeError or
    TypeError from the export; each is AuditCorrupt naming the file and line, and the command says so."""
    from melanoma.__main__ import main as cli

    log = AuditLog(tmp_path)
    log.record(ALICE, Action.SESSION)
    log.record(BOB, Action.SESSION)
    first, second = (tmp_path / audit.LOG_NAME).read_bytes().splitlines(keepends=True)
    (tmp_path / audit.LOG_NAME).write_bytes(first + damage(second))
    with pytest.raises(AuditCorrupt, match=f"{audit.LOG_NAME}, line 2, is not an audit event .*{reason}"):
        list(audit.read_events(tmp_path, since=since))
    assert cli(["audit", "--audit-dir", str(tmp_path), "--since", "2023-01-01", "--csv"]) == 2
    assert f"{audit.LOG_NAME}, line 2" in capsys.readouterr().err


def test_csv_has_one_row_per_reading_and_per_model(tmp_path):
    log = AuditLog(tmp_path)
    log.record(ALICE, Action.READING, sha256=IMAGE, readings=[reading(), reading(0.1)])
    log.record(BOB, Action.VALIDATION_RUN, sha256=IMAGE, models=[LITE, Model("scratch_cnn", "d" * 64)], images=12)
    log.record(BOB, Action.SESSION)
    stream = io.StringIO()
    assert audit.to_csv(audit.read_events(tmp_path), stream) == 5
    header, *rows = stream.getvalue().splitlines()
    assert header.split(",")[:5] == ["time", "user", "email", "action", "sha256"]
    assert [row.split(",")[3] for row in rows] == ["reading", "reading", "validation run", "validation run", "session"]
    assert "not flagged" in rows[1] and ",12," in rows[2]


def test_the_command_exports_json_lines_or_csv(tmp_path, capsys):
    from melanoma.__main__ import main as cli

    AuditLog(tmp_path).record(ALICE, Action.REPORT_DOWNLOAD, sha256=IMAGE, readings=[reading()])
    AuditLog(tmp_path).record(BOB, Action.RESULTS_DOWNLOAD, sha256=IMAGE)
    assert cli(["audit", "--audit-dir", str(tmp_path), "--user", "alice@clinic.example"]) == 0
    [line] = capsys.readouterr().out.splitlines()
    assert json.loads(line)["action"] == "report download"
    assert cli(["audit", "--audit-dir", str(tmp_path), "--since", "2000-01-01", "--csv"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 3
    assert cli(["audit", "--audit-dir", str(tmp_path), "--user", "carol@clinic.example"]) == 0
    assert "No audit events" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli(["audit", "--since", "last tuesday"])


def test_the_command_on_a_folder_without_a_trail_says_so_and_fails(tmp_path, capsys, monkeypatch):
    """A misspelt --audit-dir printed "No audit events ... match." and exited 0, as if nothing had happened."""
    from melanoma.__main__ import main as cli

    AuditLog(tmp_path / "audit").record(ALICE, Action.SESSION)
    assert cli(["audit", "--audit-dir", str(tmp_path / "audti")]) == 2
    error = capsys.readouterr().err
    assert (
        f"no audit trail in {tmp_path / 'audti'}" in error and "--audit-dir" in error and audit.AUDIT_DIR_ENV in error
    )
    monkeypatch.setenv(audit.AUDIT_DIR_ENV, str(tmp_path / "elsewhere"))
    assert cli(["audit"]) == 2
    assert "as that user" in capsys.readouterr().err
