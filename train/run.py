"""Train the melanoma classifiers end to end: `python -m train.run --data-dir DIR`.

The story, in order: resolve the configuration; read and check the data; split it by lesion;
decode every image once; then for each model build it, train it through the recipe's phases
(keeping the best validation AUC), choose the operating threshold on validation, evaluate on the
test split, and write model.keras, card.json, history.csv and metrics.json beside each other, in a
staging folder that replaces the model's folder only once all are written (`train.staging`).
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import shlex
import sys
import time
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path

import numpy as np
import pandas as pd

from melanoma import diagnoses
from melanoma.card import RANDOM_INITIALISATION, ModelCard, Network, Training
from melanoma.config import RECIPES, TrainConfig, option_flag
from melanoma.data import (
    SPLIT_FILE,
    DataError,
    LabelledImages,
    diagnoses_problem,
    load_labelled_images,
    load_pixels,
    split_counts,
    split_grouped_stratified,
    split_holding_out_source,
    split_images,
    subsample,
)
from melanoma.files import atomic_write, sha256_of, write_json
from melanoma.framework import add_framework_logs_option
from melanoma.models.architectures import UnknownModelError, WeightsUnavailableError, create_model, get_architecture
from melanoma.models.saved import load_network
from melanoma.store import HISTORY_FILE, HOLDOUT_PREFIX, METRICS_FILE, MODEL_FILE
from train.balance import Balance, balance
from train.callbacks import BEST_WEIGHTS, CHECKPOINT_DIR, LAST_MODEL
from train.staging import install, resumable, start_staging
from train.targets import learning_targets, loss_and_metrics, output_count


def build_parser() -> argparse.ArgumentParser:
    """The command line, generated from TrainConfig's fields: one default and one help text each."""
    parser = argparse.ArgumentParser(prog="python -m train.run", description=__doc__.splitlines()[0])
    for config_field in fields(TrainConfig):
        settings = dict(config_field.metadata.get("option", {}))
        if not settings:
            continue
        flag = option_flag(config_field.name)
        settings.pop("flag", None)
        if config_field.default is False:
            settings["action"] = "store_true"
        elif config_field.default is not MISSING:
            settings["default"] = config_field.default
        parser.add_argument(flag, dest=config_field.name, **settings)
    add_framework_logs_option(parser)  # read by the train package, which imports TensorFlow before this runs
    return parser


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    parser = build_parser()
    args = parser.parse_args(argv)
    for name in args.models:
        try:
            architecture = get_architecture(name)
        except UnknownModelError as error:
            parser.error(str(error))  # lists the valid names
        if args.image_size and args.image_size < architecture.min_size:
            parser.error(f"{name} needs --image-size of at least {architecture.min_size}; got {args.image_size}.")
    phases = len(RECIPES[args.recipe].phase_fractions)
    if args.learning_rates is not None and len(args.learning_rates) != phases:
        parser.error(
            f"--learning-rates needs one rate per phase of the {args.recipe} recipe ({phases}); "
            f"got {len(args.learning_rates)}: {','.join(map(str, args.learning_rates))}."
        )
    if args.name and len(args.models) != 1:
        parser.error(
            f"--name names one model, but --models lists {len(args.models)}: {','.join(args.models)}. "
            "Train them one at a time."
        )
    if args.name and (args.name != Path(args.name).name or args.name.startswith(".")):
        parser.error(f"--name is a folder name under --output-dir, without a path; got {args.name!r}.")
    if not 0 <= args.ema_momentum < 1:
        parser.error(f"--ema-momentum takes a number from 0 (off) up to (not including) 1; got {args.ema_momentum}.")
    if not 0 < args.colour_jitter <= 10:
        parser.error(
            f"--colour-jitter takes a factor above 0 and at most 10 (1: the recipe's ranges); got {args.colour_jitter}."
        )
    if not 0 <= args.label_smoothing < 0.5:
        parser.error(f"--label-smoothing takes a number from 0 up to (not including) 0.5; got {args.label_smoothing}.")
    if args.emphasis and args.target != "diagnosis":
        parser.error(
            f"--emphasis names diagnoses, so it needs --target diagnosis; got --target {args.target}. "
            "Add --target diagnosis, or leave --emphasis out."
        )
    split = args.split_fractions
    if len(split) != 3 or min(split) < 0 or abs(sum(split) - 1) > 1e-6:
        parser.error(f"--split takes three non-negative fractions train,val,test that sum to 1; got {split}.")
    values = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if f.metadata.get("option")}
    command = "python -m train.run " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    return TrainConfig(**values, command=command).resolved()


