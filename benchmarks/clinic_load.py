"""A clinic's morning on one server: N signed-in sessions each upload real images at once.

    .venv/bin/python benchmarks/clinic_load.py [--sessions 20] [--images-per-session 3] [--warm]
        [--browsers K] [--browsers-yield] [--timeout 900]

Starts oidc-provider-mock and `streamlit run app.py` with sign-in, both on 127.0.0.1 only (never
another address), on the installed models, with a throw-away audit folder. Each session signs in
as its own user through the provider in Chromium; once every session has signed in, all upload
their images at the same moment. A session in a Chromium page waits for the results table, lets
the page finish (its map), downloads the results CSV and closes its tab. With --browsers K, only K
sessions keep their page; the others close it once signed in and speak Streamlit's own websocket
protocol with the same cookies, as the page does (file URLs, uploads, the rerun with the
uploader's state), reading the results table's data and drawing nothing: browsers on computers of
their own, whose drawing costs the server's cores nothing. Reports: failed sessions; whether every
probability (each page's CSV, each client's table) equals the command line's
(melanoma.inference.load_predictor(name).probabilities on the same file, unrounded); median and
p95 over sessions of upload -> its readings recorded on the server (the audit trail's times: the
server's share of the wait), -> the websocket frame with the first results table reaching the
client (for the combined reading, its members' probabilities and verdicts while the differential's
other models read), -> the one with the complete results (their download button), -> all
probabilities shown on a Chromium page, and -> the run finished (its map sent); the CPU time of
the server and of everything else; the server's peak resident memory; the audit events written,
by action, and whether each page's download is among them. A failed session names the step it was at
and what its page read. By default the sessions meet a cold server, whose first visit starts loading
the models (the morning's first clinicians); with --warm, one session reads one other image first,
untimed and left out of every figure (a server in use). The twenty browsers share the server's
cores here, which a clinic's own computers do not; with --browsers-yield they run at the lowest CPU
priority (nice 19), so that the server is served first, as on cores of its own. Bounded: every
wait times out after a third of --timeout, so that a stuck session is reported as a failure, and
the whole run is cut off after --timeout seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import io
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.app_load import memory_mib  # noqa: E402
from melanoma import audit  # noqa: E402
from tests.test_browser_signin import CHROMIUM, app_server, free_port, identity_provider, sign_in_secrets  # noqa: E402

IMAGES = ROOT.parent / "shared" / "data" / "ham10000" / "images"
TOLERANCE = 1e-6  # the CSV holds the app's float64 values; anything beyond this is a different computation
RESULTS = "Download results (CSV)"
WARM_UP = "clinician-warm-up"  # the untimed first visitor of --warm


def _serve_identity_provider(users: dict[str, dict], issuer: multiprocessing.Queue, stop) -> None:
    with identity_provider(users) as url:
        issuer.put(url)
        stop.wait()


@contextlib.contextmanager
def identity_provider_process(users: dict[str, dict]) -> Iterator[str]:
    """The tests' identity provider in a process of its own, as a clinic's is: in this one it would
    share an interpreter with the client of every browser page, and answer the server slower."""
    context = multiprocessing.get_context("spawn")
    issuer, stop = context.Queue(), context.Event()
    process = context.Process(target=_serve_identity_provider, args=(users, issuer, stop), daemon=True)
    process.start()
    try:
        yield issuer.get(timeout=60)
    finally:
        stop.set()
        process.join(timeout=10)


def yielding_chromium(folder: Path) -> str:
    """A Chromium launcher at the lowest CPU priority; every page's process inherits it."""
    launcher = folder / "chromium-nice"
    launcher.write_text(f'#!/bin/sh\nexec nice -n 19 "{CHROMIUM}" "$@"\n')
    launcher.chmod(0o755)
    return str(launcher)


def pick_images(folder: Path, count: int) -> list[Path]:
    """`count` images spread evenly over the sorted folder (deterministic)."""
    files = sorted(folder.glob("*.jpg"))
    if len(files) < count:
        raise SystemExit(
            f"{folder} holds {len(files)} JPEG images; expected at least {count}. Point --images at "
            "the HAM10000 images folder."
        )
    step = len(files) // count
    return files[::step][:count]


def expected_probabilities(paths: list[Path], models: list[str]) -> dict[tuple[str, str], float]:
    """(file name, model) -> the probability the command line gives for that file, one image per call as the app."""
    from melanoma.images import read_image
    from melanoma.inference import load_predictor

    expected = {}
    for model in models:
        predictor = load_predictor(model)
        for path in paths:
            expected[path.name, model] = float(predictor.probabilities([read_image(str(path)).pixels])[0])
    return expected


