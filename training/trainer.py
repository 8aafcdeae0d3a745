"""The training loop: data, cached features, optimisation, validation, checkpoints, resume."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler, TensorDataset
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from corel_annotate.runtime.dataset import CorelDataset
from corel_annotate.runtime.bundle.preprocess_config import PreprocessConfig
from corel_annotate.runtime.bundle.scoring_config import ScoringConfig
from corel_annotate.runtime.evaluation.thresholds import balanced_threshold, tune_thresholds

from .augment import AugmentConfig
from .backbones import build_backbone
from .checkpoint import extra_tensors, load_checkpoint, save_checkpoint, versions
from .config import CheckpointConfig, DecodingConfig, ModelConfig, SequenceConfig, TrainConfig
from .data import ImageDataset, PreparedData, ViewDataset, prepare_data
from .loop import LossModule, train_batches
from .distributed import DistInfo, barrier, init_distributed, shutdown
from .evaluation import evaluate, predict_features
from .features import cached_features, compute_features, default_cache_dir
from .glove import label_embeddings
from .models.base import AnnotationModel
from .factory import create_model, model_class
from .sequences import multi_hot

Log = Callable[[str], None]


def last_path(out: Path) -> Path:
    """Where the last epoch (with optimizer state, for ``--resume``) is kept beside the best checkpoint."""
    return out.with_name(out.stem + ".last" + out.suffix)


def _progress(enabled: bool) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("{task.fields[status]}"), disable=not enabled)


def _device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available to PyTorch")
    return name


def train(data_dir: str | Path, out: str | Path, model_cfg: ModelConfig, seq_cfg: SequenceConfig,
          decode_cfg: DecodingConfig, train_cfg: TrainConfig, cache_dir: Path | None = None, resume: bool = False,
          log: Log = print, show_progress: bool = True, stop_after: int | None = None) -> CheckpointConfig:
    """Train ``model_cfg.method`` on a Corel-layout directory; write the best checkpoint to ``out``.

    Every epoch draws its batch order and dropout masks from ``seed + epoch``, so a run resumed
    from ``NAME.last.ckpt`` ends with the same weights as one never interrupted.  ``stop_after``
    ends the run after that many epochs as an interruption would (no test evaluation).
    Returns the best checkpoint's config (with its validation and test metrics)."""
    data_dir, out = Path(data_dir), Path(out)
    train_cfg.device = _device(train_cfg.device)
    dist_info = init_distributed(train_cfg.device)
    device = f"cuda:{dist_info.local_rank}" if train_cfg.device.startswith("cuda") and dist_info.enabled else train_cfg.device
    main_log: Log = log if dist_info.is_main else (lambda _msg: None)
    show = show_progress and dist_info.is_main
    try:
        return _train(data_dir, out, model_cfg, seq_cfg, decode_cfg, train_cfg, cache_dir or default_cache_dir(),
                      resume, main_log, show, dist_info, device, stop_after)
    finally:
        shutdown(dist_info)


@dataclass
class _Run:
    """What the phases of one training run share: its settings, then what each phase adds."""

    data_dir: Path
    out: Path
    model_cfg: ModelConfig
    seq_cfg: SequenceConfig
    decode_cfg: DecodingConfig
    train_cfg: TrainConfig
    cache_dir: Path
    log: Log
    show: bool
    dist: DistInfo
    device: str
    started: float = field(default_factory=time.perf_counter)
    ds: CorelDataset | None = None
    data: PreparedData | None = None
    model: AnnotationModel | None = None
    preprocess: PreprocessConfig | None = None
    weights_id: str = ""
    adapted: bool = False
    feats_all: np.ndarray | None = None
    views: list = field(default_factory=list)
    fixed_inputs: dict = field(default_factory=dict)
    ema: object | None = None
    """``--ema``: timm's ModelEmaV3 over the model; validated, selected and saved instead of the raw weights."""
    steps: int = 0


@dataclass
class _Validation:
    """The validation photos' head inputs for a given model: from the feature cache when the backbone is
    frozen (through any trainable top stages), recomputed through the current backbone when fine-tuning
    (features cached before training would no longer be the ones the head sees)."""

    run: _Run
    cached: torch.Tensor | None
    paths: list[Path]
    targets: np.ndarray

    @property
    def size(self) -> int:
        return len(self.paths)

    def inputs(self, model: AnnotationModel) -> torch.Tensor | None:
        if not self.paths:
            return None
        if self.cached is not None:
            return _head_inputs(model, self.cached)
        cfg = self.run.train_cfg
        return torch.from_numpy(compute_features(model, self.paths, self.run.preprocess, cfg.batch_size, self.run.device))


