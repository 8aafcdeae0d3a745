"""Exported bundles against PyTorch: graph outputs, label sets (greedy and beam 3) and metrics."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest
import torch

from conftest import EXPORT_METHODS, REPO
from corel_annotate.export.onnx_graphs import wrappers
from corel_annotate.runtime.annotator import Annotator
from corel_annotate.runtime.dataset import CorelDataset
from corel_annotate.runtime.evaluation.metrics import annotation_metrics, label_sets_to_matrix
from corel_annotate.runtime.bundle.manifest import load_manifest
from corel_annotate.runtime.preprocessing import preprocess_file
from corel_annotate.training.checkpoint import model_from_checkpoint
from corel_annotate.training.config import DecodingConfig
from corel_annotate.training.evaluation import predict_images


def split_and_vocab(data):
    ds = CorelDataset(data)
    split = ds.read("test")
    return split, ds.vocabulary


def torch_predictions(model, cfg, images: np.ndarray, beam_width: int) -> tuple[list[list[int]], np.ndarray | None]:
    """The PyTorch reference path from preprocessed images to label sets (and scores)."""
    config = DecodingConfig(beam_width=beam_width, max_len=cfg.decode.max_len, forbid_repeat=cfg.decode.forbid_repeat)
    p = predict_images(model, images, config, cfg.thresholds, cfg.top_k, cfg.min_labels)
    return p.label_sets, p.scores


@pytest.fixture(scope="module")
def test_batch(synth_data, bundles):
    split, vocab = split_and_vocab(synth_data)
    _, cfg = model_from_checkpoint(bundles["cnn"][0])
    pre = cfg.preprocess
    images = np.stack([preprocess_file(s.path, pre) for s in split.samples])
    return split, vocab, images


@pytest.fixture(scope="module")
def pixels(synth_data, bundles):
    """The same photos as the bundles take them (every bundle here has the same preprocessing): uint8 pixels."""
    split, _ = split_and_vocab(synth_data)
    pre = load_manifest(bundles["cnn"][1]).preprocess
    return np.stack([preprocess_file(s.path, pre) for s in split.samples])


@pytest.mark.parametrize("method", EXPORT_METHODS)
def test_graph_outputs_match_torch_on_real_images(bundles, test_batch, pixels, method):
    ckpt, bundle = bundles[method]
    model, _ = model_from_checkpoint(ckpt)
    modules = wrappers(model)
    manifest = json.loads((bundle / "manifest.json").read_text())
    sessions = {name: ort.InferenceSession(str(bundle / spec["file"]), providers=["CPUExecutionProvider"])
                for name, spec in manifest["graphs"].items()}
    _, _, images = test_batch
    for batch in (1, 5):
        x = images[:batch]
        enc_names = [o["name"] for o in manifest["graphs"]["encoder"]["outputs"]]
        got = sessions["encoder"].run(enc_names, {"images": pixels[:batch]})
        with torch.no_grad():
            expected = modules["encoder"](torch.from_numpy(x))
        expected = expected if isinstance(expected, tuple) else (expected,)
        assert len(got) == len(expected)
        for g, e in zip(got, expected):
            assert g.shape[0] == batch
            assert np.max(np.abs(g - e.numpy())) < 1e-4
        if "decoder_step" in sessions:
            step_in = [i["name"] for i in manifest["graphs"]["decoder_step"]["inputs"]]
            step_out = [o["name"] for o in manifest["graphs"]["decoder_step"]["outputs"]]
            encoded = dict(zip(enc_names, got))
            token = np.arange(batch, dtype=np.int64) % (len(manifest["vocabulary"]) + 2)
            feed = {"token": token, **{n: encoded[n] for n in step_in[1:]}}
            got_step = sessions["decoder_step"].run(step_out, feed)
            with torch.no_grad():
                exp_step = modules["decoder_step"](torch.from_numpy(token), *(torch.from_numpy(feed[n]) for n in step_in[1:]))
            for g, e in zip(got_step, exp_step):
                assert np.max(np.abs(g - e.numpy())) < 1e-4


ENGINES = ["cpu", "openvino"]  # onnxruntime and OpenVINO, both fp32


@pytest.mark.parametrize("device", ENGINES)
@pytest.mark.parametrize("method", EXPORT_METHODS)
@pytest.mark.parametrize("beam_width", [1, 3])
def test_label_sets_equal_the_reference(bundles, test_batch, pixels, method, beam_width, device):
    ckpt, bundle = bundles[method]
    model, cfg = model_from_checkpoint(ckpt)
    _, _, images = test_batch
    expected, _ = torch_predictions(model, cfg, images, beam_width)
    annotator = Annotator.load(bundle, device=device)
    assert annotator.engine == ("openvino fp32" if device == "openvino" else "onnxruntime-cpu fp32")
    got = annotator.annotate_batch(pixels, beam_width=beam_width) if model.is_sequence else annotator.annotate_batch(pixels)
    agree = sum(set(a.label_ids) == set(b) for a, b in zip(got, expected))
    assert agree >= 0.99 * len(expected), f"{agree}/{len(expected)} label sets agree"
    assert any(len(a.label_ids) for a in got)


@pytest.mark.parametrize("device", ENGINES)
@pytest.mark.parametrize("method", EXPORT_METHODS)
def test_eval_metrics_equal_pytorch_evaluation(bundles, synth_data, test_batch, method, device):
    ckpt, bundle = bundles[method]
    model, cfg = model_from_checkpoint(ckpt)
    split, vocab, images = test_batch
    sets, probs = torch_predictions(model, cfg, images, cfg.decode.beam_width)
    targets = label_sets_to_matrix(split.label_ids(vocab), len(vocab))
    reference = annotation_metrics(targets, label_sets_to_matrix(sets, len(vocab)), probs).to_dict()
    result = subprocess.run([sys.executable, "-m", "corel_annotate.runtime.cli.eval", "--model", str(bundle), "--data",
                             str(synth_data), "--json", "--no-progress", "--device", device, "--precision", "fp32"], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    got = json.loads(result.stdout)
    for key, value in reference.items():
        if value is None:
            assert got[key] is None
        else:
            assert got[key] == pytest.approx(value, abs=1e-6), key


def test_batch_size_does_not_change_results(bundles, pixels):
    _, bundle = bundles["attention"]
    annotator = Annotator.load(bundle)
    images = pixels
    one = [a.label_ids for i in range(12) for a in annotator.annotate_batch(images[i:i + 1], beam_width=3)]
    many = [a.label_ids for a in annotator.annotate_batch(images[:12], beam_width=3)]
    assert one == many


def test_runtime_never_imports_torch(bundles, synth_data, tmp_path):
    _, bundle = bundles["attention"]
    _, gcn = bundles["ml-gcn"]
    script = f"""
