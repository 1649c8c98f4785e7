"""Occlusion sensitivity and Grad-CAM mean exactly what they say."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers

from melanoma.config import DEFAULT_MODELS
from melanoma.explain import occlusion as explain
from melanoma.explain import per_model
from melanoma.explain.gradcam import grad_cam
from melanoma.explain.incremental import plan_occlusion
from melanoma.explain.occlusion import GREY, occlusion_sensitivity, progressive_occlusion
from melanoma.explain.render import MIN_SIGNED_SCALE, colourise, signed_scale
from tests.conftest import DIAGNOSIS_MODEL


@pytest.fixture(autouse=True)
def incremental_for_any_grid(monkeypatch):
    """The small grids here exercise the incremental path too (the app keeps it for 32 patches or more)."""
    monkeypatch.setattr(explain, "INCREMENTAL_FROM_PATCHES", 1)


def tiny_model(size: int = 60, seed: int = 0) -> keras.Model:
    """A small conv net whose output moves visibly when part of the image is greyed out."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((size, size, 3))
    x = layers.Rescaling(1 / 127.5, offset=-1)(inputs)
    x = layers.Conv2D(8, 5, strides=2, activation="relu")(x)
    x = layers.Conv2D(8, 3, activation="relu", name="features")(x)
    x = layers.GlobalMaxPooling2D()(x)
    return keras.Model(
        inputs, layers.Dense(1, activation="sigmoid", kernel_initializer=keras.initializers.RandomNormal(0, 2))(x)
    )


def random_image(size: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (size, size, 3)).astype(np.float32)


def reference_occlusion(model, image, patch):
    """The definition, one predict call per patch."""
    intact = float(model.predict(image[None], verbose=0)[0, 0])
    result = np.zeros(image.shape[:2], np.float32)
    for top in range(0, image.shape[0], patch):
        for left in range(0, image.shape[1], patch):
            occluded = image.copy()
            occluded[top : top + patch, left : left + patch] = GREY
            result[top : top + patch, left : left + patch] = intact - float(
                model.predict(occluded[None], verbose=0)[0, 0]
            )
    return result


def stem_model(size: int) -> keras.Model:
    """Every layer kind the incremental path recomputes, with odd sizes, 'same' and 'valid'
    padding and strides, before a branch that ends it."""
    keras.utils.set_random_seed(3)
    inputs = keras.Input((size, size, 3))
    x = layers.Rescaling(1 / 127.5, offset=-1)(inputs)
    x = layers.Conv2D(8, 3, strides=2, padding="same", bias_initializer=keras.initializers.Constant(-1.0))(x)
    x = layers.MaxPooling2D(3, strides=2, padding="same")(x)  # of mostly negative values: its padding matters
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    x = layers.ZeroPadding2D(((1, 0), (0, 1)))(x)
    x = layers.DepthwiseConv2D(3, padding="valid", activation="relu")(x)
    x = layers.AveragePooling2D(2, strides=1)(x)
    x = layers.Conv2D(8, 1, activation="relu")(x)
    branch_a = layers.BatchNormalization()(
        layers.Conv2D(8, 3, padding="same", use_bias=False)(x)
    )  # folded for many patches
    branch_b = layers.Conv2D(8, 1)(x)
    x = layers.GlobalAveragePooling2D()(layers.Concatenate()([branch_a, branch_b]))  # every position counts
    model = keras.Model(
        inputs, layers.Dense(1, activation="sigmoid", kernel_initializer=keras.initializers.RandomNormal(0, 2))(x)
    )
    rng = np.random.default_rng(3)  # statistics as after training, so the normalisation shifts and scales
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            gamma, beta, mean, variance = (weight.shape for weight in layer.get_weights())
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, gamma),
                    rng.normal(0, 0.5, beta),
                    rng.normal(0, 0.5, mean),
                    rng.uniform(0.5, 2, variance),
                ]
            )
    return model