def _train(data_dir: Path, out: Path, model_cfg: ModelConfig, seq_cfg: SequenceConfig, decode_cfg: DecodingConfig,
           train_cfg: TrainConfig, cache_dir: Path, resume: bool, log: Log, show: bool, dist_info: DistInfo,
           device: str, stop_after: int | None) -> CheckpointConfig:
    """The phases in order: prepare the data, build the model, cache features, loaders and optimiser,
    the epochs, then the operating point and the test split."""
    run = _Run(data_dir, out, model_cfg, seq_cfg, decode_cfg, train_cfg, cache_dir, log, show, dist_info, device)
    torch.manual_seed(train_cfg.seed)
    np.random.seed(train_cfg.seed + dist_info.rank)
    _prepare(run)
    _build(run)
    _cache_features(run)
    loader, sampler, generator = _loader(run)
    optimizer, scheduler, wrapped = _optimiser(run, loader)
    ckpt = CheckpointConfig(model=run.model_cfg, sequence=run.seq_cfg, decode=run.decode_cfg, train=train_cfg,
                            vocabulary=list(run.ds.vocabulary.labels), preprocess=run.preprocess,
                            data={"dir": str(data_dir), **run.data.info, "world_size": dist_info.world_size},
                            versions=versions(),
                            scoring=None if run.model.is_sequence else ScoringConfig((0.5,) * len(run.ds.vocabulary)))
    start_epoch, best_score = 0, -1.0
    if resume:
        start_epoch, best_score = _resume(last_path(out), run, optimizer, scheduler, ckpt, log)
        run.steps = start_epoch * len(loader)
    paths = [s.path for s in run.data.train.samples]
    val = _Validation(run, None if run.feats_all is None else torch.from_numpy(
                          np.ascontiguousarray(run.feats_all[run.data.val_idx])),
                      [paths[i] for i in run.data.val_idx], run.data.targets[run.data.val_idx])
    for epoch in range(start_epoch, train_cfg.epochs):
        if stop_after is not None and epoch >= stop_after:
            return ckpt
        best_score = _epoch(run, epoch, loader, sampler, generator, optimizer, scheduler, wrapped, ckpt, val,
                            best_score)
    if dist_info.is_main:
        _finish(run, ckpt, val)
    barrier(dist_info)
    return ckpt


def _prepare(run: _Run) -> None:
    """Read and split the data; settle what depends on it (label count, sequence order and length)."""
    if run.train_cfg.threshold_tuning == "oof" and not run.model_cfg.is_sequence and run.train_cfg.val_fraction > 0:
        run.log(f"--threshold-tuning oof: no validation split; every training photo trains the final model "
                f"(the last epoch), and the thresholds come from {run.train_cfg.folds}-fold out-of-fold head scores")
        run.train_cfg.val_fraction = 0.0
    run.ds, run.data = prepare_data(run.data_dir, run.seq_cfg, run.train_cfg, run.log)
    run.seq_cfg.label_rank = run.data.rank
    run.decode_cfg = run.decode_cfg.replace(max_len=run.seq_cfg.max_seq_len,
                                            min_labels=min(run.decode_cfg.min_labels, run.seq_cfg.max_seq_len))
    run.model_cfg.num_labels = len(run.ds.vocabulary)


def _build(run: _Run) -> None:
    """The backbone, the method's model (through the registry and its hooks), which parts train."""
    cfg, train_cfg, vocab = run.model_cfg, run.train_cfg, run.ds.vocabulary
    backbone, info = build_backbone(cfg.backbone, cfg.backbone_weights)
    cfg.feature_dim = info.num_features
    run.preprocess = PreprocessConfig(image_size=train_cfg.image_size, mean=info.mean, std=info.std,
                                      decode=train_cfg.decode)
    run.weights_id = info.weights_id
    cls = model_class(cfg.method)
    extra: dict = {}
    if train_cfg.glove_path:
        glove = label_embeddings(train_cfg.glove_path, cls.embedding_words(vocab), seed=train_cfg.seed)
        run.log(glove.summary())
        cfg.glove, cfg.emb_size = True, glove.dim
        extra["embeddings"] = glove.vectors
        run.data.info["glove"] = {"missing": glove.missing, "fallback": glove.fallback}
    run.fixed_inputs = extra
    model = create_model(cfg, backbone, **head_inputs_for(run, run.data.fit_idx))
    model.set_backbone_frozen(train_cfg.freeze_backbone)
    if train_cfg.train_top and train_cfg.freeze_backbone:
        if model.has_stages():
            model.set_trainable_top(min(train_cfg.train_top, len(model.backbone.blocks)))
        else:
            run.log(f"{cfg.backbone} has no stages to split (not EfficientNet/MobileNet-style): "
                    "only the head trains (--train-top 0)")
            train_cfg.train_top = 0
    run.adapted = bool(train_cfg.backbone_from) and _adopt_backbone(model, Path(train_cfg.backbone_from), cfg,
                                                                     train_cfg, run.preprocess, run.data, run.log)
    run.model = model.to(run.device)


