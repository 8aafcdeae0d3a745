"""Tests for ML-WGAN augmentation (training/wgan.py, training/cli/augment.py, training/plots.py) on tiny data."""
from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from corel_annotate.runtime.dataset import CorelDataset
from corel_annotate.training.cli.augment import app
from corel_annotate.training.synth import SynthConfig, generate
from corel_annotate.training.wgan import (
    Critic,
    Generator,
    WGANConfig,
    augment_dataset,
    generate_images,
    gradient_penalty,
    real_batches,
    train_single_image,
)

TINY = WGANConfig(height=32, width=48, base_channels=8, iterations=2, n_critic=2, batch_size=4, per_image=2, seed=3)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Corel-layout directory with 3 training photos of 32 x 32 pixels."""
    out = tmp_path_factory.mktemp("wgan") / "data"
    generate(out, SynthConfig(images=4, labels=3, scenes=1, image_size=32, max_labels=2, test_fraction=0.25, seed=1))
    return out


@pytest.fixture(scope="module")
def augmented(data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("wgan") / "aug"
    return out, augment_dataset(data, out, TINY, limit=2, device="cpu", log=lambda _m: None, show_progress=False)


def _photo(data: Path) -> Image.Image:
    return Image.open(CorelDataset(data).read("train").samples[0].path).convert("RGB")


def test_config_validation() -> None:
    for bad in ({"height": 40}, {"width": 0}, {"iterations": 0}, {"per_image": 0}, {"lr": 0.0}, {"gp_lambda": -1.0}):
        with pytest.raises(ValueError):
            WGANConfig(**bad)
    assert WGANConfig().to_dict()["betas"] == [0.0, 0.9]
    assert json.loads(json.dumps(TINY.to_dict()))["height"] == 32


def test_generator_shape_and_range() -> None:
    torch.manual_seed(0)
    g = Generator(TINY)
    x = g(torch.randn(5, TINY.noise_dim) * 10)
    assert x.shape == (5, 3, 32, 48)
    assert x.min() >= -1 and x.max() <= 1
    assert Critic(TINY)(x).shape == (5,)


def test_gradient_penalty_zero_for_unit_lipschitz_linear_critic() -> None:
    torch.manual_seed(0)
    real, fake = torch.randn(6, 3, 8, 8), torch.randn(6, 3, 8, 8)
    w = torch.randn(3 * 8 * 8)
    w = w / w.norm()
    gp = gradient_penalty(lambda x: x.flatten(1) @ w, real, fake)
    assert gp.item() == pytest.approx(0.0, abs=1e-8)
    gp = gradient_penalty(lambda x: x.flatten(1) @ (3 * w), real, fake)
    assert gp.item() == pytest.approx(4.0, rel=1e-5)


def test_gradient_penalty_is_differentiable_for_the_critic() -> None:
    torch.manual_seed(0)
    critic = Critic(TINY)
    real, fake = torch.rand(4, 3, 32, 48) * 2 - 1, torch.rand(4, 3, 32, 48) * 2 - 1
    gp = gradient_penalty(critic, real, fake)
    gp.backward()
    assert gp.item() > 0
    grads = {name: p.grad for name, p in critic.named_parameters()}
    assert grads.pop("score.bias") is None  # a constant offset does not change the critic's input gradient
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    assert grads["body.0.weight"].abs().sum() > 0


def test_real_batches_are_random_crops_and_flips_in_range(data: Path) -> None:
    batches = real_batches(_photo(data), TINY, np.random.default_rng(0))
    a, b = next(batches), next(batches)
    assert a.shape == (TINY.batch_size, 3, 32, 48) and a.dtype == torch.float32
    assert a.min() >= -1 and a.max() <= 1
    assert not torch.equal(a, b)


def _params(g: Generator) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in g.parameters()])


def test_training_moves_the_gan_and_is_reproducible(data: Path) -> None:
    photo = _photo(data)
    cfg = replace(TINY, iterations=6, n_critic=5, lr=1e-3)
    steps: list[int] = []
    g_long, log = train_single_image(photo, cfg, progress=steps.append)
    g_short, _ = train_single_image(photo, replace(cfg, iterations=1))
    g_short_again, _ = train_single_image(photo, replace(cfg, iterations=1))
    assert steps == list(range(1, 7))
    assert set(log) >= {"critic_loss", "generator_loss", "wasserstein"}
    assert all(len(v) == 6 and all(math.isfinite(x) for x in v) for v in log.values())
    assert len(set(log["critic_loss"])) > 1 and len(set(log["generator_loss"])) > 1
    assert np.mean(log["wasserstein"][-3:]) > log["wasserstein"][0]  # the critic learns to tell real from fake
    assert torch.equal(_params(g_short), _params(g_short_again))  # same seed, same start
    assert not torch.allclose(_params(g_short), _params(g_long))  # further generator steps moved it
    images = generate_images(g_long, 3, cfg, seed=7)
    assert [im.size for im in images] == [(48, 32)] * 3 and all(im.mode == "RGB" for im in images)
    again = generate_images(g_long, 3, cfg, seed=7)
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(images, again))
    assert not np.array_equal(np.asarray(images[0]), np.asarray(images[1]))


def test_augment_dataset_layout(data: Path, augmented: tuple[Path, dict]) -> None:
    out, summary = augmented
    sources = CorelDataset(data).read("train").samples[:2]
    assert summary["images_done"] == 2 and summary["skipped"] == 0 and summary["generated"] == 4
    expected = [f"{Path(s.image_name).stem}_gan_{k}.jpeg" for s in sources for k in range(2)]
    assert sorted(p.name for p in (out / "images").iterdir()) == sorted(expected)
    for name in expected:
        with Image.open(out / "images" / name) as im:
            assert im.size == (48, 32) and im.format == "JPEG"
    split = CorelDataset(out).read("train_aug", strict=True)
    assert [s.image_name for s in split.samples] == expected
    assert [s.labels for s in split.samples] == [s.labels for s in sources for _ in range(2)]
    assert (out / "vocabulary.txt").read_text() == (data / "vocabulary.txt").read_text()
    record = json.loads((out / "augment.json").read_text())
    assert record["config"]["height"] == 32 and record["source"] == str(data)
    assert set(record["images"]) == {Path(s.image_name).stem for s in sources}
    assert all(v["seconds"] >= 0 and "final_wasserstein" in v for v in record["images"].values())
    assert not list(out.rglob("*.tmp"))


def test_existing_output_is_refused_without_resume(data: Path, augmented: tuple[Path, dict]) -> None:
    with pytest.raises(ValueError, match="resume"):
        augment_dataset(data, augmented[0], TINY, limit=1, device="cpu", log=lambda _m: None, show_progress=False)


def test_resume_skips_finished_images(data: Path, augmented: tuple[Path, dict], tmp_path: Path) -> None:
    out = tmp_path / "aug"
    first = augment_dataset(data, out, TINY, limit=1, device="cpu", log=lambda _m: None, show_progress=False)
    assert first["images_done"] == 1
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "images").iterdir()}
    assert len(stamps) == 2
    summary = augment_dataset(data, out, TINY, limit=2, resume=True, device="cpu", log=lambda _m: None,
                              show_progress=False)
    assert summary["skipped"] == 1 and summary["images_done"] == 1 and summary["generated"] == 2
    assert all((out / "images" / n).stat().st_mtime_ns == t for n, t in stamps.items())
    samples = CorelDataset(out).read("train_aug", strict=True).samples
    assert len(samples) == 4
    assert len(json.loads((out / "augment.json").read_text())["images"]) == 2
    with pytest.raises(ValueError, match="another WGAN config"):
        augment_dataset(data, out, replace(TINY, iterations=3), limit=2, resume=True, device="cpu",
                        log=lambda _m: None, show_progress=False)
    for name in (p.name for p in (out / "images").iterdir()):  # same seeds per image: same as one whole run
        assert (out / "images" / name).read_bytes() == (augmented[0] / "images" / name).read_bytes()


def _colour_centre(sheet: np.ndarray, colour: tuple[int, int, int]) -> tuple[int, float, float]:
    """How many pixels of the sheet have ``colour`` (within JPEG's error), and their mean x and y."""
    near = np.all(np.abs(sheet.astype(np.int64) - np.asarray(colour)) <= 6, axis=2)
    ys, xs = np.nonzero(near)
    return int(near.sum()), float(xs.mean()) if len(xs) else -1.0, float(ys.mean()) if len(ys) else -1.0


def test_augmentation_sheet(data: Path, tmp_path: Path) -> None:
    """Generated images each of one flat colour, so the sheet can be read back: each is drawn in its source
    photo's row, in order of k; one without a training photo and rows beyond ``rows`` are left out."""
    from corel_annotate.training.plots import augmentation_sheet

    sources = CorelDataset(data).read("train").samples
    first, second = (Path(s.image_name).stem for s in sources[:2])
    aug = tmp_path / "aug"
    (aug / "images").mkdir(parents=True)
    colours = {f"{first}_gan_1.jpeg": (230, 20, 30), f"{first}_gan_0.jpeg": (20, 40, 230),
               f"{second}_gan_0.jpeg": (20, 220, 40), "not-a-training-photo_gan_0.jpeg": (230, 20, 230)}
    for name, colour in colours.items():
        Image.new("RGB", (48, 32), colour).save(aug / "images" / name, quality=95)
    (aug / "train_aug.json").write_text(json.dumps({"samples": [{"image_name": n, "image_labels": ["x"]}
                                                                for n in colours]}))
    with Image.open(augmentation_sheet(data, aug, tmp_path / "sheet.png", rows=6)) as im:
        assert im.format == "PNG"
        sheet = np.asarray(im.convert("RGB"))
    (n1, x1, y1), (n0, x0, y0), (m0, xm, ym), (stray, _, _) = (_colour_centre(sheet, c) for c in colours.values())
    assert min(n0, n1, m0) > 1000, (n0, n1, m0)
    assert stray == 0, "a generated image without its training photo is not drawn"
    assert x0 < x1 and abs(y0 - y1) < 5, "one row per source photo, its generated images in order of k"
    assert ym > y0 + 50 and abs(xm - x0) < 5, "the second photo's generated image starts the next row"
    with Image.open(augmentation_sheet(data, aug, tmp_path / "one.png", rows=1)) as im:
        one = np.asarray(im.convert("RGB"))
    assert _colour_centre(one, colours[f"{second}_gan_0.jpeg"])[0] == 0 and _colour_centre(one, colours[f"{first}_gan_0.jpeg"])[0] > 1000
    with pytest.raises(ValueError, match="rows must be at least 1"):
        augmentation_sheet(data, aug, tmp_path / "none.png", rows=0)
    (aug / "train_aug.json").write_text(json.dumps({"samples": [{"image_name": "not-a-training-photo_gan_0.jpeg",
                                                                 "image_labels": ["x"]}]}))
    with pytest.raises(ValueError, match="no generated image matches a training image"):
        augmentation_sheet(data, aug, tmp_path / "none.png")


def test_cli_missing_data_dir_exits_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, [str(tmp_path / "missing"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "does not exist" in lines[0]


def test_cli_runs(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(app, [str(data), "--out", str(out), "--per-image", "1", "--limit", "1",
                                      "--iterations", "1", "--height", "32", "--width", "48", "--base-channels", "8",
                                      "--batch-size", "2", "--n-critic", "1", "--device", "cpu", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.strip().splitlines()[-1])["generated"] == 1
    assert len(CorelDataset(out).read("train_aug").samples) == 1


def test_source_stem_reads_generated_names():
    from corel_annotate.training.wgan import source_stem

    assert source_stem("1000_gan_2.jpeg") == "1000"
    assert source_stem("a_gan_b_gan_0.jpeg") == "a_gan_b"
    assert source_stem("1000.jpeg") is None and source_stem("x_gan_y.jpeg") is None


def test_training_mixes_in_generated_images_but_not_offspring_of_validation_images(synth_data, feature_cache, tmp_path):
    """Hand-made generated images (copies of training photos) join the fit split; those made from
    validation images are left out so that checkpoint selection stays honest."""
    import shutil

    from corel_annotate.training.config import DecodingConfig, ModelConfig, SequenceConfig, TrainConfig
    from corel_annotate.training.trainer import train

    ds = CorelDataset(synth_data)
    samples = ds.read("train").samples
    aug = tmp_path / "aug"
    (aug / "images").mkdir(parents=True)
    shutil.copy(synth_data / "vocabulary.txt", aug / "vocabulary.txt")
    entries = []
    for s in samples:
        name = f"{Path(s.image_name).stem}_gan_0.jpeg"
        shutil.copy(s.path, aug / "images" / name)
        entries.append({"image_name": name, "image_labels": list(s.labels)})
    (aug / "train_aug.json").write_text(json.dumps({"samples": entries}))
    cfg = train(synth_data, tmp_path / "cnn.ckpt", ModelConfig(method="cnn", num_labels=0), SequenceConfig(),
                DecodingConfig(), TrainConfig(epochs=2, image_size=128, seed=3, augmented_dir=str(aug)),
                cache_dir=feature_cache, log=lambda _m: None, show_progress=False)
    val, n = cfg.data["val_images"], len(samples)
    assert cfg.data["augmented"] == {"dir": str(aug), "images": n - val, "excluded_validation_sources": val}
    assert cfg.data["fit_images"] == 2 * (n - val)


def test_training_refuses_augmented_images_with_another_vocabulary(synth_data, tmp_path):
    from corel_annotate.training.config import DecodingConfig, ModelConfig, SequenceConfig, TrainConfig
    from corel_annotate.training.trainer import train

    aug = tmp_path / "aug"
    (aug / "images").mkdir(parents=True)
    (aug / "vocabulary.txt").write_text("sky\nsea\n")
    (aug / "train_aug.json").write_text(json.dumps({"samples": []}))
    with pytest.raises(ValueError, match="differs from the training data's vocabulary"):
        train(synth_data, tmp_path / "x.ckpt", ModelConfig(method="cnn", num_labels=0), SequenceConfig(),
              DecodingConfig(), TrainConfig(epochs=1, image_size=128, augmented_dir=str(aug)),
              log=lambda _m: None, show_progress=False)


def test_augmented_training_caches_photos_and_generated_images_apart(synth_data, tmp_path):
    """The photos' features are cached under the same key as without --augmented (so adding generated
    images reuses them), and each generated copy of a photo gets that photo's features."""
    import shutil

    from corel_annotate.training.backbones import build_backbone
    from corel_annotate.training.config import DecodingConfig, ModelConfig, SequenceConfig, TrainConfig
    from corel_annotate.training.features import cache_key

    samples = CorelDataset(synth_data).read("train").samples
    aug = tmp_path / "aug"
    (aug / "images").mkdir(parents=True)
    shutil.copy(synth_data / "vocabulary.txt", aug / "vocabulary.txt")
    chosen = samples[:5]
    for s in chosen:
        shutil.copy(s.path, aug / "images" / f"{Path(s.image_name).stem}_gan_0.jpeg")
    (aug / "train_aug.json").write_text(json.dumps({"samples": [
        {"image_name": f"{Path(s.image_name).stem}_gan_0.jpeg", "image_labels": list(s.labels)} for s in chosen]}))
    cache = tmp_path / "cache"
    from corel_annotate.training.trainer import train

    cfg = train(synth_data, tmp_path / "cnn.ckpt", ModelConfig(method="cnn", num_labels=0), SequenceConfig(),
                DecodingConfig(), TrainConfig(epochs=1, image_size=128, seed=4, augment_views=1, train_top=0,
                                            val_fraction=0.0, augmented_dir=str(aug)),
                cache_dir=cache, log=lambda _m: None, show_progress=False)
    assert cfg.data["augmented"]["images"] == 5
    _, info = build_backbone(cfg.model.backbone, cfg.model.backbone_weights)
    pre = cfg.preprocess
    gen_paths = [aug / "images" / f"{Path(s.image_name).stem}_gan_0.jpeg" for s in chosen]
    photos = np.load(cache / f"{cache_key(cfg.model.backbone, info.weights_id, pre, 'pooled', [s.path for s in samples])}.npy")
    generated = np.load(cache / f"{cache_key(cfg.model.backbone, info.weights_id, pre, 'pooled', gen_paths)}.npy")
    assert photos.shape[0] == len(samples) and generated.shape[0] == 5
    np.testing.assert_allclose(generated, photos[:5], atol=1e-5)


def test_shuffle_makes_limit_pick_a_seeded_random_subset(data: Path, tmp_path: Path) -> None:
    sources = CorelDataset(data).read("train").samples
    cfg = replace(TINY, iterations=1, n_critic=1, per_image=1)  # seed 3: order 2, 1, 0
    order = np.random.default_rng(cfg.seed).permutation(len(sources))[:2]
    assert list(order) != [0, 1]
    out = tmp_path / "aug"
    augment_dataset(data, out, cfg, limit=2, device="cpu", log=lambda _m: None, show_progress=False, shuffle=True)
    names = [s.image_name for s in CorelDataset(out).read("train_aug", strict=True).samples]
    assert names == [f"{Path(sources[i].image_name).stem}_gan_0.jpeg" for i in order]
    assert json.loads((out / "augment.json").read_text())["shuffle"] is True
    with pytest.raises(ValueError, match="image order"):
        augment_dataset(data, out, cfg, limit=2, resume=True, device="cpu", log=lambda _m: None, show_progress=False)