def prepare_split(data: LabelledImages, config: TrainConfig, folder: Path) -> pd.DataFrame:
    """The split for this model: reused from split.csv on resume, else computed and written."""
    path = folder / SPLIT_FILE
    if config.resume and path.is_file():
        table = split_images(data, folder, ("train", "val", "test"))  # every image it names must be in the data
        print(f"Reusing the split in {path}")
        return table
    table = subsample(data.table, config.max_images, config.split_seed)
    if config.holdout_source:
        try:
            split = split_holding_out_source(table, config.holdout_source, config.split_fractions, config.split_seed)
        except ValueError as error:
            raise DataError([str(error)]) from None
    else:
        split = split_grouped_stratified(table, config.split_fractions, config.split_seed)
    table = table.assign(split=split)
    if empty := [part for part in ("train", "val", "test") if not (table.split == part).any()]:
        raise DataError(
            [
                f"the split leaves {' and '.join(empty)} without images: {len(table)} images split "
                f"{','.join(f'{f:g}' for f in config.split_fractions)} by group and class ({split_counts(table)}). "
                "Train on more images, or give each part a share with --split."
            ]
        )
    one_class = [part for part in ("val", "test") if table.label[table.split == part].nunique() < 2]
    if one_class:  # calibration needs both on validation, the metrics on test: found only after training
        advice = (
            f"Hold out a source that has both instead of {config.holdout_source!r}"
            if config.holdout_source
            else "Train on more images, or give that part a larger share with --split"
        )
        raise DataError(
            [
                f"the split leaves {' and '.join(one_class)} without melanomas or without other lesions "
                f"({split_counts(table)}): calibration needs both on validation, and the metrics on test. {advice}."
            ]
        )
    atomic_write(path, lambda p: table[["image_id", "group", "label", "dx", "source", "split"]].to_csv(p, index=False))
    return table[table.split != "excluded"]


MULTI_WORKER_UNSUPPORTED = (
    "TF_CONFIG is set, which asks for training on several machines (MultiWorkerMirroredStrategy). Keras 3's "
    "model.fit fails under that strategy ('Attempt to convert a value (PerReplica ...)'; open upstream as "
    "keras-team/keras#20585, and reproduced here with two local workers). Unset TF_CONFIG to train on this "
    "machine, which uses all of its GPUs through MirroredStrategy."
)