def head_inputs_for(run: _Run, fit_idx: np.ndarray) -> dict:
    """What the method's head is built from besides its config: label embeddings (GloVe) and whatever the
    method derives from the labels of the photos it trains on (ML-GCN's co-occurrence graph)."""
    all_ids = run.data.train.label_ids(run.ds.vocabulary)
    cls = model_class(run.model_cfg.method)
    return {**run.fixed_inputs, **cls.training_inputs(run.model_cfg, [all_ids[i] for i in fit_idx])}


def _cache_features(run: _Run) -> None:
    """With a frozen backbone: the plain and augmented views' features, from the cache or computed once
    (rank 0 first under torchrun, so the others read its cache)."""
    if not run.train_cfg.freeze_backbone:
        return
    parts = run.data.path_parts()
    augment = run.train_cfg.augment_config()
    args = (run.model, parts, run.preprocess, run.weights_id, run.cache_dir, run.train_cfg, run.device)
    with _progress(run.show) as bar:
        for turn in ((0,) if not run.dist.enabled else (0, 1)):
            if (run.dist.rank == 0) == (turn == 0):
                run.feats_all = _cached(bar, "features (train)", *args)
                run.views = [_cached(bar, f"augmented view {v}/{augment.views}", *args, augment, v)
                             for v in range(1, augment.views + 1)]
            barrier(run.dist)
    run.data.info["feature_shape"] = list(run.feats_all.shape[1:])


def _loader(run: _Run) -> tuple[DataLoader, DistributedSampler | None, torch.Generator]:
    """What an epoch iterates: head inputs (adopted backbone), cached views, cached features, or images."""
    data, train_cfg = run.data, run.train_cfg
    targets_t, tokens_t, lengths_t = (torch.from_numpy(a) for a in (data.targets, data.tokens, data.lengths))
    fit = torch.from_numpy(data.fit_idx)
    if run.adapted:
        # the adopted top stages are frozen: run them once over every cached view, then train the head alone
        t0 = time.perf_counter()
        dataset: Dataset = ViewDataset([_adopted_inputs(run.model, f) for f in [run.feats_all, *run.views]],
                                       data.fit_idx, targets_t, tokens_t, lengths_t)
        run.log(f"head inputs of {1 + len(run.views)} view(s) through the adopted top stages: "
                f"{time.perf_counter() - t0:.1f}s")
    elif train_cfg.freeze_backbone and run.views:
        dataset = ViewDataset([np.array(run.feats_all)] + [np.array(v) for v in run.views], data.fit_idx,
                              targets_t, tokens_t, lengths_t)
    elif train_cfg.freeze_backbone:
        feats_t = torch.from_numpy(np.array(run.feats_all))
        dataset = TensorDataset(feats_t[fit], targets_t[fit], tokens_t[fit], lengths_t[fit])
    else:
        augment = train_cfg.augment_config()
        paths = [s.path for s in data.train.samples]
        dataset = ImageDataset([paths[i] for i in data.fit_idx], run.preprocess, targets_t[fit], tokens_t[fit],
                               lengths_t[fit], augment if augment.views else None)
    sampler = DistributedSampler(dataset, shuffle=True, seed=train_cfg.seed) if run.dist.enabled else None
    generator = torch.Generator().manual_seed(train_cfg.seed)
    loader = DataLoader(dataset, batch_size=train_cfg.batch_size, shuffle=sampler is None, sampler=sampler,
                        num_workers=0 if train_cfg.freeze_backbone else train_cfg.workers, generator=generator,
                        drop_last=False)
    return loader, sampler, generator