@pytest.mark.parametrize("incremental", [True, False], ids=["incremental", "whole-image"])
@pytest.mark.parametrize("size, patch", [(60, 20), (50, 20), (48, 7), (77, 9), (60, 5)])
def test_matches_a_per_patch_reference_loop(size, patch, incremental):
    model, image = stem_model(size), random_image(size)
    corners = explain.patch_grid(size, size, patch)
    plan = plan_occlusion(model, size, size, corners, patch)
    assert (
        plan is not None and sum(step.geometry is not None for step in plan.steps) >= 2
    )  # the windows pass through several spatial layers
    ours = occlusion_sensitivity(model, image, patch_size=patch, incremental=incremental)
    folded = ("folded",) in per_model._per_model[model]  # many patches run on a copy with batch norms folded
    assert folded == (len(corners) >= explain.FOLD_FROM_PATCHES)
    reference = reference_occlusion(model, image, patch)
    assert ours.shape == (size, size)
    assert np.abs(reference).max() > 100 * 1e-6  # the output really changes under occlusion, far beyond the tolerance
    np.testing.assert_allclose(ours, reference, atol=1e-6)


def with_centred_head(inputs, features, size: int, seed: int) -> keras.Model:
    """A sigmoid head centred on random images' pooled features, far from saturation (and with weights of
    order one: a large kernel cancelling a large bias would turn rounding into map differences)."""
    model = keras.Model(inputs, layers.Dense(1, activation="sigmoid")(features))
    pooled = keras.Model(inputs, features).predict(
        np.stack([random_image(size, image_seed) for image_seed in range(8)]), verbose=0
    )
    kernel = np.random.default_rng(seed).normal(0, 1, (pooled.shape[1], 1))
    model.layers[-1].set_weights([kernel, -pooled.mean(axis=0) @ kernel])
    return model


def residual_model(size: int) -> keras.Model:
    """EfficientNet-Lite in miniature: inverted residual blocks (1×1 expansion, depthwise, 1×1
    projection, residual addition) at two strides, then a stage whose windows cover the map."""
    keras.utils.set_random_seed(4)
    inputs = keras.Input((size, size, 3))
    x = layers.Rescaling(1 / 128, offset=-127 / 128)(inputs)
    x = layers.ReLU(6.0)(layers.BatchNormalization()(layers.Conv2D(8, 3, strides=2, padding="same", use_bias=False)(x)))
    for stride, kernel in [(1, 3), (1, 5), (2, 3), (1, 3), (2, 5), (1, 5)]:
        skip = x
        x = layers.ReLU(6.0)(layers.Conv2D(24, 1, use_bias=False)(x))
        x = layers.ReLU(6.0)(
            layers.BatchNormalization()(
                layers.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=False)(x)
            )
        )
        x = layers.BatchNormalization()(layers.Conv2D(8, 1, use_bias=False)(x))
        if stride == 1:
            x = layers.Add()([x, skip])
    x = layers.GlobalMaxPooling2D()(x)  # the strongest local response: one patch can move it
    return with_centred_head(inputs, x, size, seed=4)


def assert_incremental_map_is_exact(model, image: np.ndarray, patch: int, stride: int | None) -> None:
    """The incremental map equals the whole-image one, and on tf-explain's grid the reference loop's."""
    ours = occlusion_sensitivity(model, image, patch_size=patch, stride=stride)
    whole_image = occlusion_sensitivity(model, image, patch_size=patch, stride=stride, incremental=False)
    assert np.abs(whole_image).max() > 100 * 1e-6  # far beyond the tolerance
    np.testing.assert_allclose(ours, whole_image, atol=1e-6)
    if stride is None:
        np.testing.assert_allclose(ours, reference_occlusion(model, image, patch), atol=1e-5)


@pytest.mark.parametrize("size, patch, stride", [(64, 8, None), (61, 7, None), (48, 8, 4)])
def test_windows_pass_through_residual_blocks_exactly(size, patch, stride):
    """The plan cuts after residual additions, and each window, pasted back, gives the reference map."""
    model, image = residual_model(size), random_image(size, seed=6)
    plan = plan_occlusion(model, size, size, explain.patch_grid(size, size, patch, stride), patch)
    assert plan is not None and sum(isinstance(step.layer, layers.Add) for step in plan.steps) >= 2
    assert_incremental_map_is_exact(model, image, patch, stride)