class Outcome(NamedTuple):
    """One session as its browser saw it."""

    subject: str
    uploaded_at: float  # time.time() as the upload began (the audit trail's clock: this machine's)
    first: float  # seconds from the upload to the websocket frame with the first results table
    delivered: float  # seconds from the upload to the websocket frame with the results' download button
    shown: float | None  # seconds from the upload to the results table on the page; None over the protocol
    finished: float  # seconds from the upload to the finished page (its map drawn)
    rows: list[dict]  # the results CSV, or the results table's data over the protocol


class StartLine:
    """Every session uploads at the same moment, once all have signed in and see the uploader (a
    session that fails before steps aside): the clinic's twenty signed-in clinicians at once."""

    def __init__(self, sessions: int) -> None:
        self._waiting, self._go = sessions, asyncio.Event()

    def step_aside(self) -> None:
        self._waiting -= 1
        if self._waiting <= 0:
            self._go.set()

    async def ready(self) -> None:
        self.step_aside()
        await self._go.wait()


async def sign_in(page, url: str, subject: str, timeout_ms: int) -> None:
    """Through the app's sign-in screen and the provider's one-click form, as `subject`."""
    await page.goto(url, timeout=timeout_ms)
    await page.get_by_role("button", name="Sign in").click(timeout=timeout_ms)
    await page.get_by_role("button", name=subject, exact=True).click(timeout=timeout_ms)
    await page.get_by_text("Signed in as").wait_for(timeout=timeout_ms)


def adds_a_table(payload: bytes) -> bool:
    """Whether a websocket frame from the server adds a table: on the Diagnose page after an upload,
    the first is the results (for the combined reading, its members' while the differential reads)."""
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

    message = ForwardMsg()
    message.ParseFromString(payload)
    delta = message.delta if message.WhichOneof("type") == "delta" else None
    return delta is not None and delta.WhichOneof("type") == "new_element" and delta.new_element.HasField("dataframe")


async def browser_session(
    browser, url: str, subject: str, paths: list[Path], timeout_ms: int, start: StartLine
) -> Outcome:
    """Sign in as `subject`, upload `paths` at once, let the page finish and download the results."""
    delivered = []  # perf_counter of each websocket frame from the server that carries the results
    tables = []  # perf_counter of each websocket frame from the server that adds a table

    def received(payload) -> None:
        if isinstance(payload, bytes):
            if RESULTS.encode() in payload:
                delivered.append(time.perf_counter())
            if adds_a_table(payload):
                tables.append(time.perf_counter())

    context = page = None
    stage, arrived = "opening the page", False
    try:
        context = await browser.new_context(accept_downloads=True)
        page = await context.new_page()
        page.on("websocket", lambda socket: socket.on("framereceived", received))
        stage = "signing in"
        await sign_in(page, url, subject, timeout_ms)
        uploader = page.locator("input[type=file]")
        await uploader.wait_for(state="attached", timeout=timeout_ms)
        stage, arrived = "waiting for the results table", True
        await start.ready()
        uploaded_at, started = time.time(), time.perf_counter()
        await uploader.set_input_files([str(path) for path in paths])
        await page.get_by_role("button", name=RESULTS).wait_for(timeout=timeout_ms)
        shown = time.perf_counter() - started
        first = min((arrived for arrived in tables if arrived >= started), default=None)
        if not delivered or first is None:
            raise RuntimeError("the results table showed, but no websocket frame carrying it was seen")
        stage = "waiting for the page to finish"  # its map, as a clinician reads it before downloading
        await page.locator('[data-testid="stApp"][data-test-script-state="notRunning"]').wait_for(timeout=timeout_ms)
        finished = time.perf_counter() - started
        stage = "downloading the results"
        async with page.expect_download(timeout=timeout_ms) as download:
            await page.get_by_role("button", name=RESULTS).click(timeout=timeout_ms)
        text = Path(await (await download.value).path()).read_text()
        return Outcome(
            subject,
            uploaded_at,
            first - started,
            delivered[0] - started,
            shown,
            finished,
            list(csv.DictReader(io.StringIO(text))),
        )
    except Exception as error:
        if not arrived:
            start.step_aside()
        try:
            page_text = " ".join((await page.locator("body").inner_text(timeout=5000)).split())[-400:]
        except Exception:  # a closed or hung page: the step and its error still say what went wrong
            page_text = "(unreadable)"
        raise RuntimeError(f"{subject}, {stage}: {error}; the page read: {page_text}") from error
    finally:
        if context is not None:
            await context.close()


