"""The data a run trains on, prepared before any model exists: the splits read from a Corel-layout
folder, the validation split (re-derivable from the seed), targets and label sequences, generated
images joined in, and the datasets that feed images or cached features to the loop."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from corel_annotate.runtime.bundle.preprocess_config import PreprocessConfig
from corel_annotate.runtime.dataset import CorelDataset, CorelSplit
from corel_annotate.runtime.preprocessing import load_image, preprocess_file

from .augment import AugmentConfig, augment_image
from .config import SequenceConfig, TrainConfig
from .sequences import encode_sequences, label_rank, multi_hot

Log = Callable[[str], None]


@dataclass
class PreparedData:
    """Everything derived from the data directory before the model trains."""

    train: CorelSplit
    test: CorelSplit | None
    fit_idx: np.ndarray
    val_idx: np.ndarray
    targets: np.ndarray
    tokens: np.ndarray
    lengths: np.ndarray
    rank: tuple[int, ...]
    info: dict = field(default_factory=dict)

    def path_parts(self) -> list[list[Path]]:
        """The training photos, then the generated images (if any): cached separately, so adding or
        changing ``--augmented`` reuses the features of the photos."""
        paths = [s.path for s in self.train.samples]
        cut = len(paths) - self.info.get("augmented", {}).get("images", 0)
        return [part for part in (paths[:cut], paths[cut:]) if part]


def validation_split(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The held-out validation indices of ``train.json`` and the rest (both sorted), from the run's seed:
    the export's int8 accuracy check re-derives the same photos from the checkpoint."""
    perm = np.random.default_rng(seed).permutation(n)
    n_val = int(round(n * val_fraction))
    if val_fraction > 0 and n_val == 0:
        n_val = 1
    return np.sort(perm[:n_val]), np.sort(perm[n_val:])


def prepare_data(data_dir: Path, seq_cfg: SequenceConfig, train_cfg: TrainConfig, log: Log) -> tuple[CorelDataset, PreparedData]:
    ds = CorelDataset(data_dir)
    train = ds.read("train", strict=train_cfg.strict_data)
    log(train.report.summary())
    if not train.samples:
        raise ValueError(f"{data_dir}: no usable training samples")
    test = ds.read("test", strict=train_cfg.strict_data) if ds.has_split("test") else None
    if test is not None:
        log(test.report.summary())
    vocab = ds.vocabulary
    ids = train.label_ids(vocab)
    n = len(ids)
    val_idx, fit_idx = validation_split(n, train_cfg.val_fraction, train_cfg.seed)
    rank = label_rank(seq_cfg.ordering, [ids[i] for i in fit_idx], len(vocab))
    extra_info: dict = {}
    if train_cfg.augmented_dir:
        from .wgan import read_augmented

        val_stems = {Path(train.samples[i].image_name).stem for i in val_idx}
        generated, excluded = read_augmented(Path(train_cfg.augmented_dir), vocab, val_stems, train_cfg.strict_data)
        log(f"{generated.report.summary()}; {len(generated.samples)} generated images join the training images"
            + (f" ({excluded} made from validation images left out)" if excluded else ""))
        fit_idx = np.concatenate([fit_idx, np.arange(n, n + len(generated.samples))])
        ids = ids + generated.label_ids(vocab)
        train = CorelSplit(train.name, train.samples + generated.samples, train.report)
        extra_info = {"augmented": {"dir": train_cfg.augmented_dir, "images": len(generated.samples),
                                    "excluded_validation_sources": excluded}}
    enc = encode_sequences(ids, vocab, rank, seq_cfg.max_seq_len)
    if enc.truncated:
        log(f"{enc.truncated} training label sets have more than {seq_cfg.max_seq_len} labels; "
            f"their sequences keep the first {seq_cfg.max_seq_len} in {seq_cfg.ordering} order")
    info = {"train": train.report.to_dict(), "test": test.report.to_dict() if test else None,
            "fit_images": int(fit_idx.size), "val_images": int(val_idx.size), "truncated_sequences": enc.truncated,
            **extra_info}
    return ds, PreparedData(train, test, fit_idx, val_idx, multi_hot(ids, len(vocab)), enc.tokens, enc.lengths, rank, info)



class ImageDataset(Dataset):
    """Images for end-to-end training and their targets: a fresh random resized crop and flip per
    epoch when ``augment`` is given, otherwise the plain preprocessing with a random flip."""

    def __init__(self, paths: list[Path], preprocess: PreprocessConfig, targets: torch.Tensor, tokens: torch.Tensor,
                 lengths: torch.Tensor, augment: AugmentConfig | None) -> None:
        self.paths, self.preprocess, self.augment = paths, preprocess, augment
        self.targets, self.tokens, self.lengths = targets, tokens, lengths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        seed = int(torch.randint(0, 2**31 - 1, ()))
        if self.augment is not None:
            image = augment_image(load_image(self.paths[i], min_size=self.preprocess.decode_size), self.preprocess, self.augment, np.random.default_rng(seed))
        else:
            image = preprocess_file(self.paths[i], self.preprocess)
            if seed % 2:
                image = np.ascontiguousarray(image[:, :, ::-1])
        return torch.from_numpy(image), self.targets[i], self.tokens[i], self.lengths[i]


class ViewDataset(Dataset):
    """Cached features with augmented views: each item is one view, drawn anew every epoch, of a
    training image (view 0 is the plain preprocessing).  Draws use torch's seeded generator, so
    a resumed run draws the same views."""

    def __init__(self, views: list[np.ndarray], idx: np.ndarray, targets: torch.Tensor, tokens: torch.Tensor,
                 lengths: torch.Tensor) -> None:
        self.views, self.idx = views, idx
        self.targets, self.tokens, self.lengths = targets, tokens, lengths

    def __len__(self) -> int:
        return len(self.idx)

    def __getitem__(self, i: int):
        j = int(self.idx[i])
        feats = self.views[int(torch.randint(0, len(self.views), ()))][j]
        return torch.from_numpy(np.asarray(feats, dtype=np.float32)), self.targets[j], self.tokens[j], self.lengths[j]