def test_a_map_leaves_the_next_plan_and_fold_as_on_a_fresh_model():
    """The incremental tail is a Keras model built from an inner tensor, and Keras calls every layer
    after that tensor again: a later, deeper plan and the folding must see the model's own graph."""
    from melanoma.explain.folding import foldable_pairs

    model, image = residual_model(64), random_image(64)
    deep = plan_occlusion(model, 64, 64, explain.patch_grid(64, 64, 8), 8)
    pairs = foldable_pairs(model)
    shallow = plan_occlusion(model, 64, 64, explain.patch_grid(64, 64, 24), 24)
    assert len(shallow.steps) < len(deep.steps)
    occlusion_sensitivity(model, image, patch_size=24)  # builds the tail after the shallow cut
    assert len(plan_occlusion(model, 64, 64, explain.patch_grid(64, 64, 8), 8).steps) == len(deep.steps)
    assert foldable_pairs(model) == pairs


def inception_model(size: int) -> keras.Model:
    """InceptionV3's first blocks in miniature: branches of 1×1, 5×5 and two 3×3 convolutions and of a
    'same' average pool (which divides by the pixels inside the map), joined by concatenation, then a
    reduction block of a stride-2 convolution beside a max pool."""
    keras.utils.set_random_seed(5)
    inputs = keras.Input((size, size, 3))
    x = layers.Conv2D(8, 3, strides=2, activation="relu")(layers.Rescaling(1 / 127.5, offset=-1)(inputs))
    for _ in range(2):
        double = layers.Conv2D(4, 3, padding="same", activation="relu")(x)
        pooled = layers.AveragePooling2D(3, strides=1, padding="same")(x)
        x = layers.Concatenate()(
            [
                layers.Conv2D(4, 1, activation="relu")(x),
                layers.Conv2D(4, 5, padding="same", activation="relu")(x),
                layers.Conv2D(4, 3, padding="same", activation="relu")(double),
                layers.Conv2D(4, 1, activation="relu")(pooled),
            ]
        )
    x = layers.Concatenate()(
        [layers.Conv2D(8, 3, strides=2, activation="relu")(x), layers.MaxPooling2D(3, strides=2)(x)]
    )
    x = layers.GlobalAveragePooling2D()(x)  # every position counts, the border's average pools too
    return with_centred_head(inputs, x, size, seed=5)


@pytest.mark.parametrize("size, patch, stride", [(48, 8, None), (45, 7, None), (40, 8, 4)])
def test_windows_pass_through_inception_blocks_exactly(size, patch, stride):
    """The plan cuts after concatenated branches, through 'same' average pools, and gives the reference map."""
    model, image = inception_model(size), random_image(size, seed=7)
    plan = plan_occlusion(model, size, size, explain.patch_grid(size, size, patch, stride), patch)
    assert plan is not None and sum(isinstance(step.layer, layers.Concatenate) for step in plan.steps) >= 2
    assert any(isinstance(step.layer, layers.AveragePooling2D) for step in plan.steps)
    assert_incremental_map_is_exact(model, image, patch, stride)


def test_each_scorer_is_traced_once_whatever_the_chunks():
    """Full chunks and a shorter last one run one compiled graph (the batch dimension is left open)."""
    model, image = tiny_model(60), random_image(60)
    patch = 7  # 81 patches and the intact image: five chunks of 16 and one of 2
    assert (len(explain.patch_grid(60, 60, patch)) + 1) % explain.CHUNK == 2
    for incremental in (True, False):
        for _ in range(2):
            occlusion_sensitivity(model, image, patch_size=patch, incremental=incremental)
    entries = per_model._per_model[model]
    scorer = next(entry for key, entry in entries.items() if key[0] == "incremental")
    traced = [entries[("scorer", 60, 60)], scorer.score, scorer.intact]
    assert [function.experimental_get_tracing_count() for function in traced] == [1, 1, 1]


