"""The audit trail: who read which image with which models, and what they were told. No Streamlit here.

A clinic must be able to say afterwards who saw which reading. Each event is one JSON line: the UTC
time, the user (the identity provider's subject and e-mail, or "local"), the action, the sha256 of
the uploaded bytes, and per model its name, weights' sha256 (for the combined reading, its
combined.json's), calibrated probability, threshold, gate result and verdict. Never pixels, never
file names: every field is typed and checked, so a free-form value (a file name, an array) is
refused when the event is built, not found in the log.

The log is append-only (O_APPEND; a line is never rewritten), each line is flushed and fsynced
before `record` returns, and appends are serialised across threads (a lock) and processes (flock
on a lock file beside the log). When the log reaches `max_bytes` it is renamed audit.jsonl.1 (the
older ones move up: .1 -> .2 ...); rotated files are kept unless `keep` bounds them. If the event
cannot be written, `record` raises AuditUnavailable and the caller must not show the result: the
trail fails closed. What a failed write (a full disk) left of its line is cut off again, and a line
that a crash left unfinished is ended before the next event, so one lost event never hides the next.

Location: $MELANOMA_AUDIT_DIR, else $XDG_STATE_HOME/melanoma/audit, else ~/.local/state/melanoma/audit:
outside the repository, so a redeploy or `git clean` never removes it.

    python -m melanoma audit [--audit-dir DIR] [--since DATE] [--user USER] [--csv]
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import fcntl
import json
import math
import numbers
import os
import re
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Protocol, TextIO

AUDIT_DIR_ENV = "MELANOMA_AUDIT_DIR"
LOG_NAME = "audit.jsonl"
LOCK_NAME = "audit.lock"
MAX_BYTES = 10 * 1024 * 1024  # about 20,000 readings per file
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_+-]{0,99}")  # no dots, no slashes: never a file name
_SHA256 = re.compile(r"[0-9a-f]{64}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CSV_COLUMNS = (
    "time",
    "user",
    "email",
    "action",
    "sha256",
    "method",
    "images",
    "model",
    "weights_sha256",
    "probability",
    "threshold",
    "gate",
    "verdict",
    "skin_cancer_probability",
    "skin_cancer_threshold",
)


class AuditUnavailable(RuntimeError):
    """The event could not be written: the caller must not show what it was about to record."""


class AuditCorrupt(ValueError):
    """A line of the log is not an event this module wrote (cut short by a crash, or edited)."""


class Action(str, Enum):
    """What a user did. The value is what the log and the CSV say."""

    SESSION = "session"  # a signed-in user opened the app (each browser tab is a session)
    READING = "reading"
    EXPLANATION = "explanation"
    RESULTS_DOWNLOAD = "results download"
    REPORT_DOWNLOAD = "report download"
    OVERLAY_DOWNLOAD = "overlay download"  # an explanation map over the patient's image
    VALIDATION_RUN = "validation run"


class Method(str, Enum):
    """Which explanation map was shown."""

    OCCLUSION = "occlusion"
    GRAD_CAM = "grad-cam"


def _text(value: object, what: str, limit: int = 256) -> str:
    if not isinstance(value, str) or not value or len(value) > limit or _CONTROL.search(value):
        raise ValueError(f"{what} must be text of 1 to {limit} printable characters; received {value!r:.80}")
    return value


def _sha256(value: object, what: str) -> str:
    if not isinstance(value, str) or not _SHA256.fullmatch(value):
        raise ValueError(
            f"{what} must be a sha256 as 64 lowercase hex digits (hashlib's hexdigest()); received {value!r:.80}"
        )
    return value


def _model_name(value: object) -> str:
    if not isinstance(value, str) or not _MODEL_NAME.fullmatch(value):
        raise ValueError(
            f"a model name is letters, digits, _, + and - (at most 100, no dots or slashes, so never a "
            f"file name); received {value!r:.80}"
        )
    return value


def _probability(value: object, what: str) -> float:
    # numbers.Real admits Python and NumPy scalars, never an array.
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not 0.0 <= float(value) <= 1.0
        or math.isnan(float(value))
    ):
        raise ValueError(f"{what} must be one number from 0 to 1; received {type(value).__name__} {value!r:.80}")
    return float(value)


@dataclass(frozen=True)
class User:
    """Who acted: the identity provider's subject (stable) and e-mail, or LOCAL / PROXY without one."""

    subject: str
    email: str | None = None

    def __post_init__(self) -> None:
        _text(self.subject, "the user's subject")
        if self.email is not None and ("@" not in _text(self.email, "the user's e-mail") or " " in self.email):
            raise ValueError(f"the user's e-mail must look like name@domain; received {self.email!r:.80}")

    def matches(self, wanted: str) -> bool:
        return wanted == self.subject or (self.email is not None and wanted.lower() == self.email.lower())