async def protocol_session(
    browser, url: str, subject: str, paths: list[Path], timeout_ms: int, start: StartLine
) -> Outcome:
    """Sign in as `subject` in Chromium and close the page; then upload `paths` and read the results
    over Streamlit's own websocket protocol, as the page does, drawing nothing: a browser on a
    computer of its own, whose drawing costs the server's cores nothing. Downloads nothing."""
    context = await browser.new_context()
    try:
        await sign_in(await context.new_page(), url, subject, timeout_ms)
        cookies = {cookie["name"]: cookie["value"] for cookie in await context.cookies()}
    except Exception as error:
        start.step_aside()
        raise RuntimeError(f"{subject}, signing in: {error}") from error
    finally:
        await context.close()
    arrived = False

    async def at_the_start_line() -> None:
        nonlocal arrived
        arrived = True
        await start.ready()

    try:
        return await read_over_protocol(url, subject, cookies, paths, at_the_start_line, timeout_ms / 1000)
    except Exception as error:
        if not arrived:
            start.step_aside()
        raise RuntimeError(f"{subject}, reading over the protocol: {error!r}") from error


async def read_over_protocol(
    url: str, subject: str, cookies: dict[str, str], paths: list[Path], at_the_start_line, seconds: float
) -> Outcome:
    """The Diagnose page's first run, then the upload (file URLs, one PUT per file) and the rerun
    with the uploader's state, timed from the upload to the results' download button (delivered)
    and to the end of the run (finished); the rows come from the results table's Arrow data. The
    steps before and after the start line each get `seconds`."""
    import httpx
    import pyarrow
    import websockets
    from streamlit.proto.BackMsg_pb2 import BackMsg
    from streamlit.proto.Common_pb2 import UploadedFileInfo
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

    xsrf = cookies["_streamlit_xsrf"]
    async with websockets.connect(
        url.replace("http://", "ws://") + "/_stcore/stream",
        subprotocols=["streamlit", xsrf],
        additional_headers={"Cookie": "; ".join(f"{name}={value}" for name, value in cookies.items()), "Origin": url},
        max_size=None,
        open_timeout=seconds,
    ) as socket:

        async def received() -> tuple[str | None, ForwardMsg]:
            message = ForwardMsg()
            message.ParseFromString(await socket.recv())
            return message.WhichOneof("type"), message

        def element(message: ForwardMsg):
            delta = message.delta
            return delta.new_element if delta.WhichOneof("type") == "new_element" else None

        first_run = BackMsg()
        first_run.rerun_script.query_string = ""
        await socket.send(first_run.SerializeToString())
        session_id = page_hash = uploader = None
        async with asyncio.timeout(seconds):
            while (kind := (reply := await received())[0]) != "script_finished":
                message = reply[1]
                if kind == "new_session":
                    session_id = message.new_session.initialize.session_id
                    page_hash = message.new_session.page_script_hash
                elif kind == "delta" and (shown := element(message)) and shown.WhichOneof("type") == "file_uploader":
                    uploader = shown.file_uploader.id
        if uploader is None:
            raise RuntimeError("the Diagnose page showed no uploader")
        await at_the_start_line()

        async with asyncio.timeout(seconds):
            uploaded_at, started = time.time(), time.perf_counter()
            request = BackMsg()
            request.file_urls_request.request_id, request.file_urls_request.session_id = subject, session_id
            request.file_urls_request.file_names.extend(path.name for path in paths)
            await socket.send(request.SerializeToString())
            while (reply := await received())[0] != "file_urls_response":
                pass
            uploaded = []
            # No timeout of its own (httpx's is 5 s): a browser waits for its upload, and this step is bounded.
            async with httpx.AsyncClient(
                base_url=url, cookies=cookies, headers={"X-Xsrftoken": xsrf}, timeout=None
            ) as client:
                for path, file_urls in zip(paths, reply[1].file_urls_response.file_urls, strict=True):
                    data = path.read_bytes()
                    (
                        await client.put(file_urls.upload_url, files={"file": (path.name, data, "image/jpeg")})
                    ).raise_for_status()
                    uploaded.append(
                        UploadedFileInfo(name=path.name, size=len(data), file_id=file_urls.file_id, file_urls=file_urls)
                    )
            rerun = BackMsg()
            rerun.rerun_script.page_script_hash = page_hash
            state = rerun.rerun_script.widget_states.widgets.add()
            state.id = uploader
            state.file_uploader_state_value.uploaded_file_info.extend(uploaded)
            await socket.send(rerun.SerializeToString())
            table = first = delivered = None
            while True:
                kind, message = await received()
                if kind == "script_finished":
                    if delivered is not None:
                        break
                    if message.script_finished != ForwardMsg.FINISHED_EARLY_FOR_RERUN:
                        raise RuntimeError("the page's run ended without the results table")
                shown = element(message) if kind == "delta" else None
                if shown is None:
                    continue
                if shown.WhichOneof("type") == "dataframe" and delivered is None:  # the last: the complete table
                    table = pyarrow.ipc.open_stream(shown.dataframe.arrow_data.data).read_all().to_pandas()
                    first = first or time.perf_counter() - started
                elif shown.WhichOneof("type") == "download_button" and shown.download_button.label == RESULTS:
                    delivered = time.perf_counter() - started
            finished = time.perf_counter() - started
    rows = [
        {
            column: ("" if value != value else repr(value / 100)) if column.endswith(" probability") else value
            for column, value in row.items()
        }
        for row in table.to_dict("records")
    ]  # the page shows percent; NaN (not assessed) becomes the CSV's empty cell
    return Outcome(subject, uploaded_at, first, delivered, None, finished, rows)


