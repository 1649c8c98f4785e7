import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SHARED_DATA = Path(os.environ.get("MELANOMA_SHARED_DATA", ROOT.parent / "shared" / "data" / "ham10000"))

from tests.synthetic import make_dataset  # noqa: E402


@pytest.fixture(scope="session")
def trained_models(tmp_path_factory):
    """All three architectures trained once on a separable synthetic set, shared by the tests.

    Training takes minutes on two cores. For local iteration, MELANOMA_TEST_CACHE=DIR keeps the
    data and models in DIR and reuses them while all three are complete; CI leaves it unset.
    """
    from melanoma.architectures import architecture_names
    from train.run import main

    cache = os.environ.get("MELANOMA_TEST_CACHE")
    root = Path(cache) if cache else tmp_path_factory.mktemp("fixture")
    data_dir, output_dir = root / "data", root / "models"
    if all((output_dir / name / "metrics.json").is_file() for name in architecture_names()):
        return data_dir, output_dir
    make_dataset(data_dir, "generic", n=120)
    code = main(["--data-dir", str(data_dir), "--output-dir", str(output_dir), "--weights", "none",
                 "--epochs", "3", "--image-size", "75", "--batch-size", "16", "--epoch-images", "480",
                 "--learning-rates", "0.003,0.001,0.0003", "--seed", "1"])
    assert code == 0
    return data_dir, output_dir