def configure_tensorflow(config: TrainConfig):
    """Seeds, op determinism, mixed precision and the distribution strategy (all GPUs of this machine)."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    if config.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    return distribution_strategy()


def distribution_strategy():
    """Every GPU of this machine through MirroredStrategy when it has several; else the default."""
    import tensorflow as tf

    if len(tf.config.list_physical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def library_versions() -> dict:
    import keras
    import PIL
    import sklearn
    import tensorflow as tf

    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
        "pillow": PIL.__version__,
    }


def machine_description() -> str:
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    accelerator = f"{len(gpus)} GPU(s)" if gpus else "no GPU"
    return f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPU cores, {accelerator}"


def export_for_serving(model, path: Path):
    """Save an uncompiled copy of `model` (Keras' clone_model would keep the optimizer's moments,
    tripling the file); returns the copy."""
    import keras

    serving = keras.Model.from_config(model.get_config())
    serving.set_weights(model.get_weights())
    atomic_write(path, serving.save)
    return serving


@dataclass
class SplitData:
    """One model's split: the table, and per split name the decoded pixels, the melanoma labels
    and the targets the network learns (the labels, or one-hot diagnoses for a diagnosis model)."""

    table: pd.DataFrame
    pixels: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    targets: dict[str, np.ndarray]

    def balance(self, method: str, emphasis: tuple[tuple[str, float], ...] = ()) -> Balance:
        """The class weights and draw probabilities over the training split (`train.balance`),
        with the emphasised diagnoses' shares raised (a diagnosis model's only)."""
        targets = self.targets["train"]
        if targets.ndim == 2:
            factors = {diagnoses.index_of(code): factor for code, factor in emphasis}
            return balance(targets.argmax(axis=1), targets.shape[1], method, factors)
        if emphasis:
            raise ValueError(f"emphasis names diagnoses, so it needs a diagnosis model's targets; got {emphasis}.")
        return balance(targets.astype(int), 2, method)


@dataclass
class Progress:
    """Where training stands: epochs completed, the best validation AUC, the per-epoch history."""

    epochs_done: int = 0
    best_val_auc: float = float("-inf")
    history: list[dict] = field(default_factory=list)


def train_one(name: str, config: TrainConfig, data: LabelledImages, pixel_cache: dict, strategy) -> dict:
    """Train, calibrate, choose the threshold, evaluate and write every artefact for one model."""
    from melanoma.inference import predict_pixels
    from train.calibrate import calibrate_outputs, fit_gate
    from train.outputs import record_trained_outputs

    weights = initial_weights(name, config)
    installed = model_folder(config, name)
    folder = start_staging(installed, config.resume)  # the installed model stays whole until this run is

    split = load_split(name, config, data, pixel_cache, folder)
    model, progress = start_or_resume(name, config, weights, folder, strategy)
    started = time.monotonic()
    previous_seconds = float(sum(row.get("seconds", 0) for row in progress.history))
    balancing = class_balance(name, config, split)
    train_phases(model, name, config, weights, split, balancing, folder, progress, strategy)
    training_seconds = previous_seconds + time.monotonic() - started

    # The shipped model: best validation AUC weights, without optimizer state.
    model.load_weights(folder / CHECKPOINT_DIR / BEST_WEIGHTS)
    serving = export_for_serving(model, folder / MODEL_FILE)

    # Calibration, threshold and the out-of-distribution gate from training and validation
    # images; metrics on test: the test split chooses nothing.
    tta = config.recipe_object.test_time_augmentation
    raw = {s: predict_pixels(serving, split.pixels[s], config.batch_size, tta) for s in ("val", "test")}
    codes = {s: list(split.table.dx[split.table.split == s]) for s in raw}
    fitted = calibrate_outputs(
        {s: split.labels[s] for s in raw}, codes, raw, config.target_sensitivity, seed=config.seed
    )
    ood = fit_gate(
        list(split.table.path[split.table.split == "train"]),
        list(split.table.path[split.table.split == "val"]),
        folder,
        Path(config.output_dir),
        seed=config.seed,
    )
    metrics = fitted.metrics
    metrics["split"] = f"held-out source {config.holdout_source}" if config.holdout_source else "test"
    metrics["validation_roc_auc"] = float(progress.best_val_auc)
    write_json(folder / METRICS_FILE, metrics)
    ModelCard(
        name=config.folder_name(name),
        sha256=sha256_of(folder / MODEL_FILE),
        network=network_facts(name, config, weights, serving),
        serving=fitted.serving(config.image_size, tta, ood),
        operating=fitted.operating_points(config.target_sensitivity),
        training=training_record(
            config, weights, data, split, balancing, progress, training_seconds, strategy.num_replicas_in_sync
        ),
    ).save(folder)
    if config.holdout_source:  # its weights stay out of git; its outputs can be committed
        record_trained_outputs(folder, split.table, raw)
    install(folder, installed)
    print(f"[{name}] installed in {installed}")
    summary = {
        "model": config.folder_name(name),
        "epochs": progress.epochs_done,
        "minutes": training_seconds / 60,
        "val_auc": progress.best_val_auc,
        "test_auc": metrics["roc_auc"],
        "threshold": fitted.threshold,
        "sensitivity": metrics["at_threshold"]["sensitivity"],
        "specificity": metrics["at_threshold"]["specificity"],
    }
    if "diagnoses" in metrics:
        summary.update(
            balanced_multiclass_accuracy=metrics["diagnoses"]["balanced_multiclass_accuracy"],
            malignant_auc=metrics["diagnoses"]["malignant"]["roc_auc"],
        )
    return summary


def load_split(name: str, config: TrainConfig, data: LabelledImages, pixel_cache: dict, folder: Path) -> SplitData:
    """The split for this model, with pixels decoded once per image size for every model of the run."""
    table = prepare_split(data, config, folder)
    cache = pixel_cache.setdefault(config.image_size, {})
    missing = table[~table.image_id.isin(cache)]
    if len(missing):
        started = time.monotonic()
        cache.update(zip(missing.image_id, load_pixels(list(missing.path), config.image_size)))
        print(
            f"Decoded {len(missing)} images at {config.image_size}x{config.image_size} "
            f"in {time.monotonic() - started:.0f} s"
        )
    parts = {s: table[table.split == s] for s in ("train", "val", "test")}
    split = SplitData(
        table,
        {s: np.stack([cache[i] for i in part.image_id]) for s, part in parts.items()},
        {s: part.label.to_numpy() for s, part in parts.items()},
        {s: learning_targets(part, config.target) for s, part in parts.items()},
    )
    print(f"[{name}] split {split_counts(table, by_diagnosis=config.target == 'diagnosis')}")
    return split


def start_or_resume(name: str, config: TrainConfig, weights: str, folder: Path, strategy):
    """A fresh model, or the last checkpoint of an interrupted run with its history."""
    import keras

    from train.callbacks import damaged_checkpoint, read_state

    recipe = config.recipe_object
    state = read_state(folder) if config.resume else None
    with strategy.scope():
        if not state:
            # Seeded here, not once per run: Keras draws every new layer's seed from Python's global
            # random numbers, so the models before this one (and any model loaded meanwhile) would
            # otherwise decide its initial weights. A model trains alike alone or in a list.
            keras.utils.set_random_seed(config.seed)
            model = create_model(
                name,
                config.image_size,
                weights=weights,
                colour_constancy=recipe.colour_constancy,
                dropout=recipe.dropout,
                classes=output_count(config),
            )
            return model, Progress()
        try:
            model = load_network(folder / CHECKPOINT_DIR / LAST_MODEL)
        except Exception as error:  # Keras reports a damaged file in many ways, "File not found" among them
            what = f"{LAST_MODEL} cannot be loaded ({type(error).__name__})"
            raise DataError([damaged_checkpoint(folder, what)]) from error
    saved, asked = state.get("lineage", {}), config.lineage()
    if changed := [key for key, value in saved.items() if asked.get(key) != value]:
        raise DataError(
            [
                f"{folder / CHECKPOINT_DIR} continues a run trained with "
                + ", ".join(f"{option_flag(key)} {_as_option(saved[key])}" for key in changed)
                + ", and this run asks for "
                + ", ".join(f"{option_flag(key)} {_as_option(asked[key])}" for key in changed)
                + ". Resume with the checkpoint's options, or leave out --resume to train from scratch."
            ]
        )
    if (size := model.input_shape[1]) != config.image_size:
        raise DataError(
            [
                f"{folder / CHECKPOINT_DIR} was trained at {size} px, and this run asks for {config.image_size}. "
                f"Resume with --image-size {size}, or leave out --resume to train from scratch."
            ]
        )
    history = pd.read_csv(folder / HISTORY_FILE).to_dict("records")[: state["epochs_done"]]
    print(f"[{name}] resuming after epoch {state['epochs_done']} (best val AUC {state['best_val_auc']:.4f})")
    return model, Progress(state["epochs_done"], state["best_val_auc"], history)


def _as_option(value) -> str:
    """A lineage value as the command line writes it."""
    if value is None:
        return "(none)"
    if isinstance(value, list):
        return ",".join("=".join(map(str, v)) if isinstance(v, list) else str(v) for v in value)
    return str(value)


def class_balance(name: str, config: TrainConfig, split: SplitData) -> Balance:
    """The run's class weights and draw probabilities (`train.balance`), said once in the log."""
    balancing = split.balance(config.class_balance, config.emphasis)
    print(
        f"[{name}] class balance by {config.class_balance}"
        + "".join(f", {code} emphasised x{factor:g}" for code, factor in config.emphasis)
        + ": class weights "
        + ", ".join(f"{c} -> {w:.3f}" for c, w in balancing.class_weights.items())
    )
    return balancing