LOCAL = User("local")  # the app served on this machine only, without sign-in
PROXY = User("proxy")  # behind an authenticating reverse proxy that does not name the user to the app


@dataclass(frozen=True)
class Model:
    """A model by name and the sha256 of its weights (its card's "sha256"). For the combined reading,
    whose members are recorded beside it, the sha256 of the combined.json it followed (its members,
    average and threshold), or None for a plain mean of models chosen together without one."""

    name: str
    weights_sha256: str | None

    def __post_init__(self) -> None:
        _model_name(self.name)
        if self.weights_sha256 is not None:
            _sha256(self.weights_sha256, f"{self.name}'s weights_sha256")

    def to_dict(self) -> dict:
        return {"model": self.name, "weights_sha256": self.weights_sha256}


class Scored(Protocol):
    """What Reading.of reads: melanoma.cases.Decision and melanoma.combined.CombinedReading both have it."""

    probability: float
    threshold: float | None
    assessed: bool


@dataclass(frozen=True)
class Reading:
    """One model's reading of one image; the verdict is derived here, so the log cannot contradict it."""

    model: Model
    probability: float
    threshold: float | None  # None: no validated threshold (a combination without one)
    assessed: bool  # the out-of-distribution gate: False means "not a dermoscopic lesion image", no verdict
    skin_cancer_probability: float | None = None  # a diagnosis model's P(skin cancer) and its threshold
    skin_cancer_threshold: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.model, Model):
            raise ValueError(f"a reading's model must be an audit.Model; received {type(self.model).__name__}")
        _probability(self.probability, f"{self.model.name}'s probability")
        if self.threshold is not None:
            _probability(self.threshold, f"{self.model.name}'s threshold")
        if not isinstance(self.assessed, bool):
            raise ValueError(f"assessed (the gate's result) must be True or False; received {self.assessed!r:.80}")
        if (self.skin_cancer_probability is None) != (self.skin_cancer_threshold is None):
            raise ValueError("a skin-cancer probability needs its threshold, and a threshold its probability")
        if self.skin_cancer_probability is not None:
            _probability(self.skin_cancer_probability, f"{self.model.name}'s skin-cancer probability")
            _probability(self.skin_cancer_threshold, f"{self.model.name}'s skin-cancer threshold")

    @classmethod
    def of(cls, result: Scored, model: Model) -> Reading:
        """From a Decision (a diagnosis model's skin-cancer reading included) or a CombinedReading."""
        return cls(
            model,
            result.probability,
            result.threshold,
            result.assessed,
            getattr(result, "malignant_probability", None),
            getattr(result, "malignant_threshold", None),
        )

    @property
    def verdict(self) -> str:
        if not self.assessed:
            return "not assessed"
        if self.threshold is None:
            return "no validated threshold"
        return "suspicious" if self.probability >= self.threshold else "not flagged"

    def to_dict(self) -> dict:
        entry = {
            **self.model.to_dict(),
            "probability": self.probability,
            "threshold": self.threshold,
            "gate": "passed" if self.assessed else "failed",
            "verdict": self.verdict,
        }
        if self.skin_cancer_probability is not None:
            entry.update(
                skin_cancer_probability=self.skin_cancer_probability, skin_cancer_threshold=self.skin_cancer_threshold
            )
        return entry


def audit_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """Where the trail is kept: $MELANOMA_AUDIT_DIR, else the user's state folder (XDG)."""
    if environ.get(AUDIT_DIR_ENV):
        return Path(environ[AUDIT_DIR_ENV]).expanduser()
    state = Path(environ.get("XDG_STATE_HOME") or Path(environ.get("HOME") or Path.home()) / ".local" / "state")
    return state / "melanoma" / "audit"


