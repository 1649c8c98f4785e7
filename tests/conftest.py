import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from filelock import FileLock

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SHARED_DATA = Path(os.environ.get("MELANOMA_SHARED_DATA", ROOT.parent / "shared" / "data" / "ham10000"))

from tests.synthetic import make_dataset, make_diagnosis_dataset  # noqa: E402

DIAGNOSIS_MODEL = "efficientnet_lite0_diagnosis"  # the fixture's diagnosis model, trained on make_diagnosis_dataset


@pytest.fixture(scope="session")
def trained_models(tmp_path_factory):
    """The default models trained once on a separable synthetic set, shared by the tests, with the
    shipped recipes: the study's three from random initialisation (`cpu`), EfficientNet-Lite0 from
    its ImageNet checkpoint (`cpu_transfer`).

    Two flags beyond what ships: --deterministic, so every run trains the same weights, and
    --label-smoothing, so that scratch_cnn and Lite0 cannot round a probability to exactly 0 or 1
    on these easy images (no patch could then move it, and every occlusion map would be zero).

    Training takes minutes on two cores. For local iteration, MELANOMA_TEST_CACHE=DIR keeps the
    data and models in DIR and reuses them while all are complete; CI leaves it unset. The test
    workers (pytest-xdist) share one folder: the first trains under a file lock, the others wait
    for it and reuse what it wrote, or report its failure.
    """
    cache = os.environ.get("MELANOMA_TEST_CACHE")
    root = Path(cache) if cache else shared_by_the_workers(tmp_path_factory) / "fixture"
    root.mkdir(parents=True, exist_ok=True)
    # Named after this test run, so that a cached folder's record of an earlier run's failure is ignored.
    failed = root / f"failed-{os.environ.get('PYTEST_XDIST_TESTRUNUID', os.getpid())}.txt"
    with FileLock(root / ".lock"):
        # A worker that finds the first one's training failed reports that failure instead of
        # spending minutes to fail the same way again.
        if failed.is_file():
            pytest.fail(f"the fixture's training failed in another test worker:\n{failed.read_text()}")
        try:
            return train_or_reuse(root)
        except Exception as error:
            failed.write_text(f"{type(error).__name__}: {error}"[-3000:])
            raise


def train_or_reuse(root: Path) -> tuple[Path, Path]:
    from melanoma.combined import COMBINED_FILE
    from melanoma.config import DEFAULT_MODELS, STUDY_MODELS
    from melanoma.ood import ensure_imagenet_features
    from train.combine import main as combine
    from train.run import main

    data_dir, output_dir = root / "data", root / "models"
    if (
        all((output_dir / name / "metrics.json").is_file() for name in (*DEFAULT_MODELS, DIAGNOSIS_MODEL))
        and (output_dir / COMBINED_FILE).is_file()
    ):
        return data_dir, output_dir
    make_dataset(data_dir, "generic", n=120)
    make_diagnosis_dataset(root / "diagnosis_data")
    ensure_imagenet_features(output_dir)  # the gates' shared extractor, written before two processes need it
    common = [
        "--data-dir",
        str(data_dir),
        "--output-dir",
        str(output_dir),
        "--epochs",
        "3",
        "--image-size",
        "75",
        "--batch-size",
        "16",
        "--epoch-images",
        "480",
        "--seed",
        "1",
        "--deterministic",
        "--label-smoothing",
        "0.1",
    ]
    # The recipes the shipped models were trained with: colour constancy, scale augmentation and
    # flip test-time augmentation run here as they do in what ships. Lite0 from ImageNet, then a
    # Lite0 diagnosis model on its own seven-class set (so its split differs, and train.combine
    # must leave it out of the combined reading with that reason), train in a child process while
    # this one trains the study's three: each spends much of its time tracing graphs on one core.
    transfer = ["--weights", "imagenet", "--recipe", "cpu_transfer", "--models", "efficientnet_lite0"]
    diagnosis = ["--data-dir", str(root / "diagnosis_data"), "--name", DIAGNOSIS_MODEL, "--target", "diagnosis"]
    child = train_in_a_child_process([[*common, *transfer], [*common[2:], *transfer, *diagnosis]], root / "child.log")
    study = ["--models", ",".join(STUDY_MODELS), "--weights", "none", "--recipe", "cpu"]
    wait_for_the_apps_warm_up()
    assert main([*common, *study, "--learning-rates", "0.003,0.001,0.0003"]) == 0
    assert child.wait() == 0, (root / "child.log").read_text()[-3000:]
    assert combine(["--data-dir", str(data_dir), "--models-dir", str(output_dir)]) == 0
    return data_dir, output_dir