def train_phases(
    model,
    name: str,
    config: TrainConfig,
    weights: str,
    split: SplitData,
    balancing: Balance,
    folder: Path,
    progress: Progress,
    strategy,
) -> None:
    """The recipe's phases from where `progress` stands. Each phase starts a fresh optimizer at its
    learning rate; the model is compiled again only when its trainable layers change, since a
    compile retraces the training and validation graphs (half of InceptionV3's time on a small run).
    Updates `progress` after every phase."""
    import keras

    from melanoma.models.architectures import layers_with_trainable_weights, set_trainable
    from train.callbacks import EpochRecorder
    from train.pipeline import evaluation_batches, training_batches
    from train.schedule import plan_phases

    recipe = config.recipe_object
    images_per_epoch = config.epoch_images or len(split.labels["train"])
    val_ds = evaluation_batches(split.pixels["val"], split.targets["val"], config.batch_size)
    phases = plan_phases(
        get_architecture(name),
        config.epochs,
        recipe.phase_starts(config.epochs),
        config.learning_rates,
        pretrained=weights != "none",
    )
    compiled_for = None  # the (unfreeze_after, fine_tuning) of the last compile in this run
    for phase in phases:
        if phase.end_epoch <= progress.epochs_done:
            continue
        first_epoch = max(phase.start_epoch, progress.epochs_done)
        with strategy.scope():
            if (phase.unfreeze_after, phase.fine_tuning) == compiled_for:
                restart_optimizer(model.optimizer, phase.learning_rate)
            else:
                trainable = set_trainable(model, phase.unfreeze_after, phase.fine_tuning)
                loss, metrics = loss_and_metrics(config)
                model.compile(
                    optimizer=keras.optimizers.Adam(
                        phase.learning_rate, use_ema=config.ema_momentum > 0, ema_momentum=config.ema_momentum
                    ),
                    loss=loss,
                    metrics=metrics,
                    jit_compile=config.xla,
                )
                compiled_for = (phase.unfreeze_after, phase.fine_tuning)
        print(
            f"[{name}] phase {phase.index}: epochs {phase.start_epoch + 1}-{phase.end_epoch}, "
            f"learning rate {phase.learning_rate:g}, {trainable} backbone layers unfrozen from the top, of which "
            f"{layers_with_trainable_weights(model)} have trainable weights"
        )
        # The stream starts at this phase's first epoch: what each epoch sees depends on the seed
        # and the epoch alone, not on how many fit calls or resumes came before.
        train_ds = training_batches(
            split.pixels["train"],
            split.targets["train"],
            config.batch_size,
            recipe,
            config.seed,
            first_epoch,
            images_per_epoch,
            balancing.draw_probabilities,
            config.colour_jitter,
        )
        recorder = EpochRecorder(
            folder,
            progress.history,
            progress.best_val_auc,
            phase.index,
            trainable,
            phase.learning_rate,
            config.lineage(),
        )
        model.fit(
            train_ds,
            validation_data=val_ds,
            epochs=phase.end_epoch,
            initial_epoch=first_epoch,
            steps_per_epoch=-(-images_per_epoch // config.batch_size),
            class_weight=balancing.class_weights,
            verbose=1 if sys.stdout.isatty() else 2,
            callbacks=[*averaging(config), recorder, keras.callbacks.TensorBoard(log_dir=str(folder / "logs"))],
        )
        progress.best_val_auc = recorder.best_val_auc
        progress.epochs_done = phase.end_epoch


def averaging(config: TrainConfig) -> list:
    """With --ema-momentum, the callback that puts the averaged weights in the model for every
    validation and at every epoch's end, so the recorder's best weights and checkpoint are the
    average; Keras leaves the average in the model when a phase ends. Without it, none."""
    import keras

    return [keras.callbacks.SwapEMAWeights(swap_on_epoch=True)] if config.ema_momentum > 0 else []


def restart_optimizer(optimizer, learning_rate: float) -> None:
    """Make a built optimizer what a new one at `learning_rate` would be: step count and moments zero
    (and a weight average, if any, restarts from the weights at its first step)."""
    import keras

    for variable in optimizer.variables:
        variable.assign(keras.ops.zeros_like(variable))
    optimizer.learning_rate = learning_rate


def network_facts(name: str, config: TrainConfig, weights: str, serving_model) -> Network:
    """What the card says of the network: its architecture and head, input, and where its weights started."""
    from melanoma.explain.occlusion import occlusion_path

    architecture = get_architecture(name)
    initialisation = {"imagenet": "ImageNet", "none": RANDOM_INITIALISATION}.get(weights, f"file {weights}")
    return Network(
        architecture_name=name,
        target=config.target,
        architecture=architecture.describe(output_count(config)),
        input="RGB pixels 0-255, whole image resized to a square with PIL's antialiased bilinear filter",
        preprocessing=architecture.preprocessing
        + ("; Shades-of-Gray colour constancy first" if config.recipe_object.colour_constancy else ""),
        weights_initialisation=initialisation,
        initial_weights=architecture.weights_provenance(weights),
        parameters=int(serving_model.count_params()),
        occlusion_maps=occlusion_path(melanoma_output(serving_model, config), config.image_size),
    )


def training_record(
    config: TrainConfig,
    weights: str,
    data: LabelledImages,
    split: SplitData,
    balancing: Balance,
    progress: Progress,
    training_seconds: float,
    replicas: int,
) -> Training:
    """Everything needed to repeat the run and judge it; `weights` are the model's own (`initial_weights`)."""
    from train.schedule import phases_run

    return Training(
        recipe=config.recipe_values,
        config=model_config(config, weights),
        phases=phases_run(progress.history),
        data={
            "source": config.data_dir,
            "layout": data.layout,
            "split_counts": split_counts(split.table),
            **(
                {"split_counts_by_diagnosis": split_counts(split.table, by_diagnosis=True)}
                if config.target == "diagnosis"
                else {}
            ),
            "split_file": SPLIT_FILE,
            "grouped_by": "lesion/group id (no group in two splits)",
        },
        class_weights={str(k): v for k, v in balancing.class_weights.items()},
        seed=config.seed,
        epochs_trained=progress.epochs_done,
        best_validation_auc=float(progress.best_val_auc),
        training_seconds=round(training_seconds, 1),
        machine=machine_description(),
        replicas=int(replicas),
        library_versions=library_versions(),
        command=config.command,
        trained_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )


def model_config(config: TrainConfig, weights: str) -> dict:
    """The run's configuration as one model ran it, for its card: --weights as that model used it
    (`initial_weights`), so that a study run's scratch_cnn does not read "imagenet" beside its random
    initialisation; the command keeps what was typed."""
    recorded = {key: value for key, value in config.to_dict().items() if key != "recipe_values"}
    return {**recorded, "weights": weights}


def melanoma_output(network, config: TrainConfig):
    """The network read as its melanoma probability, which the explanations take."""
    from melanoma.inference import class_output

    return class_output(network, (diagnoses.MELANOMA,), "melanoma") if config.target == "diagnosis" else network


def model_folder(config: TrainConfig, name: str) -> Path:
    """Where a run writes one model: a source-held-out run is a diagnostic beside the model, not the model."""
    folder = Path(config.output_dir) / config.folder_name(name)
    return folder / f"{HOLDOUT_PREFIX}{config.holdout_source}" if config.holdout_source else folder


def initial_weights(name: str, config: TrainConfig) -> str:
    """The weights a model starts from: --weights for a transfer architecture, random initialisation for
    one trained from scratch whatever --weights says (a study run trains scratch_cnn beside ImageNet ones)."""
    return config.weights if get_architecture(name).is_transfer else "none"


def missing_prerequisites(config: TrainConfig) -> list[str]:
    """What the run would fail on after it started, found before the first epoch: the ImageNet
    weights each model starts from (a packaged checkpoint, or Keras' file, which the next model's
    build would otherwise download after the first has trained), and the checkpoint the
    out-of-distribution gate's extractor is built from when the output folder has no extractor yet
    (a whole run must not be lost to a missing package)."""
    from melanoma.models import pretrained
    from melanoma.ood import FEATURES_FILE, FEATURES_VARIANT

    needed = [  # (what needs them, the check)
        (
            f"{name}'s initial weights",
            functools.partial(get_architecture(name).find_weights, initial_weights(name, config)),
        )
        for name in config.models
    ]
    if not (Path(config.output_dir) / FEATURES_FILE).is_file():
        needed.append(
            (
                f"the out-of-distribution gate's feature extractor ({FEATURES_FILE}, "
                f"built in {config.output_dir} after the first model trains)",
                functools.partial(pretrained.resolve, FEATURES_VARIANT, "imagenet"),
            )
        )
    problems = []
    if Path(config.output_dir).exists() and not Path(config.output_dir).is_dir():
        problems.append(f"--output-dir {config.output_dir} is a file; give a folder for the models.")
    for purpose, check in needed:
        try:
            check()
        except WeightsUnavailableError as error:
            problems.append(f"{purpose}: {error}")
    return problems


def new_extractor_note(config: TrainConfig) -> str | None:
    """What to do before installing a model trained where the gate's extractor does not exist yet: the run
    builds its own there and every gate it fits pins that file's sha256, which another models folder's
    extractor (the same weights, saved at another time) does not match."""
    from melanoma.ood import FEATURES_FILE

    if (Path(config.output_dir) / FEATURES_FILE).is_file():
        return None
    return (
        f"note: {config.output_dir} has no {FEATURES_FILE}, so this run builds one there and the models' gates pin it "
        "by sha256. To install a model trained here into another models folder, copy its folder there and refit its "
        "gate against that folder's extractor: python -m train.calibrate --models-dir DIR --models NAME --data-dir "
        f"{config.data_dir}"
    )


def models_without_checkpoint(config: TrainConfig) -> list[str]:
    """Models that --resume finds nothing to continue for, though a trained model is installed.

    Checkpoints stay out of git, so a fresh clone has the shipped weights but nothing to resume.
    """
    if not config.resume:
        return []
    folders = {name: model_folder(config, name) for name in config.models}
    return [name for name, folder in folders.items() if resumable(folder) is None and (folder / MODEL_FILE).is_file()]


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    if "TF_CONFIG" in os.environ:
        print(f"error: {MULTI_WORKER_UNSUPPORTED}", file=sys.stderr)
        return 2
    print(f"Recipe {config.recipe}: {config.recipe_object.notes}")
    try:
        data = load_labelled_images(config.data_dir, config.layout)
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"Data: {data.layout} layout in {data.root}, {data.counts}")
    if config.target == "diagnosis" and (problem := diagnoses_problem(data.table, "--target diagnosis needs")):
        print(
            f"error: {data.root}: {problem} Or train with --target melanoma, which needs only the melanoma label.",
            file=sys.stderr,
        )
        return 2
    try:
        unresumable = models_without_checkpoint(config)
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if unresumable:
        print(
            f"error: --resume found no checkpoint for {', '.join(unresumable)} in {config.output_dir}, but a trained "
            "model is there (model.keras), which training from scratch would replace once it finishes. Restore its "
            "checkpoint/ folder, choose another --output-dir, or leave out --resume to retrain from scratch.",
            file=sys.stderr,
        )
        return 2
    missing = missing_prerequisites(config)
    if missing:
        print(
            "error: this run would fail after training; nothing was trained:\n  " + "\n  ".join(missing),
            file=sys.stderr,
        )
        return 2
    note = new_extractor_note(config)
    if note:
        print(note)
    strategy = configure_tensorflow(config)
    pixel_cache: dict = {}
    try:
        summaries = [train_one(name, config, data, pixel_cache, strategy) for name in config.models]
    except (DataError, WeightsUnavailableError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print("\nSummary (test split; threshold chosen on validation)")
    print(pd.DataFrame(summaries).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