def _optimiser(run: _Run, loader: DataLoader):
    """Adam over the head (and any trainable backbone stages), a one-cycle schedule, the loss module."""
    model, train_cfg = run.model, run.train_cfg
    groups = [{"params": model.head_parameters(), "lr": train_cfg.lr}]
    if model.trainable_backbone_parameters():
        groups.append({"params": model.trainable_backbone_parameters(), "lr": train_cfg.backbone_lr})
    optimizer = torch.optim.Adam(groups, weight_decay=train_cfg.weight_decay)
    total = train_cfg.epochs * max(1, len(loader))
    if total < 4:  # too few steps for a warm-up and an annealing phase: the peak rate throughout
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _step: 1.0)
    else:  # each phase at least two steps (OneCycleLR divides by a phase's length less one)
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=[g["lr"] for g in groups],
                                                        epochs=train_cfg.epochs, steps_per_epoch=max(1, len(loader)),
                                                        pct_start=min(max(train_cfg.pct_start, 2.0 / total),
                                                                      1.0 - 2.0 / total))
    wrapped: nn.Module = LossModule(model, from_images=not train_cfg.freeze_backbone, head_inputs=run.adapted,
                                    amp=train_cfg.amp)
    if train_cfg.ema > 0:
        from timm.utils import ModelEmaV3

        run.ema = ModelEmaV3(model, decay=train_cfg.ema, use_warmup=True)
    if run.dist.enabled:
        wrapped = DistributedDataParallel(wrapped, device_ids=[run.dist.local_rank] if run.device.startswith("cuda")
                                          else None)
    return optimizer, scheduler, wrapped


def _epoch(run: _Run, epoch: int, loader: DataLoader, sampler, generator: torch.Generator, optimizer, scheduler,
           wrapped: nn.Module, ckpt: CheckpointConfig, val: _Validation, best_score: float) -> float:
    """One epoch from its own seeds (so a resumed run matches), validation, the checkpoints; the best score.
    With ``--ema`` the weight average is what is validated and saved as the best checkpoint."""
    model, train_cfg, device = run.model, run.train_cfg, run.device

    def after_step() -> None:
        run.steps += 1
        if run.ema is not None:
            run.ema.update(model, step=run.steps)

    t0 = time.perf_counter()
    generator.manual_seed(train_cfg.seed * 1000 + epoch)
    torch.manual_seed(train_cfg.seed * 1000 + epoch + 1)
    if sampler is not None:
        sampler.set_epoch(epoch)
    with _progress(run.show) as bar:
        task = bar.add_task(f"epoch {epoch + 1}/{train_cfg.epochs}", total=len(loader), status="")
        mean_loss = train_batches(model, wrapped, loader, optimizer, scheduler, train_cfg.grad_clip, device,
                                  lambda loss: bar.update(task, advance=1, status=f"loss {loss:.4f}"), after_step)
    record = {"epoch": epoch + 1, "train_loss": mean_loss, "seconds": 0.0}
    kept = run.ema.module if run.ema is not None else model
    if run.dist.is_main:
        if val.size:
            metrics = evaluate(predict_features(kept, val.inputs(kept), ckpt.decode.greedy(), ckpt.thresholds),
                               val.targets)
            record["val"] = metrics.to_dict()
        record["seconds"] = round(time.perf_counter() - t0, 3)
        ckpt.history.append(record)
        score = record["val"]["per_class/f1"] if "val" in record else float(epoch)
        improved = score > best_score
        if improved:
            best_score = score
            ckpt.metrics["val"] = record.get("val", {})
            ckpt.metrics["best_epoch"] = epoch + 1
            save_checkpoint(run.out, ckpt, kept)
        ema = {"ema_state": {k: v.detach().cpu() for k, v in kept.state_dict().items()}} if run.ema is not None else {}
        save_checkpoint(last_path(run.out), ckpt, model, optimizer=optimizer.state_dict(),
                        scheduler=scheduler.state_dict(), epoch=epoch, best_score=best_score, **ema)
        val_text = (f"val per-class F1 {record['val']['per_class/f1']:.4f} per-image F1 "
                    f"{record['val']['per_image/f1']:.4f} N+ {record['val']['N+']}") if "val" in record else ""
        run.log(f"epoch {epoch + 1}/{train_cfg.epochs} loss {record['train_loss']:.4f}"
                f"{' ' + val_text + (' (best)' if improved else '') if val_text else ''} [{record['seconds']:.1f}s]")
    barrier(run.dist)
    return best_score