import sys
sys.modules['torch'] = None  # any attempt to import torch now fails
from corel_annotate.runtime.annotator import Annotator
from corel_annotate.runtime.evaluation.runner import evaluate_bundle
from corel_annotate.runtime.cli.infer import infer_app
from corel_annotate.runtime.cli.eval import eval_app
a = Annotator.load({str(bundle)!r})
print(len(a.annotate([{str(next((synth_data / 'images').iterdir()))!r}], beam_width=3)))
print(evaluate_bundle(Annotator.load({str(gcn)!r}), {str(synth_data)!r}).metrics.per_class_f1 > 0)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["1", "True"]
    mods = subprocess.run([sys.executable, "-c", "import sys, corel_annotate.runtime.annotator, corel_annotate.runtime.cli.infer, corel_annotate.runtime.evaluation.runner; "
                           "print(any(m == 'torch' or m.startswith('torch.') for m in sys.modules))"],
                          capture_output=True, text=True, cwd=REPO)
    assert mods.stdout.strip() == "False", mods.stderr


def reference_decode(path, size: int, decode: str):
    """A photo decoded by the bundle format's decode rule written out in PIL calls (not through
    runtime/preprocessing.py): ``draft`` lets libjpeg scale a JPEG down while decoding to the smallest
    DCT scale that keeps both sides at or above ``size``, turns it upright by its EXIF orientation,
    then shrinks by the largest whole factor that does the same (``Image.reduce``); ``full`` decodes
    every pixel and only turns it upright."""
    from PIL import Image, ImageOps

    with Image.open(path) as img:
        if decode == "draft" and img.format in ("JPEG", "MPO"):   # MPO: a multi-picture JPEG
            img.draft("RGB", (size, size))
        rgb = ImageOps.exif_transpose(img).convert("RGB")
    if decode == "draft":
        factor = min(rgb.width // size, rgb.height // size)
        if factor >= 2:
            rgb = rgb.reduce(factor)
    return rgb


def test_preprocessing_matches_the_torchvision_training_transform(bundles, synth_data, tmp_path):
    """The runtime's input for a photo equals torchvision's resize (and, as float, ToTensor and Normalize)
    of the photo decoded independently by the bundle's own decode rule, on small synthetic photos and on
    camera-size ones where draft decoding and reduction act."""
    import dataclasses

    tv = pytest.importorskip("torchvision.transforms")
    from PIL import Image

    pre = load_manifest(bundles["cnn"][1]).preprocess
    size = pre.image_size
    paths = sorted((synth_data / "images").iterdir())[:5]
    shared = REPO.parent / "shared" / "datasets" / "miml-scenes" / "images"
    if shared.is_dir():
        paths += sorted(shared.iterdir())[:5]
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 255, 1024 * 768 * 3).reshape(768, 1024, 3)
    camera = Image.fromarray((0.7 * ramp + 0.3 * rng.integers(0, 256, ramp.shape)).astype(np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6   # held upright: turn 90 degrees clockwise
    camera.save(tmp_path / "camera.jpg", quality=92, exif=exif.tobytes())
    camera.save(tmp_path / "camera.png")
    paths += [tmp_path / "camera.jpg", tmp_path / "camera.png"]
    if pre.decode == "draft":   # the camera-size photos really take the short paths
        for name, upright in (("camera.jpg", (768, 1024)), ("camera.png", (1024, 768))):
            w, h = reference_decode(tmp_path / name, size, "draft").size
            assert size <= min(w, h) and w * h <= upright[0] * upright[1] // 4 and (w > h) == (upright[0] > upright[1])
    resize = tv.Resize((size, size), interpolation=tv.InterpolationMode.BILINEAR)
    as_float = dataclasses.replace(pre, input_dtype="float32", layout="NCHW")
    normalise = tv.Compose([tv.ToTensor(), tv.Normalize(pre.mean, pre.std)])
    for path in paths:
        resized = resize(reference_decode(path, size, pre.decode))
        pixels = np.asarray(resized)
        if pre.layout == "NCHW":
            pixels = pixels.transpose(2, 0, 1)
        ours = preprocess_file(path, pre)
        assert ours.shape == pixels.shape == pre.input_shape
        assert ours.dtype == (np.uint8 if pre.input_dtype == "uint8" else np.float32)
        if pre.input_dtype == "uint8":
            assert np.array_equal(ours, pixels), path
        ours = preprocess_file(path, as_float)
        reference = normalise(resized).numpy()
        assert ours.shape == reference.shape == (3, size, size)
        assert np.max(np.abs(ours - reference)) < 1e-5, path


def test_openvino_bf16_is_explicit_recorded_and_close(bundles, pixels):
    from corel_annotate.runtime.engines.openvino_session import cpu_precisions

    if "bf16" not in cpu_precisions():
        pytest.skip("this CPU has no bfloat16 units")
    images = pixels
    bundle = bundles["cnn"][1]
    fp32 = Annotator.load(bundle, device="openvino", precision="fp32")
    bf16 = Annotator.load(bundle, device="openvino", precision="bf16")
    assert bf16.engine == "openvino bf16" and bf16.sessions["encoder"].precision == "bf16"
    a, b = fp32.scores(images), bf16.scores(images)
    assert not np.array_equal(a, b), "bf16 arithmetic really ran"
    assert np.max(np.abs(a - b)) < 0.15 and np.mean(np.abs(a - b)) < 0.01
    agree = sum(set(x.label_ids) == set(y.label_ids) for x, y in
                zip(fp32.labels_from_scores(a), bf16.labels_from_scores(b)))
    assert agree >= 0.9 * len(images)


def test_precision_other_than_fp32_needs_openvino(bundles):
    with pytest.raises(ValueError, match="needs --device openvino"):
        Annotator.load(bundles["cnn"][1], device="cpu", precision="bf16")


def test_openvino_runs_the_decoder_step_on_onnxruntime_unless_asked(bundles, pixels):
    """The step is per-call overhead at batch 1 (0.45 ms in onnxruntime, 1.0 ms in OpenVINO here): with
    ``device="openvino"`` it runs on onnxruntime by default, and both engines' steps decode alike."""
    from corel_annotate.runtime.engines.openvino_session import OpenVINOSession

    images = pixels
    bundle = bundles["attention"][1]
    mixed = Annotator.load(bundle, device="openvino", precision="fp32")
    pure = Annotator.load(bundle, device="openvino", precision="fp32", step_device="openvino")
    assert isinstance(mixed.sessions["encoder"], OpenVINOSession)
    assert not isinstance(mixed.sessions["decoder_step"], OpenVINOSession)
    assert isinstance(pure.sessions["decoder_step"], OpenVINOSession)
    a, b = mixed.annotate_batch(images, beam_width=3), pure.annotate_batch(images, beam_width=3)
    assert sum(x.labels == y.labels for x, y in zip(a, b)) >= 0.99 * len(images)
    assert max(abs(s - t) for x, y in zip(a, b) if x.labels == y.labels for s, t in zip(x.scores, y.scores)) < 1e-4
    with pytest.raises(ValueError, match="step_device 'gpu'"):
        Annotator.load(bundle, device="openvino", step_device="gpu")
