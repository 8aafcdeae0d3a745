"""ML-WGAN data augmentation: one small WGAN-GP per training image.

Two multi-label photos rarely share the same label set, so a conditional GAN has
too little data per label set.  Following ML-WGAN (Xiao Ke et al.), a small
DCGAN-style WGAN-GP is trained per original image, with random crops and flips of
that single image as the real distribution; the images it generates keep the
original's labels.  ``augment_dataset`` does this for a Corel-layout train split
and writes ``OUT/images/{stem}_gan_{k}.jpeg``, ``OUT/train_aug.json`` (same
format as ``train.json``), ``OUT/vocabulary.txt`` and ``OUT/augment.json`` (the
config, timings and final losses).  The annotation files are rewritten atomically
after every image, so an interrupted run loses nothing and ``resume`` continues it.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from corel_annotate.runtime.dataset import CorelDataset
from corel_annotate.runtime.preprocessing import load_image

RESIZE_MARGIN = 1.125
JPEG_QUALITY = 95
ANNOTATIONS = "train_aug.json"
RECORD = "augment.json"


@dataclass
class WGANConfig:
    """Size, architecture and optimisation of one per-image WGAN-GP."""

    height: int = 128
    width: int = 192
    noise_dim: int = 100
    base_channels: int = 64
    iterations: int = 300
    n_critic: int = 5
    gp_lambda: float = 10.0
    lr: float = 1e-4
    betas: tuple[float, float] = (0.0, 0.9)
    batch_size: int = 16
    per_image: int = 3
    seed: int = 0

    def __post_init__(self) -> None:
        self.betas = (float(self.betas[0]), float(self.betas[1]))
        for name in ("height", "width"):
            value = getattr(self, name)
            if value < 16 or value % 16:
                raise ValueError(f"{name} must be a positive multiple of 16, got {value}")
        for name in ("noise_dim", "base_channels", "iterations", "n_critic", "batch_size", "per_image"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.gp_lambda < 0:
            raise ValueError(f"gp_lambda must be non-negative, got {self.gp_lambda}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"betas must lie in [0, 1), got {self.betas}")

    def to_dict(self) -> dict:
        data = asdict(self)
        data["betas"] = list(self.betas)
        return data


class Generator(nn.Module):
    """DCGAN generator: noise ``[B, noise_dim]`` to images ``[B, 3, height, width]`` in [-1, 1]."""

    def __init__(self, cfg: WGANConfig) -> None:
        super().__init__()
        c = cfg.base_channels
        self.start = (8 * c, cfg.height // 16, cfg.width // 16)
        self.project = nn.Linear(cfg.noise_dim, int(np.prod(self.start)), bias=False)
        self.norm = nn.Sequential(nn.BatchNorm2d(8 * c), nn.ReLU(inplace=True))
        layers: list[nn.Module] = []
        for c_in, c_out in ((8 * c, 4 * c), (4 * c, 2 * c), (2 * c, c)):
            layers += [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
        layers += [nn.ConvTranspose2d(c, 3, 4, 2, 1), nn.Tanh()]
        self.body = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        x = self.project(z).view(z.shape[0], *self.start)
        return self.body(self.norm(x))


class Critic(nn.Module):
    """DCGAN critic without batch norm (the gradient penalty is per sample): one score per image.

    The first convolution is plain, the next three use a per-sample layer norm
    (``GroupNorm`` with one group), as in the WGAN-GP paper.
    """

    def __init__(self, cfg: WGANConfig) -> None:
        super().__init__()
        c = cfg.base_channels
        layers: list[nn.Module] = [nn.Conv2d(3, c, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True)]
        for c_in, c_out in ((c, 2 * c), (2 * c, 4 * c), (4 * c, 8 * c)):
            layers += [nn.Conv2d(c_in, c_out, 4, 2, 1), nn.GroupNorm(1, c_out), nn.LeakyReLU(0.2, inplace=True)]
        self.body = nn.Sequential(*layers)
        self.score = nn.Linear(8 * c * (cfg.height // 16) * (cfg.width // 16), 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.score(self.body(x).flatten(1)).squeeze(1)


def gradient_penalty(critic: Callable[[Tensor], Tensor], real: Tensor, fake: Tensor) -> Tensor:
    """WGAN-GP penalty ``mean((||grad D(x_hat)||_2 - 1)^2)`` at random interpolates of real and fake."""
    alpha = torch.rand(real.shape[0], *([1] * (real.dim() - 1)), device=real.device, dtype=real.dtype)
    x_hat = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)
    scores = critic(x_hat)
    (grad,) = torch.autograd.grad(scores.sum(), x_hat, create_graph=True)
    return ((grad.flatten(1).norm(2, dim=1) - 1) ** 2).mean()


def real_batches(image: Image.Image, cfg: WGANConfig, rng: np.random.Generator) -> Iterator[Tensor]:
    """Endless batches ``[batch_size, 3, height, width]`` in [-1, 1] of random crops and flips of one image.

    The image is resized once to ``RESIZE_MARGIN`` times the target size, then each
    sample is a random ``height x width`` crop, horizontally flipped with probability 1/2.
    """
    big_h, big_w = round(cfg.height * RESIZE_MARGIN), round(cfg.width * RESIZE_MARGIN)
    resized = image.convert("RGB").resize((big_w, big_h), Image.Resampling.BICUBIC)
    base = torch.from_numpy(np.asarray(resized, dtype=np.float32) / 127.5 - 1.0).permute(2, 0, 1).contiguous()
    while True:
        tops = rng.integers(0, big_h - cfg.height + 1, size=cfg.batch_size)
        lefts = rng.integers(0, big_w - cfg.width + 1, size=cfg.batch_size)
        flips = rng.random(cfg.batch_size) < 0.5
        crops = []
        for top, left, flip in zip(tops, lefts, flips):
            crop = base[:, top:top + cfg.height, left:left + cfg.width]
            crops.append(crop.flip(2) if flip else crop)
        yield torch.stack(crops)


def _fork_devices(device: torch.device) -> list[int]:
    if device.type != "cuda":
        return []
    return [device.index if device.index is not None else torch.cuda.current_device()]


def train_single_image(image: Image.Image, cfg: WGANConfig, device: str = "cpu",
                       progress: Callable[[int], None] | None = None) -> tuple[Generator, dict]:
    """Train one WGAN-GP on crops of ``image``; return the generator (eval mode) and a log.

    Each generator step follows ``n_critic`` critic steps (loss ``D(fake) - D(real) +
    gp_lambda * GP``); both networks use Adam(lr, betas).  Runs are reproducible:
    all randomness comes from ``cfg.seed`` and the global torch RNG is left as it was.
    The log holds, per generator step, the last critic step's ``critic_loss``,
    ``wasserstein`` estimate (``D(real) - D(fake)``) and ``gradient_penalty``, and the
    ``generator_loss`` (``-D(G(z))``).  ``progress(step)`` is called after each step.
    """
    dev = torch.device(device)
    log: dict[str, list[float]] = {"critic_loss": [], "generator_loss": [], "wasserstein": [], "gradient_penalty": []}
    with torch.random.fork_rng(devices=_fork_devices(dev)):
        torch.manual_seed(cfg.seed)
        generator = Generator(cfg).to(dev)
        critic = Critic(cfg).to(dev)
        opt_g = torch.optim.Adam(generator.parameters(), lr=cfg.lr, betas=cfg.betas)
        opt_d = torch.optim.Adam(critic.parameters(), lr=cfg.lr, betas=cfg.betas)
        batches = real_batches(image, cfg, np.random.default_rng(cfg.seed))
        generator.train()
        critic.train()
        for step in range(cfg.iterations):
            for p in critic.parameters():
                p.requires_grad_(True)
            for _ in range(cfg.n_critic):
                real = next(batches).to(dev, non_blocking=True)
                with torch.no_grad():
                    fake = generator(torch.randn(cfg.batch_size, cfg.noise_dim, device=dev))
                d_real = critic(real).mean()
                d_fake = critic(fake).mean()
                gp = gradient_penalty(critic, real, fake)
                loss_d = d_fake - d_real + cfg.gp_lambda * gp
                opt_d.zero_grad(set_to_none=True)
                loss_d.backward()
                opt_d.step()
            for p in critic.parameters():
                p.requires_grad_(False)
            loss_g = -critic(generator(torch.randn(cfg.batch_size, cfg.noise_dim, device=dev))).mean()
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
            log["critic_loss"].append(loss_d.item())
            log["wasserstein"].append((d_real - d_fake).item())
            log["gradient_penalty"].append(gp.item())
            log["generator_loss"].append(loss_g.item())
            if progress is not None:
                progress(step + 1)
    generator.eval()
    return generator, log


def generate_images(generator: Generator, count: int, cfg: WGANConfig, seed: int) -> list[Image.Image]:
    """``count`` RGB images (``width x height``) from noise drawn with ``seed``; batch norm in eval mode."""
    device = next(generator.parameters()).device
    noise = torch.randn(count, cfg.noise_dim, generator=torch.Generator().manual_seed(seed)).to(device)
    was_training = generator.training
    generator.eval()
    with torch.no_grad():
        images = generator(noise)
    generator.train(was_training)
    pixels = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(p, "RGB") for p in pixels]


def resolve_device(device: str) -> str:
    """``auto`` is CUDA when available, else CPU; anything else must be a valid torch device."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"unknown device {device!r}") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    return device