def _finish(run: _Run, ckpt: CheckpointConfig, val: _Validation) -> None:
    """The best checkpoint's operating point (score-based methods) and its test-split figures."""
    ckpt.metrics["train_seconds"] = round(time.perf_counter() - run.started, 2)
    if run.train_cfg.threshold_tuning == "oof" and not run.model.is_sequence:
        _oof_thresholds(run, ckpt)
    else:
        _tune_thresholds(run.out, run.model, ckpt, val, run.train_cfg,
                         int(run.data.targets[run.data.fit_idx].sum(axis=1).max()), run.log)
    _final_test(run.out, run.model, ckpt, run.data, run.ds, run.preprocess, run.weights_id, run.cache_dir,
                run.train_cfg, run.device, run.log, run.show)


def _cached(bar: Progress, label: str, model: AnnotationModel, parts: list[list[Path]], preprocess: PreprocessConfig,
            weights_id: str, cache_dir: Path, train_cfg: TrainConfig, device: str, augment: AugmentConfig | None = None,
            view: int = 0) -> np.ndarray:
    """One feature set (plain or an augmented view) over the concatenated ``parts``, each part cached on
    its own, with a progress bar saying whether it was cached."""
    task = bar.add_task(label, total=sum(len(p) for p in parts), status="")
    t0 = time.perf_counter()
    found = [cached_features(model, p, preprocess, weights_id, cache_dir, train_cfg.batch_size, device,
                             lambda k: bar.advance(task, k), augment, view) for p in parts]
    hit = all(h for _, h in found)
    bar.update(task, completed=sum(len(p) for p in parts), status="cached" if hit else f"{time.perf_counter() - t0:.1f}s")
    return found[0][0] if len(found) == 1 else np.concatenate([f for f, _ in found])


def _adopt_backbone(model: AnnotationModel, source: Path, model_cfg: ModelConfig, train_cfg: TrainConfig,
                    preprocess: PreprocessConfig, data: PreparedData, log: Log) -> bool:
    """``--backbone-from``: take the whole backbone (its trained top stages included) from another checkpoint
    of the same data, then freeze it, so only this method's head trains (the two-stage recipe of RIA and
    SR-CNN-RNN: adapt the CNN to the labels first, then train the decoder on its features)."""
    from .checkpoint import load_checkpoint

    if not train_cfg.freeze_backbone:
        raise ValueError("--backbone-from trains the head on a frozen backbone; it cannot go with --finetune")
    src, payload = load_checkpoint(source)
    mine = {"backbone": model_cfg.backbone, "backbone weights": model_cfg.backbone_weights,
            "preprocessing": preprocess.to_dict(), "--train-top": train_cfg.train_top, "--seed": train_cfg.seed,
            "--val-fraction": train_cfg.val_fraction, "training images": data.info["fit_images"]}
    theirs = {"backbone": src.model.backbone, "backbone weights": src.model.backbone_weights,
              "preprocessing": src.preprocess.to_dict(), "--train-top": src.train.train_top, "--seed": src.train.seed,
              "--val-fraction": src.train.val_fraction, "training images": src.data.get("fit_images")}
    for key, value in mine.items():
        if json.dumps(theirs[key], sort_keys=True) != json.dumps(value, sort_keys=True):
            raise ValueError(f"{source}: --backbone-from needs a checkpoint trained with the same {key} "
                             f"(it has {theirs[key]!r}, this run {value!r}); a different split would leak "
                             "validation photos and a different bottom would not match the feature cache")
    prefix = "backbone."
    state = {k[len(prefix):]: v for k, v in payload["state_dict"].items() if k.startswith(prefix)}
    model.backbone.load_state_dict(state)
    for p in model.backbone.parameters():
        p.requires_grad_(False)
    data.info["backbone_from"] = {"checkpoint": str(source), "method": src.model.method,
                                  "best_epoch": src.metrics.get("best_epoch")}
    log(f"backbone from {source} ({src.model.method}, {src.model.backbone}); only the {model_cfg.method} head trains")
    return True


