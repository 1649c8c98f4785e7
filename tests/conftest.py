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
    """All three architectures trained once on a separable synthetic set, shared by the tests."""
    from train.run import main

    data_dir = make_dataset(tmp_path_factory.mktemp("data"), "generic", n=120)
    output_dir = tmp_path_factory.mktemp("models")
    code = main(["--data-dir", str(data_dir), "--output-dir", str(output_dir), "--weights", "none",
                 "--epochs", "3", "--image-size", "75", "--batch-size", "16", "--epoch-images", "480",
                 "--learning-rates", "0.003,0.001,0.0003", "--seed", "1"])
    assert code == 0
    return data_dir, output_dir