def output_names(image_name: str, per_image: int) -> list[str]:
    """The generated file names for one source image: ``{stem}_gan_{k}.jpeg``."""
    stem = Path(image_name).stem
    return [f"{stem}_gan_{k}.jpeg" for k in range(per_image)]


def _image_seed(seed: int, index: int) -> int:
    """A per-image seed independent of which images were skipped, so resumed runs match whole ones."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0] & 0x7FFFFFFF)


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


class _Bar:
    """A rich progress bar (on stderr) with one task over the source images; its description shows the GAN step."""

    def __init__(self, total: int, iterations: int) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.total, self.iterations, self.index = total, iterations, 0
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TimeRemainingColumn(), console=Console(stderr=True))
        self.task = self.progress.add_task("ML-WGAN", total=total)

    def step(self, step: int) -> None:
        self.progress.update(self.task, description=f"ML-WGAN image {self.index + 1}/{self.total} "
                                                    f"step {step}/{self.iterations}")

    def advance(self) -> None:
        self.index += 1
        self.progress.update(self.task, advance=1)


def augment_dataset(data_dir: Path, out_dir: Path, cfg: WGANConfig, limit: int | None = None, resume: bool = False,
                    device: str = "auto", log: Callable[[str], None] = print, show_progress: bool = True,
                    shuffle: bool = False) -> dict:
    """Train one WGAN per train image of ``data_dir`` (the first ``limit``) and write ``per_image`` images each.

    ``shuffle`` takes the images in an order drawn from ``cfg.seed`` instead of file order, so
    that ``limit`` picks a random subset (split files are often sorted by label).

    Writes ``out_dir/images/{stem}_gan_{k}.jpeg``, ``out_dir/train_aug.json``
    (labels copied from the source), ``out_dir/vocabulary.txt`` and
    ``out_dir/augment.json``.  A directory already holding ``train_aug.json`` is
    refused unless ``resume``, which needs the same config and skips the source
    images whose outputs all exist; ``train_aug.json`` then lists the outputs of
    the first ``limit`` source images.  Each image's GAN seed derives from
    ``cfg.seed`` and the image's position, so a resumed run writes what one whole
    run would.  Returns counts (``images_done``, ``skipped``, ``generated``,
    ``samples``) and ``seconds``.
    """
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    dataset = CorelDataset(data_dir)
    split = dataset.read("train")
    if split.report.num_skipped:
        log(split.report.summary())
    order = np.random.default_rng(cfg.seed).permutation(len(split.samples)) if shuffle else range(len(split.samples))
    samples = [split.samples[i] for i in order][:limit]
    if not samples:
        raise ValueError(f"{data_dir / 'train.json'}: no usable training samples")
    if out_dir.exists() and out_dir.resolve() == data_dir.resolve():
        raise ValueError(f"{out_dir}: the output directory must differ from the data directory")
    stems = [Path(s.image_name).stem for s in samples]
    if len(set(stems)) != len(stems):
        raise ValueError(f"{data_dir / 'train.json'}: image file stems are not unique, generated names would collide")
    annotations = out_dir / ANNOTATIONS
    if annotations.exists() and not resume:
        raise ValueError(f"{out_dir} already holds {ANNOTATIONS}; pass resume to continue it or choose another directory")
    device = resolve_device(device)

    image_dir = out_dir / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    previous: dict = {}
    if resume and (out_dir / RECORD).is_file():
        try:
            stored = json.loads((out_dir / RECORD).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{out_dir / RECORD}: cannot read the previous run's record ({exc})") from exc
        if isinstance(stored, dict) and (stored.get("config", cfg.to_dict()) != cfg.to_dict()
                                         or stored.get("shuffle", False) != shuffle):
            raise ValueError(f"{out_dir} was made with another WGAN config or image order ({out_dir / RECORD}); "
                             "resume with the same settings or choose another directory")
        previous = stored.get("images", {}) if isinstance(stored, dict) else {}
    shutil.copyfile(data_dir / "vocabulary.txt", out_dir / "vocabulary.txt")
    record = {"source": str(data_dir), "device": device, "config": cfg.to_dict(), "shuffle": shuffle, "images": {}}
    entries: list[dict] = []
    done = skipped = generated = 0
    start = time.perf_counter()
    bar = _Bar(len(samples), cfg.iterations) if show_progress else None
    if bar is not None:
        bar.progress.start()
    try:
        for index, sample in enumerate(samples):
            names = output_names(sample.image_name, cfg.per_image)
            stem = Path(sample.image_name).stem
            if resume and all((image_dir / n).is_file() for n in names):
                skipped += 1
                if stem in previous:
                    record["images"][stem] = previous[stem]
            else:
                seed = _image_seed(cfg.seed, index)
                image = load_image(sample.path)
                t0 = time.perf_counter()
                generator, train_log = train_single_image(image, replace(cfg, seed=seed), device=device,
                                                          progress=bar.step if bar is not None else None)
                for name, picture in zip(names, generate_images(generator, cfg.per_image, cfg, seed + 1)):
                    tmp = image_dir / (name + ".tmp")
                    picture.save(tmp, "JPEG", quality=JPEG_QUALITY)
                    os.replace(tmp, image_dir / name)
                seconds = time.perf_counter() - t0
                done += 1
                generated += len(names)
                record["images"][stem] = {
                    "source": sample.image_name, "seed": seed, "seconds": round(seconds, 3),
                    **{f"final_{k}": round(v[-1], 6) for k, v in train_log.items()},
                }
                log(f"{sample.image_name}: {len(names)} images in {seconds:.1f}s "
                    f"(W estimate {train_log['wasserstein'][-1]:.3f})")
            entries.extend({"image_name": n, "image_labels": list(sample.labels)} for n in names)
            record["seconds"] = round(time.perf_counter() - start, 3)
            _write_json(annotations, {"samples": entries})
            _write_json(out_dir / RECORD, record)
            if bar is not None:
                bar.advance()
    finally:
        if bar is not None:
            bar.progress.stop()
    return {"out_dir": str(out_dir), "images_done": done, "skipped": skipped, "generated": generated,
            "samples": len(entries), "seconds": round(time.perf_counter() - start, 3)}


def source_stem(generated_name: str) -> str | None:
    """The source image's stem of a generated file name (``1000_gan_2.jpeg`` -> ``1000``), else None."""
    stem = Path(generated_name).stem
    head, sep, k = stem.rpartition("_gan_")
    return head if sep and k.isdigit() else None


def read_augmented(augmented_dir: Path, vocabulary, exclude_sources: set[str], strict: bool = False):
    """The generated samples of ``corel-augment``'s output, minus those made from ``exclude_sources``
    (the stems of validation images: their offspring would leak the validation split into training).
    Returns (split, number excluded)."""
    from corel_annotate.runtime.dataset import CorelDataset, CorelSplit

    ds = CorelDataset(augmented_dir)
    if list(ds.vocabulary.labels) != list(vocabulary.labels):
        raise ValueError(f"{augmented_dir}/vocabulary.txt differs from the training data's vocabulary")
    if not ds.has_split("train_aug"):
        raise ValueError(f"{augmented_dir}: no train_aug.json (make it with corel-augment)")
    split = ds.read("train_aug", strict=strict)
    kept = [s for s in split.samples if source_stem(s.image_name) not in exclude_sources]
    return CorelSplit(split.name, kept, split.report), len(split.samples) - len(kept)