@pytest.mark.parametrize("incremental", [True, False], ids=["incremental", "whole-image"])
@pytest.mark.parametrize("size, patch", [(60, 20), (70, 20)])  # 70: the last row and column are cut at the border
def test_agrees_with_tf_explain_up_to_a_constant(monkeypatch, size, patch, incremental):
    tf_explain_module = pytest.importorskip("tf_explain.core.occlusion_sensitivity")
    # Compare on tf-explain's own grid, before its final bilinear resize.
    monkeypatch.setattr(tf_explain_module.cv2, "resize", lambda grid, shape: grid)
    model, image = tiny_model(size), random_image(size, seed=5)
    assert plan_occlusion(model, size, size, explain.patch_grid(size, size, patch), patch) is not None
    theirs = tf_explain_module.OcclusionSensitivity().get_sensitivity_map(model, image, 0, patch)  # 1 - p(occluded)
    ours = occlusion_sensitivity(model, image, patch_size=patch, incremental=incremental)
    ours_on_grid = ours[::patch, ::patch]  # each patch's top-left pixel carries that patch's value
    assert theirs.shape == ours_on_grid.shape and np.ptp(theirs) > 1e-3
    difference = ours_on_grid - theirs  # = p(intact) - 1 everywhere
    assert np.ptp(difference) < 1e-4
    intact = float(model.predict(image[None], verbose=0)[0, 0])
    assert difference.mean() == pytest.approx(intact - 1, abs=1e-4)


def test_overlapping_patches_average_and_progressive_mode_ends_with_the_exact_map():
    model, image = tiny_model(40), random_image(40)
    overlapping = occlusion_sensitivity(model, image, patch_size=10, stride=5)
    # The definition: each pixel gets the mean drop of the patches that cover it.
    corners = explain.patch_grid(40, 40, 10, 5)
    occluded = np.repeat(image[None], len(corners), axis=0)
    for index, (top, left) in enumerate(corners):
        occluded[index, top : top + 10, left : left + 10] = GREY
    drops = float(model.predict(image[None], verbose=0)[0, 0]) - model.predict(occluded, verbose=0)[:, 0]
    total, coverage = np.zeros((40, 40)), np.zeros((40, 40))
    for drop, (top, left) in zip(drops, corners):
        total[top : top + 10, left : left + 10] += drop
        coverage[top : top + 10, left : left + 10] += 1
    assert np.ptp(overlapping) > 1e-3
    np.testing.assert_allclose(overlapping, total / coverage, atol=1e-6)
    stages = list(progressive_occlusion(model, image, patch_size=10))
    assert [name for name, _ in stages] == ["coarse", "full"]
    np.testing.assert_allclose(stages[-1][1], occlusion_sensitivity(model, image, patch_size=10), atol=1e-7)
    fine = list(progressive_occlusion(model, image, patch_size=10, fine=True))
    assert [name for name, _ in fine] == ["coarse", "full", "fine"]
    np.testing.assert_allclose(
        fine[-1][1], occlusion_sensitivity(model, image, explain.FINE_PATCH, explain.FINE_STRIDE), atol=1e-7
    )
    assert [stage.label for stage in explain.occlusion_stages(40, 20)] == ["full"]  # no preview coarser than 14 px


def test_a_map_whose_patches_move_nothing_is_drawn_pale():
    """Float noise (0.000175 on a reading no patch moves) was drawn as saturated as a drop of 0.3."""
    noise = np.random.default_rng(0).uniform(-0.000175, 0.000175, (20, 20)).astype(np.float32)
    strong = noise * (0.3 / 0.000175)
    assert signed_scale(noise) == MIN_SIGNED_SCALE and signed_scale(strong) == pytest.approx(0.3, rel=0.01)
    assert colourise(noise, "blue-white-red", signed=True).min() >= 250  # white, to a few levels
    assert colourise(strong, "blue-white-red", signed=True).min() < 60  # full blue and red remain