_LOCKS: dict[Path, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def _thread_lock(path: Path) -> threading.Lock:
    """One lock per log in this process, whichever AuditLog object writes it."""
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(path, threading.Lock())


def _fsync_folder(folder: Path) -> None:
    """Make a created or renamed file's name durable, not only its contents."""
    descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _rotated(path: Path) -> list[tuple[int, Path]]:
    """The rotated files (audit.jsonl.N), oldest (highest N) first."""
    found = [
        (int(p.name.rsplit(".", 1)[1]), p)
        for p in path.parent.glob(f"{path.name}.*")
        if p.name.rsplit(".", 1)[1].isdigit()
    ]
    return sorted(found, reverse=True)


class AuditLog:
    """The trail in one folder. Cheap to construct; safe to share between threads and processes."""

    def __init__(self, folder: str | Path | None = None, *, max_bytes: int = MAX_BYTES, keep: int | None = None):
        if max_bytes < 1024 or (keep is not None and keep < 1):
            raise ValueError(
                f"max_bytes must be at least 1024 and keep at least 1 or None; received {max_bytes}, {keep}"
            )
        self.folder = Path(folder) if folder is not None else audit_dir()
        self.path = (self.folder / LOG_NAME).absolute()
        self.max_bytes, self.keep = max_bytes, keep

    def record(
        self,
        user: User,
        action: Action,
        *,
        sha256: str | None = None,
        readings: Sequence[Reading] = (),
        models: Sequence[Model] = (),
        method: Method | None = None,
        images: int | None = None,
    ) -> dict:
        """Append one event and return it as written.

        sha256: of the uploaded bytes (the image, or a validation zip). readings: what each model said
        about it. models: the models used when there is no single image (a validation run), with
        images, how many were scored. Raises ValueError for a field of the wrong kind, and
        AuditUnavailable when the event cannot be made durable.
        """
        event = self._event(user, action, sha256, readings, models, method, images)
        data = (json.dumps(event, ensure_ascii=True, separators=(",", ":")) + "\n").encode("ascii")
        with _thread_lock(self.path):
            try:
                self._append(data)
            except OSError as error:
                raise AuditUnavailable(
                    f"The audit trail {self.path} cannot be written ({error.strerror or error}). Every reading must be "
                    f"recorded, so nothing is shown until it can be. Expected a folder this server's user may write: "
                    f"fix its permissions or free disk space, or set {AUDIT_DIR_ENV} to such a folder."
                ) from error
        return event

    @staticmethod
    def _event(
        user: User,
        action: Action,
        sha256: str | None,
        readings: Sequence[Reading],
        models: Sequence[Model],
        method: Method | None,
        images: int | None,
    ) -> dict:
        if not isinstance(user, User):
            raise ValueError(f"user must be an audit.User; received {type(user).__name__}")
        if not isinstance(action, Action):
            raise ValueError(
                f"action must be an audit.Action ({', '.join(a.name for a in Action)}); received {action!r:.80}"
            )
        if method is not None and not isinstance(method, Method):
            raise ValueError(f"method must be an audit.Method or None; received {method!r:.80}")
        if images is not None and (isinstance(images, bool) or not isinstance(images, int) or images < 0):
            raise ValueError(f"images must be a count (an int, 0 or more); received {images!r:.80}")
        for what, items, kind in (("readings", readings, Reading), ("models", models, Model)):
            if not isinstance(items, Sequence) or isinstance(items, str) or not all(isinstance(i, kind) for i in items):
                raise ValueError(f"{what} must be a sequence of audit.{kind.__name__}; received {items!r:.80}")
        event = {
            "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
            "user": {"subject": user.subject, "email": user.email},
            "action": action.value,
            "sha256": None if sha256 is None else _sha256(sha256, "sha256 (of the uploaded bytes)"),
            "method": None if method is None else method.value,
            "images": images,
            "readings": [reading.to_dict() for reading in readings],
            "models": [m.to_dict() for m in models],
        }
        return {key: value for key, value in event.items() if value not in (None, [])}

    def _append(self, data: bytes) -> None:
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        lock = os.open(self.folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the descriptor closes
            created = self._rotate_if_full(len(data)) or not self.path.exists()
            log = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                size = os.fstat(log).st_size
                if size and os.pread(log, 1, size - 1) != b"\n":  # a crash cut the last line short
                    data = b"\n" + data  # so this event starts a line of its own, not the torn one's end
                try:
                    view = memoryview(data)
                    while view:  # a short write would otherwise leave half a line for the next to follow
                        view = view[os.write(log, view) :]
                    os.fsync(log)
                except OSError:
                    # A full disk stopped the line part-way: take back what was written, so the next
                    # event is not glued to its half. Under the lock, no other writer is between.
                    with contextlib.suppress(OSError):
                        os.ftruncate(log, size)
                    raise
            finally:
                os.close(log)
            if created:
                _fsync_folder(self.folder)
        finally:
            os.close(lock)

    def _rotate_if_full(self, incoming: int) -> bool:
        """Rename a full log to .1 (older ones up by one); True when it did."""
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return False
        if size == 0 or size + incoming <= self.max_bytes:
            return False
        for number, path in _rotated(self.path):
            if self.keep is not None and number >= self.keep:
                path.unlink()
            else:
                path.rename(self.path.with_name(f"{LOG_NAME}.{number + 1}"))
        self.path.rename(self.path.with_name(f"{LOG_NAME}.1"))
        return True


def _as_utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _parsed(line: bytes) -> tuple[dict, datetime, User]:
    """One line as the event, its time and its user, checked as far as the export relies on them;
    ValueError, KeyError or TypeError when `record` could not have written it."""
    event = json.loads(line.decode("ascii"))  # `record` writes ASCII only
    if not isinstance(event, dict):
        raise ValueError(f"expected a JSON object; found {type(event).__name__}")
    moment, who = datetime.fromisoformat(event["time"]), User(**event["user"])
    if moment.tzinfo is None:  # `record` writes UTC with its offset; a bare time cannot be compared with --since
        raise ValueError(f"its time {event['time']!r} names no time zone")
    for key in ("readings", "models"):
        details = event.get(key, [])
        if not isinstance(details, list) or not all(isinstance(detail, dict) for detail in details):
            raise ValueError(f"its {key} must be a list of JSON objects; found {details!r:.80}")
    return event, moment, who


def read_events(
    folder: str | Path | None = None, *, since: datetime | None = None, user: str | None = None
) -> Iterator[dict]:
    """The events, oldest first across the rotated files; since: at or after (naive = UTC); user:
    a subject or e-mail. Raises AuditCorrupt naming the file and line of one that is not an event."""
    path = (Path(folder) if folder is not None else audit_dir()) / LOG_NAME
    files = [p for _, p in _rotated(path)] + ([path] if path.exists() else [])
    for file in files:
        with open(file, "rb") as lines:  # bytes: a stray non-ASCII byte is one corrupt line, not a crash
            for number, line in enumerate(lines, 1):
                try:
                    event, moment, who = _parsed(line)
                except (ValueError, KeyError, TypeError) as error:  # UnicodeDecodeError is a ValueError
                    raise AuditCorrupt(
                        f"{file}, line {number}, is not an audit event ({error}); expected one JSON "
                        "object per line as `record` writes it. A line that the server's crash cut short "
                        "holds an event that was never completed, so never shown, and the events after it "
                        "start lines of their own: to read them, copy the file elsewhere and remove this "
                        "one line from the copy. Any other damage means the file was edited."
                    ) from error
                if (since is None or moment >= _as_utc(since)) and (user is None or who.matches(user)):
                    yield event


def to_csv(events: Iterator[dict] | Sequence[dict], stream: TextIO) -> int:
    """Write the events as CSV, one row per reading or model (one for an event with neither); returns the rows."""
    writer = csv.DictWriter(stream, _CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    rows = 0
    for event in events:
        common = {key: event.get(key) for key in ("time", "action", "sha256", "method", "images")}
        common.update(user=event["user"]["subject"], email=event["user"].get("email"))
        for detail in event.get("readings") or event.get("models") or [{}]:
            writer.writerow({**common, **detail})
            rows += 1
    return rows


def _moment(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a date or time such as 2026-01-31 or 2026-01-31T14:00Z "
            f"(UTC unless it names a zone); received {text!r}"
        ) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `audit` subcommand's options."""
    parser.add_argument(
        "--audit-dir",
        type=Path,
        default=None,
        help=f"the trail's folder (default: ${AUDIT_DIR_ENV}, else ~/.local/state/melanoma/audit)",
    )
    parser.add_argument("--since", type=_moment, help="only events at or after this date or time (UTC)")
    parser.add_argument("--user", help="only this user's events (the identity provider's subject or e-mail)")
    parser.add_argument("--csv", action="store_true", help="CSV, one row per model reading, instead of JSON lines")


def command_audit(args: argparse.Namespace) -> int:
    """Print the selected events; 2 when the trail cannot be read or is not there (a misspelt folder
    must not read as "nothing happened")."""
    folder = args.audit_dir or audit_dir()
    log = Path(folder) / LOG_NAME
    if not log.exists() and not _rotated(log):
        print(
            f"error: there is no audit trail in {folder} (expected {LOG_NAME} there). The server writes it to "
            f"${AUDIT_DIR_ENV}, else to ~/.local/state/melanoma/audit of the user the server runs as: run this "
            f"command as that user, or name the server's folder with --audit-dir or {AUDIT_DIR_ENV}.",
            file=sys.stderr,
        )
        return 2
    events = read_events(folder, since=args.since, user=args.user)
    try:
        if args.csv:
            count = to_csv(events, sys.stdout)
        else:
            count = 0
            for event in events:
                print(json.dumps(event, ensure_ascii=False))
                count += 1
    except (AuditCorrupt, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not count:
        print(f"No audit events in {folder} match.", file=sys.stderr)
    return 0