def _adopted_inputs(model: AnnotationModel, cached: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Cached bottom-stage features through the frozen top stages, stored as float16 head inputs."""
    return np.concatenate([
        _head_inputs(model, torch.from_numpy(np.array(cached[i:i + batch_size], dtype=np.float32))).numpy()
        .astype(np.float16) for i in range(0, len(cached), batch_size)])


@torch.no_grad()
def _head_inputs(model: AnnotationModel, feats: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Cached features to head inputs: unchanged, or through the trained top stages (eval mode)."""
    if not model.top_stages:
        return feats
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        return torch.cat([model.head_inputs_from_cache(feats[i:i + batch_size].to(device)).cpu()
                          for i in range(0, feats.shape[0], batch_size)])
    finally:
        model.train(was_training)


def _resume(last: Path, run: _Run, optimizer, scheduler, ckpt: CheckpointConfig, log: Log) -> tuple[int, float]:
    if not last.is_file():
        raise ValueError(f"{last}: nothing to resume (no last-epoch checkpoint)")
    saved, payload = load_checkpoint(last)
    if saved.model.method != ckpt.model.method or saved.vocabulary != ckpt.vocabulary:
        raise ValueError(f"{last}: was trained with another method or vocabulary; cannot resume")
    if (run.ema is not None) != ("ema_state" in payload):
        raise ValueError(f"{last}: was trained {'with' if 'ema_state' in payload else 'without'} --ema; "
                         "resume with the same setting")
    run.model.load_state_dict(payload["state_dict"])
    if run.ema is not None:
        run.ema.module.load_state_dict(payload["ema_state"])
    optimizer.load_state_dict(payload["optimizer"])
    scheduler.load_state_dict(payload["scheduler"])
    ckpt.history[:] = saved.history
    ckpt.metrics.update(saved.metrics)
    epoch = int(payload["epoch"]) + 1
    log(f"resuming {last} after epoch {epoch}")
    return epoch, float(payload["best_score"])


def _tune_thresholds(out: Path, model: AnnotationModel, ckpt: CheckpointConfig, val: _Validation,
                     train_cfg: TrainConfig, max_labels: int, log: Log) -> None:
    """Score-based methods: the best checkpoint's operating point, tuned on the validation split
    (``balanced``: one threshold, at most ``max_labels`` and at least one label per image; ``f1``/``mcc``:
    one threshold per label)."""
    if model.is_sequence or not val.size or train_cfg.threshold_tuning == "none" or not out.exists():
        return
    best, payload = load_checkpoint(out)
    model.load_state_dict(payload["state_dict"])
    scores = predict_features(model, val.inputs(model), best.decode.greedy()).scores
    val_targets = val.targets
    if train_cfg.threshold_tuning == "balanced":
        threshold = balanced_threshold(scores, val_targets, max_labels, 1)
        best.scoring = ScoringConfig((threshold,) * scores.shape[1], max_labels, 1)
        summary = f"{threshold:.3f} for every label, at most {max_labels} and at least 1 label per image"
    else:
        tuned = tuple(float(t) for t in tune_thresholds(scores, val_targets, train_cfg.threshold_tuning))
        best.scoring = replace(best.scoring, thresholds=tuned) if best.scoring is not None else ScoringConfig(tuned)
        summary = " ".join(f"{t:.3f}" for t in tuned)
    ckpt.scoring = best.scoring
    save_checkpoint(out, best, model)
    log(f"thresholds ({train_cfg.threshold_tuning} on {val.size} validation images): {summary}")


def _oof_thresholds(run: _Run, ckpt: CheckpointConfig) -> None:
    """``--threshold-tuning oof``: cross-fit the head over every training photo (:mod:`.cross_fit`) and set
    per-label thresholds from the out-of-fold scores, each shrunk toward the balanced one by how many
    positives the label has, with the label cap and floor.  The scores are stored in the checkpoint
    (float16, ``oof_scores``), so the exporter can tune the label memory on every training photo."""
    from .cross_fit import cross_fit_scores
    from corel_annotate.runtime.evaluation.metrics import annotation_metrics, label_sets_to_matrix
    from corel_annotate.runtime.scoring import select_labels
    from corel_annotate.runtime.evaluation.thresholds import shrunk_thresholds

    if not run.out.exists():
        return
    best, payload = load_checkpoint(run.out)
    model = run.model
    model.load_state_dict(payload["state_dict"])
    data, train_cfg = run.data, run.train_cfg
    t0 = time.perf_counter()
    if run.feats_all is not None:
        views = [_head_inputs(model, torch.from_numpy(np.array(v, dtype=np.float32))).numpy()
                 for v in [run.feats_all, *run.views]]
    else:
        paths = [s.path for s in data.train.samples]
        views = [compute_features(model, paths, run.preprocess, train_cfg.batch_size, run.device)]
    backbone = model.backbone

    def make_head(fit_idx: np.ndarray) -> AnnotationModel:
        head = create_model(run.model_cfg, backbone, **head_inputs_for(run, fit_idx))
        for p in head.backbone.parameters():
            p.requires_grad_(False)
        return head

    targets_t, tokens_t, lengths_t = (torch.from_numpy(a) for a in (data.targets, data.tokens, data.lengths))
    with _progress(run.show) as bar:
        task = bar.add_task(f"cross-fitting ({train_cfg.folds} folds)", total=train_cfg.folds * train_cfg.epochs,
                            status="")
        fit = cross_fit_scores(make_head, views, targets_t, tokens_t, lengths_t, train_cfg, ckpt.decode, run.device,
                               run.log, lambda: bar.advance(task))
    real = len(data.train.samples) - data.info.get("augmented", {}).get("images", 0)  # not generated images
    # the thresholds come from the scores as stored (float16), so they can be refitted from the checkpoint
    # exactly: fitted on the float32 scores, a near-tie could pick another cut on another CPU
    stored = fit.scores[:real].astype(np.float16)
    scores, targets = stored.astype(np.float32), data.targets[:real]
    top_k = int(targets.sum(axis=1).max())
    thresholds = shrunk_thresholds(scores, targets, top_k, 1)
    m = annotation_metrics(targets.astype(np.uint8),
                           label_sets_to_matrix(select_labels(scores, thresholds, top_k, 1), targets.shape[1]), scores)
    best.scoring = ScoringConfig(tuple(float(t) for t in thresholds), top_k, 1)
    best.metrics["oof"] = {"folds": train_cfg.folds, "photos": real,
                           "seconds": round(time.perf_counter() - t0, 2), **m.to_dict()}
    ckpt.scoring = best.scoring
    ckpt.metrics["oof"] = best.metrics["oof"]
    save_checkpoint(run.out, best, model, oof_scores=torch.from_numpy(stored))
    run.log(f"thresholds (shrunk per label, from {train_cfg.folds}-fold out-of-fold scores of {real} "
            f"training photos; at most {top_k} and at least 1 label per photo): out-of-fold per-class F1 "
            f"{m.per_class_f1:.4f}, per-image F1 {m.per_image_f1:.4f}, N+ {m.n_plus} "
            f"[{time.perf_counter() - t0:.1f}s]")


def _final_test(out: Path, model: AnnotationModel, ckpt: CheckpointConfig, data: PreparedData, ds: CorelDataset,
                preprocess: PreprocessConfig, weights_id: str, cache_dir: Path, train_cfg: TrainConfig, device: str,
                log: Log, show: bool) -> None:
    """Evaluate the best checkpoint on the test split (never used for selection) and store the figures in it."""
    if data.test is None or not data.test.samples:
        return
    best, payload = load_checkpoint(out)
    model.load_state_dict(payload["state_dict"])
    paths = [s.path for s in data.test.samples]
    if train_cfg.freeze_backbone:
        with _progress(show) as bar:
            feats = _cached(bar, "features (test)", model, [paths], preprocess, weights_id, cache_dir, train_cfg, device)
    else:
        feats = compute_features(model, paths, preprocess, train_cfg.batch_size, device)
    feats_t = _head_inputs(model, torch.from_numpy(np.array(feats)))
    targets = multi_hot(data.test.label_ids(ds.vocabulary), len(ds.vocabulary))
    metrics = evaluate(predict_features(model, feats_t, ckpt.decode.greedy(), best.thresholds, top_k=best.top_k,
                                        min_labels=best.min_labels), targets)
    best.metrics["test"] = metrics.to_dict()
    best.metrics["train_seconds"] = ckpt.metrics["train_seconds"]
    if model.is_sequence and ckpt.decode.beam_width > 1:
        beam = evaluate(predict_features(model, feats_t, ckpt.decode), targets)
        best.metrics[f"test_beam{ckpt.decode.beam_width}"] = beam.to_dict()
    save_checkpoint(out, best, model, **extra_tensors(payload))
    ckpt.metrics.update(best.metrics)
    log(f"test split ({len(paths)} images), best epoch {best.metrics.get('best_epoch')}:\n{metrics.format_table()}")