def shared_by_the_workers(tmp_path_factory) -> Path:
    """This run's temporary folder that every pytest-xdist worker sees (each has its own below it)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def train_in_a_child_process(runs: list[list[str]], log: Path) -> subprocess.Popen:
    """`train.run` with each argument list in turn, in one child process writing to `log`; its exit
    status is the first failing run's (the rest are skipped)."""
    code = (
        "import json, sys\n"
        "from train.run import main\n"
        "sys.exit(next((code for code in map(main, json.loads(sys.argv[1])) if code), 0))"
    )
    with open(log, "w") as output:
        return subprocess.Popen(
            [sys.executable, "-c", code, json.dumps(runs)], cwd=ROOT, stdout=output, stderr=subprocess.STDOUT
        )


def wait_for_the_apps_warm_up() -> None:
    """Let the app's warm-up (`ui.prepare_in_background`, started by any earlier AppTest) finish.

    It loads the shipped models, and every layer Keras builds draws its seed from Python's global
    random numbers: beside it, --deterministic training drew different seeds from run to run
    (measured: scratch_cnn's first epoch changed from run to run after test_access.py; the
    fixture's InceptionV3 scored test AUC 0.5 in one fresh clone and passed in the next).
    """
    from ui import WARM_UP_THREAD

    for thread in threading.enumerate():
        if thread.name == WARM_UP_THREAD:
            thread.join(600)
            assert not thread.is_alive(), "the app's warm-up still runs after 10 minutes: is a reading left pending?"


@pytest.fixture(autouse=True)
def audit_trail_in_a_temporary_folder(tmp_path_factory, monkeypatch):
    """The pages record every reading; tests keep those events out of the user's own trail."""
    from melanoma.audit import AUDIT_DIR_ENV

    monkeypatch.setenv(AUDIT_DIR_ENV, str(tmp_path_factory.mktemp("audit")))


@pytest.fixture
def downloads(monkeypatch):
    """What the page's download buttons hold, caught where Streamlit stores it in memory:
    downloads[button] is (data, mimetype, file name) for an AppTest download button. Data built on
    request (a callable, `ui.recorded`) is built here, as a browser's click has the server do."""
    from streamlit.runtime.media_file_manager import MediaFileManager
    from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage

    stored, deferred = {}, {}
    keep, defer = MemoryMediaFileStorage.load_and_get_id, MediaFileManager.add_deferred

    def spy(self, path_or_data, mimetype, kind, filename=None):
        file_id = keep(self, path_or_data, mimetype, kind, filename)
        stored[file_id] = (path_or_data, mimetype, filename)
        return file_id

    def spy_deferred(self, data_callable, mimetype, coordinates, file_name=None, **options):
        file_id = defer(self, data_callable, mimetype, coordinates, file_name, **options)
        deferred[file_id] = (data_callable, mimetype, file_name)
        return file_id

    monkeypatch.setattr(MemoryMediaFileStorage, "load_and_get_id", spy)
    monkeypatch.setattr(MediaFileManager, "add_deferred", spy_deferred)

    class Downloads:
        def __getitem__(self, button):
            if button.proto.deferred_file_id:
                build, mimetype, filename = deferred[button.proto.deferred_file_id]
                return build(), mimetype, filename
            return stored[button.proto.url.rsplit("/", 1)[-1].split(".")[0]]

    return Downloads()