def compare(rows: list[dict], expected: dict[tuple[str, str], float]) -> tuple[int, int, list[str], float]:
    """(values checked, not assessed, mismatches described, largest difference) over the CSVs' rows."""
    checked, not_assessed, wrong, largest = 0, 0, [], 0.0
    for row in rows:
        for column, value in row.items():
            if not column.endswith(" probability"):
                continue
            model = column.removesuffix(" probability")
            if not value:  # the gate did not assess this image, so the app shows no probability
                not_assessed += 1
                continue
            difference = abs(float(value) - expected[row["File"], model])
            checked, largest = checked + 1, max(largest, difference)
            if difference > TOLERANCE:
                wrong.append(f"{row['File']} {model}: app {value}, command line {expected[row['File'], model]!r}")
    return checked, not_assessed, wrong, largest


def server_read_seconds(outcome: Outcome, events: list[dict]) -> float:
    """Seconds from the session's upload to its last reading recorded on the server: the server's
    share of the wait, without the browsers' rendering (twenty Chromium pages share these cores)."""
    readings = [
        datetime.fromisoformat(event["time"]).timestamp()
        for event in events
        if event["action"] == audit.Action.READING.value and event["user"]["subject"] == outcome.subject
    ]
    return max(readings) - outcome.uploaded_at


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_cpu_seconds() -> float:
    """CPU time every process on this machine has used so far, from /proc/stat."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, Path("/proc/stat").read_text().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def median_p95(seconds: list[float]) -> tuple[float, float]:
    ordered = sorted(seconds)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def models_in(rows: list[dict]) -> set[str]:
    return {column.removesuffix(" probability") for row in rows for column in row if column.endswith(" probability")}


async def run(args: argparse.Namespace) -> None:
    from playwright.async_api import async_playwright

    subjects = [f"clinician-{index:02d}" for index in range(args.sessions)]
    paths = pick_images(args.images, args.sessions * args.images_per_session + 1)
    warm_up_image = paths.pop()
    batches = {
        subject: paths[i * args.images_per_session : (i + 1) * args.images_per_session]
        for i, subject in enumerate(subjects)
    }
    timeout_ms = args.timeout * 1000 // 3
    in_pages = set(subjects[: args.sessions if args.browsers is None else args.browsers])
    with tempfile.TemporaryDirectory() as scratch:
        folder, port = Path(scratch), free_port()
        users = {subject: {"email": f"{subject}@clinic.example", "name": subject} for subject in [*subjects, WARM_UP]}
        with (
            identity_provider_process(users) as issuer,
            app_server(
                port, {audit.AUDIT_DIR_ENV: str(folder / "audit")}, sign_in_secrets(folder, port, issuer)
            ) as server,
        ):
            url = f"http://127.0.0.1:{port}"
            async with async_playwright() as playwright:
                browser = await playwright.chromium.launch(
                    executable_path=yielding_chromium(folder) if args.browsers_yield else CHROMIUM,
                    args=["--no-sandbox", "--disable-gpu"],
                )
                if args.warm:
                    await browser_session(browser, url, WARM_UP, [warm_up_image], timeout_ms, StartLine(1))
                start_line = StartLine(args.sessions)
                started, server_cpu, all_cpu = time.perf_counter(), cpu_seconds(server.pid), machine_cpu_seconds()
                outcomes = await asyncio.gather(
                    *(
                        (browser_session if subject in in_pages else protocol_session)(
                            browser, url, subject, batches[subject], timeout_ms, start_line
                        )
                        for subject in subjects
                    ),
                    return_exceptions=True,
                )
                wall, server_cpu = time.perf_counter() - started, cpu_seconds(server.pid) - server_cpu
                all_cpu = machine_cpu_seconds() - all_cpu
                await browser.close()
            _, peak = memory_mib(server.pid)
            trail = [event for event in audit.read_events(folder / "audit") if event["user"]["subject"] != WARM_UP]
    events = Counter(event["action"] for event in trail)
    failures = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
    finished = [outcome for outcome in outcomes if not isinstance(outcome, BaseException)]
    models = sorted(set().union(*(models_in(outcome.rows) for outcome in finished)))
    print(
        f"{args.sessions} signed-in sessions x {args.images_per_session} images uploaded at once to a "
        f"{'warm' if args.warm else 'cold'} server"
        f"{', browsers at the lowest CPU priority' if args.browsers_yield else ''}; {len(in_pages)} in Chromium "
        f"pages, {args.sessions - len(in_pages)} over Streamlit's protocol; in {wall:.1f} s; "
        f"failed sessions {len(failures)}"
    )
    for failure in failures:
        print(f"  failure: {type(failure).__name__}: {str(failure)[:1000]}")
    if finished:
        expected = expected_probabilities(paths, models)
        checked, not_assessed, wrong, largest = compare([row for o in finished for row in o.rows], expected)
        print(
            f"probabilities checked against the command line ({', '.join(models)}): {checked}, not assessed by "
            f"the gate {not_assessed}, different {len(wrong)} (largest difference {largest:.2e})"
        )
        for line in wrong[:10]:
            print(f"  {line}")
        for label, seconds in (
            ("all readings recorded on the server", [server_read_seconds(o, trail) for o in finished]),
            ("first results delivered to the client (websocket frame)", [o.first for o in finished]),
            ("results delivered to the client (websocket frame)", [o.delivered for o in finished]),
            ("all probabilities shown on a page", [o.shown for o in finished if o.shown is not None]),
            ("run finished (its map sent; drawn on the pages)", [o.finished for o in finished]),
        ):
            if not seconds:
                continue
            median, p95 = median_p95(seconds)
            print(f"upload -> {label}: median {median:.1f} s, p95 {p95:.1f} s")
    print(
        f"CPU time in the {wall:.0f} s run on {os.cpu_count()} cores: server {server_cpu:.0f} s, everything else "
        f"(the browsers, this script's clients and Playwright, the identity provider) {all_cpu - server_cpu:.0f} s, "
        f"idle {wall * os.cpu_count() - all_cpu:.0f} s"
    )
    print(f"server peak resident memory {peak:.0f} MiB")
    recorded = events[audit.Action.RESULTS_DOWNLOAD.value]
    made = sum(outcome.subject in in_pages for outcome in finished)
    print(f"audit events: {dict(events)}; downloads recorded {recorded} of {made} made (by the Chromium pages)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--images-per-session", type=int, default=3)
    parser.add_argument("--images", type=Path, default=IMAGES, help="folder of real dermoscopic JPEGs")
    parser.add_argument("--warm", action="store_true", help="one untimed session reads an image first")
    parser.add_argument(
        "--browsers",
        type=int,
        help="how many sessions run in Chromium pages (default: all); the others read over Streamlit's protocol",
    )
    parser.add_argument(
        "--browsers-yield", action="store_true", help="run the browsers at nice 19: the server's cores serve it first"
    )
    parser.add_argument(
        "--timeout", type=int, default=900, help="seconds for the whole run; each wait gets a third of it"
    )
    args = parser.parse_args()
    if args.browsers is not None and not 0 <= args.browsers <= args.sessions:
        parser.error(f"--browsers must be from 0 to --sessions ({args.sessions}); received {args.browsers}")
    asyncio.run(asyncio.wait_for(run(args), timeout=args.timeout))


if __name__ == "__main__":
    main()
