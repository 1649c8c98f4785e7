"""The running app under load: cold start, a further image, and N concurrent browser sessions.

    .venv/bin/python benchmarks/app_load.py [--sessions 1,4,8] [--images-per-session 2]

Starts `streamlit run app.py` on 127.0.0.1 (never another address) on the installed models and
drives it with Debian's Chromium through Playwright. Reports: seconds from opening the page on a
cold server to the uploader, to the first probability and to its maps; the same for a further
image in the same session; for each
N, per-image latency (median, p95) with N sessions at once, whether every session showed the
library's own probability for its image, and the server's resident memory (peak, and after
each round, to show whether it grows per session). Bounded: each wait times out.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from tests.synthetic import lesion_image  # noqa: E402
from tests.test_browser_signin import CHROMIUM, app_server, free_port  # noqa: E402

TIMEOUT_MS = 180_000


def memory_mib(pid: int) -> tuple[float, float]:
    """(current, peak) resident memory of a process, from /proc."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def write_images(folder: Path, count: int) -> list[Path]:
    paths = []
    for index in range(count):
        path = folder / f"case_{index:03d}.jpg"
        lesion_image(index % 2 == 0, np.random.default_rng(index), size=(200, 150)).save(path, quality=92)
        paths.append(path)
    return paths


async def score_in_page(page, path: Path, expected: str) -> tuple[float, str, float]:
    """Upload one image in an open page.

    Returns the seconds until its probability shows, the value shown, and the seconds until the
    page has finished (the explanation maps drawn). The probability counts as shown when the
    detail metric reads the library's value; a wrong value is reported as such after the page
    finishes.
    """
    started = time.perf_counter()
    await page.locator("input[type=file]").set_input_files(str(path))
    await page.get_by_text(f"Detail: {path.name}").wait_for(timeout=TIMEOUT_MS)
    metric = page.locator('[data-testid="stMetricValue"]').first
    try:
        await page.wait_for_function(
            "expected => [...document.querySelectorAll('[data-testid=stMetricValue]')]"
            ".some(e => e.innerText.trim() === expected)",
            arg=expected,
            timeout=TIMEOUT_MS,
        )
    except Exception:  # noqa: BLE001  reported below as a wrong value, not raised
        pass
    shown_after = time.perf_counter() - started
    # The metric is written mid-run, so the script is still running here; wait for it to end.
    await page.locator('[data-testid="stApp"][data-test-script-state="notRunning"]').wait_for(timeout=TIMEOUT_MS)
    return shown_after, await metric.inner_text(), time.perf_counter() - started


async def session(browser, url: str, paths: list[Path], expected: dict[str, str]) -> list[tuple[Path, float, str]]:
    context = await browser.new_context()
    page = await context.new_page()
    await page.goto(url, timeout=TIMEOUT_MS)
    results = []
    for path in paths:
        seconds, shown, _ = await score_in_page(page, path, expected[path.name])
        results.append((path, seconds, shown))
    await context.close()
    return results


async def run(args) -> None:
    from playwright.async_api import async_playwright

    from melanoma.images import read_image
    from melanoma.inference import load_predictor
    from melanoma.store import best_first, list_models

    model = best_first([entry for entry in list_models() if entry.available])[0].name  # the app's default
    predictor = load_predictor(model)
    rounds = [int(n) for n in args.sessions.split(",")]
    with tempfile.TemporaryDirectory() as scratch:
        paths = write_images(Path(scratch), 2 + sum(rounds) * args.images_per_session)
        expected = {p.name: f"{predictor.probabilities([read_image(str(p)).pixels])[0]:.1%}" for p in paths}
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        with app_server(port, {}) as server:
            async with async_playwright() as playwright:
                browser = await playwright.chromium.launch(
                    executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
                )
                page = await browser.new_page()
                opened = time.perf_counter()
                await page.goto(url, timeout=TIMEOUT_MS)
                await page.locator("input[type=file]").wait_for(state="attached", timeout=TIMEOUT_MS)
                uploader = time.perf_counter() - opened
                first, first_shown, first_done = await score_in_page(page, paths[0], expected[paths[0].name])
                cold = uploader + first
                further, further_shown, further_done = await score_in_page(page, paths[1], expected[paths[1].name])
                print(
                    f"model {model}: cold server, page opened to uploader {uploader:.1f} s, "
                    f"to first probability {cold:.1f} s (shown {first_shown}, library {expected[paths[0].name]}), "
                    f"to its maps {uploader + first_done:.1f} s"
                )
                print(
                    f"a further image in the same session: probability {further:.2f} s (shown {further_shown}, "
                    f"library {expected[paths[1].name]}), maps {further_done:.2f} s"
                )
                await page.close()
                cursor = 2
                for n in rounds:
                    batches = [
                        paths[cursor + i * args.images_per_session : cursor + (i + 1) * args.images_per_session]
                        for i in range(n)
                    ]
                    cursor += n * args.images_per_session
                    started = time.perf_counter()
                    outcomes = await asyncio.gather(
                        *(session(browser, url, batch, expected) for batch in batches), return_exceptions=True
                    )
                    wall = time.perf_counter() - started
                    failures = [o for o in outcomes if isinstance(o, BaseException)]
                    results = [r for o in outcomes if not isinstance(o, BaseException) for r in o]
                    wrong = [(p.name, shown, expected[p.name]) for p, _, shown in results if shown != expected[p.name]]
                    latencies = sorted(seconds for _, seconds, _ in results)
                    p95 = (
                        latencies[min(len(latencies) - 1, int(round(0.95 * (len(latencies) - 1))))]
                        if latencies
                        else float("nan")
                    )
                    current, peak = memory_mib(server.pid)
                    print(
                        f"{n} sessions: {len(results)} images in {wall:.1f} s; "
                        f"latency median {statistics.median(latencies):.2f} s, "
                        f"p95 {p95:.2f} s; failed sessions {len(failures)}, wrong values {len(wrong)}; "
                        f"server memory now {current:.0f} MiB, peak {peak:.0f} MiB"
                    )
                    for failure in failures:
                        print(f"  failure: {type(failure).__name__}: {str(failure)[:200]}")
                await browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", default="1,4,8")
    parser.add_argument("--images-per-session", type=int, default=2)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