def test_the_card_says_which_path_a_model_takes():
    from melanoma.models.architectures import create_model

    model = create_model("scratch_cnn", 64)
    plain = explain.occlusion_path(model, 64)
    assert plain["path"] == "incremental" and plain["recomputed_up_to"] in [layer.name for layer in model.layers]
    assert f"recomputed up to {plain['recomputed_up_to']}" in plain["why"]
    constant = explain.occlusion_path(create_model("scratch_cnn", 64, colour_constancy=True), 64)
    assert constant["path"] == "whole image" and "preprocess_shades_of_gray" in constant["why"]
    wide = explain.occlusion_path(tiny_model(24), 24)  # a 20-pixel patch reaches most of every map at 24 px
    assert (
        wide["path"] == "whole image" and "more than half" in wide["why"] and "reads the whole image" not in wide["why"]
    )


@keras.saving.register_keras_serializable(package="tests")
class TopLeftOnly(layers.Layer):
    """Zeroes features outside the top-left quadrant, so the output depends on that quadrant alone."""

    def call(self, x):
        height, width = x.shape[1], x.shape[2]
        mask = np.zeros((1, height, width, 1), np.float32)
        mask[:, : height // 2, : width // 2] = 1.0
        return x * mask


def test_grad_cam_lights_up_the_quadrant_the_output_depends_on():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((64, 64, 3))
    x = layers.Conv2D(8, 3, padding="same", activation="relu")(layers.Rescaling(1 / 255)(inputs))
    x = TopLeftOnly(name="masked")(x)
    output = layers.Dense(1, activation="sigmoid")(layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, output)
    cam = grad_cam(model, random_image(64))
    assert cam.shape == (64, 64) and cam.max() == pytest.approx(1.0)
    peak = np.unravel_index(cam.argmax(), cam.shape)
    assert peak[0] < 32 and peak[1] < 32
    assert cam[:32, :32].sum() / cam.sum() > 0.95  # bilinear upsampling may bleed a pixel or two
    assert cam[36:, :].max() == 0 and cam[:, 36:].max() == 0


def test_grad_cam_still_explains_a_saturated_prediction():
    """A head bias that pushes the probability to exactly 1.0 leaves the map unchanged (it explains the logit)."""
    model, image = tiny_model(48), random_image(48)
    before = grad_cam(model, image)
    head = model.layers[-1]
    head.bias.assign(head.bias + 100.0)
    assert float(model.predict(image[None], verbose=0)[0, 0]) == 1.0
    after = grad_cam(model, image)
    assert before.max() == pytest.approx(1.0)
    np.testing.assert_allclose(after, before, atol=1e-5)


def test_grad_cam_names_the_head_it_needs():
    inputs = keras.Input((32, 32, 3))
    x = layers.GlobalAveragePooling2D()(layers.Conv2D(4, 3)(inputs))
    model = keras.Model(inputs, layers.Dense(2, activation="softmax", name="two_classes")(x))
    with pytest.raises(ValueError, match=r"Dense\(1, activation='sigmoid'\).*'two_classes'"):
        grad_cam(model, random_image(32))


@pytest.mark.parametrize("name", DEFAULT_MODELS)
def test_incremental_inference_gives_the_whole_image_map_for_every_architecture(name):
    from melanoma.models.architectures import create_model, get_architecture

    # Random Lite weights give a constant output (an all-zero map); its ImageNet weights are offline.
    weights = "imagenet" if get_architecture(name).checkpoint_variant else "none"
    model, image = create_model(name, 96, weights=weights), random_image(96, seed=2)
    assert plan_occlusion(model, 96, 96, explain.patch_grid(96, 96, 12), 12) is not None
    incremental = occlusion_sensitivity(model, image, patch_size=12)
    whole_image = occlusion_sensitivity(model, image, patch_size=12, incremental=False)
    assert np.abs(whole_image).max() > 0
    np.testing.assert_allclose(incremental, whole_image, atol=1e-6)


def test_colour_constancy_leaves_nothing_to_reuse():
    """Shades of Gray rescales every pixel by the whole image's illuminant, so a patch reaches everywhere."""
    from melanoma.models.architectures import create_model

    model = create_model("inception_v3", 96, colour_constancy=True)
    assert plan_occlusion(model, 96, 96, explain.patch_grid(96, 96, 12), 12) is None


def eager(model: keras.Model, images: np.ndarray) -> np.ndarray:
    """One eager call: for a few images, quicker than tracing a predict function for each deep model."""
    return keras.ops.convert_to_numpy(model(images, training=False))


def head_towards_grey(model: keras.Model, image: np.ndarray, steepness: float = 4.0) -> None:
    """Set the head so the logit is 0 on `image` and −steepness on it greyed out entirely.

    Random weights leave every probability near 0.5 and the occlusion drops within float
    rounding of 0; this head reads the pooled features along the way from the image to grey.
    """
    head = model.layers[-1]
    pooled = eager(keras.Model(model.input, head.input), np.stack([image, np.full_like(image, GREY)])).astype(
        np.float64
    )
    direction = pooled[1] - pooled[0]
    kernel = -steepness * direction / (direction @ direction)
    head.set_weights([kernel[:, None], np.array([-pooled[0] @ kernel])])


@pytest.mark.parametrize("name", DEFAULT_MODELS)
def test_both_methods_work_for_every_architecture(name):
    from melanoma.models.architectures import create_model, get_architecture

    architecture = get_architecture(name)
    keras.utils.set_random_seed(0)
    # Random Lite weights give a constant output; its ImageNet weights are offline.
    model = create_model(name, 80, weights="imagenet" if architecture.checkpoint_variant else "none")
    image = random_image(80)
    head_towards_grey(model, image)
    # Occlusion: each patch carries p(image) − p(image with that patch grey), all scored in one batch.
    corners = explain.patch_grid(80, 80, 20)
    occluded = np.repeat(image[None], len(corners) + 1, axis=0)
    for index, (top, left) in enumerate(corners, start=1):
        occluded[index, top : top + 20, left : left + 20] = GREY
    probabilities = eager(model, occluded)[:, 0]
    drops = (probabilities[0] - probabilities[1:]).reshape(4, 4)
    assert np.ptp(drops) > 1e-3  # patches differ far beyond the tolerance, so a misplaced one would show
    np.testing.assert_allclose(
        occlusion_sensitivity(model, image, patch_size=20), drops.repeat(20, 0).repeat(20, 1), atol=1e-5
    )
    # Grad-CAM of a pooled linear head is the class activation map (Zhou et al. 2016):
    # the feature map weighted by the head's kernel, rectified, resized and scaled to a peak of 1.
    head = model.layers[-1]
    features = eager(keras.Model(model.input, model.get_layer(architecture.gradcam_layer).output), image[None])[0]
    activation = features @ head.get_weights()[0][:, 0]
    expected = tf.image.resize(np.maximum(activation, 0)[..., None], (80, 80), method="bilinear")[..., 0].numpy()
    assert expected.max() > 0
    np.testing.assert_allclose(grad_cam(model, image, architecture.gradcam_layer), expected / expected.max(), atol=1e-5)
    # Rectified: with the head negated every location counts against the logit, and the map is 0, not negative.
    assert activation.min() > 0
    head.set_weights([-weight for weight in head.get_weights()])
    assert not grad_cam(model, image, architecture.gradcam_layer).any()


def test_trained_cards_say_which_occlusion_path_they_take(trained_models):
    """The fixture trains with the shipped recipes, whose colour constancy reads the whole image first."""
    import json

    _, output_dir = trained_models
    cards = {path.parent.name: json.loads(path.read_text()) for path in output_dir.glob("*/card.json")}
    assert set(cards) == {*DEFAULT_MODELS, DIAGNOSIS_MODEL}
    for name, card in cards.items():
        assert card["recipe"]["colour_constancy"], name
        assert card["occlusion_maps"]["path"] == "whole image", name
        assert "preprocess_shades_of_gray" in card["occlusion_maps"]["why"], name
