"""``corel-bench``: latency side by side with the hardware limit next to it, and accuracy of every method."""
from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape

from .backbones import DEFAULT_CANDIDATES

console = Console(stderr=True, soft_wrap=True)
app = typer.Typer(add_completion=False, help=__doc__, no_args_is_help=False)


def _ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a comma-separated list of integers") from None
    if not values or min(values) < 1:
        raise typer.BadParameter("values must be positive integers")
    return values


def _default_model(out_dir: Path, data: Optional[Path], method: str, epochs: int) -> tuple[Path, Path]:
    """Train ``method`` on ``data`` (or on a synthetic dataset made in ``out_dir``) with cached features."""
    from corel_annotate.training.config import DecodingConfig, ModelConfig, SequenceConfig, TrainConfig
    from corel_annotate.training.synth import SynthConfig, generate
    from corel_annotate.training.trainer import train

    if data is None:
        data = out_dir / "synthetic-data"
        generate(data, SynthConfig(images=500, labels=12, image_size=160, seed=0))
    checkpoint = out_dir / f"{method}.ckpt"
    if not checkpoint.exists():
        console.print(f"training {method} on {data} ({epochs} epochs, frozen backbone)", highlight=False, markup=False)
        train(data, checkpoint, ModelConfig(method=method, num_labels=0), SequenceConfig(), DecodingConfig(),
              TrainConfig(epochs=epochs), cache_dir=out_dir / "feature-cache", log=lambda _m: None,
              show_progress=False)
    return checkpoint, data


@app.command("latency")
def latency(
    checkpoint: Optional[Path] = typer.Option(None, help="Checkpoint to measure (default: train one on --data)."),
    data: Optional[Path] = typer.Option(None, help="Corel-layout directory: photos come from its test split "
                                        "(default: a synthetic dataset made in --out-dir)."),
    method: str = typer.Option("attention", help="Method trained when no --checkpoint is given."),
    epochs: int = typer.Option(10, help="Epochs for that training."),
    out_dir: Path = typer.Option(Path("bench-out"), help="Bundles, results (latency.json/.md/.png) and scratch files."),
    batch_sizes: str = typer.Option("1,8,32", help="Comma-separated batch sizes."),
    beams: str = typer.Option("1,3,10", help="Comma-separated beam widths for end-to-end timing (1 = greedy)."),
    precisions: str = typer.Option("fp32,fp16,int8", help="Bundles to build and measure."),
    images: int = typer.Option(64, help="Photos used for timing and for the corel-infer throughput run."),
    repeats: int = typer.Option(5, help="Timed runs per measurement and round."),
    warmup: int = typer.Option(2, help="Untimed runs before each measurement in each round."),
    rounds: int = typer.Option(3, help="Rounds; each times every variant in turn, so machine noise falls on all alike."),
    threads: int = typer.Option(0, help="onnxruntime and PyTorch threads (0: their defaults)."),
    torch_eager: bool = typer.Option(True, "--torch/--no-torch", help="Include the PyTorch eager rows."),
    accuracy: bool = typer.Option(True, "--accuracy/--no-accuracy", help="corel-eval every bundle on the test split."),
    openvino: bool = typer.Option(True, "--openvino/--no-openvino", help="Also run every bundle on OpenVINO (fp32, "
                                  "and bf16 where the CPU has it) when it is installed."),
    float_input: bool = typer.Option(True, "--float-input/--no-float-input", help="Also time the fp32 bundle "
                                     "exported with the normalised float32 input of format 3 (corel-export "
                                     "--input-dtype float32), on onnxruntime and OpenVINO: pixel input, side by side."),
    photo_size: str = typer.Option("native", help="Photo size for the end-to-end rows: native (the data set's "
                                   "photos) or WIDTHxHEIGHT (the test photos made into camera files of that size, "
                                   "e.g. 4032x3024, see --jpeg-mb); with a camera size the fp32 bundle is also "
                                   "timed decoding every pixel (the path before draft decoding)."),
    jpeg_mb: float = typer.Option(3.5, help="With a camera --photo-size: target MB per file, reached with "
                                  "sensor-like noise as a camera's files are (0: the smooth upscale, about 0.7 MB "
                                  "at 12 MP, which no camera writes)."),
    jpeg_encoding: str = typer.Option("baseline", help="With a camera --photo-size: baseline, progressive or mixed "
                                      "(alternately); every fourth file is stored sideways with an EXIF orientation."),
) -> None:
    """One run: PyTorch eager, the runtime on fp32/fp16/int8 bundles and TensorRT where installed; encoder,
    decoder step and end-to-end (JPEG bytes to labels; greedy, beam 3, beam 10) latency at each batch size;
    the encoder's FLOPs against the measured float32 matmul peak; corel-infer throughput."""
    import numpy as np
    import torch

    from corel_annotate.export.bundle import export_bundle
    from corel_annotate.runtime.dataset import CorelDataset
    from corel_annotate.runtime.evaluation.runner import evaluate_bundle

    from .flops import graph_flops, matmul_peak
    from .camera_files import camera_files, describe
    from .latency import RuntimeVariant, TorchVariant, bench_variants, cpu_count, infer_throughput, stage_times
    from .report import write
    from .tensorrt_rows import tensorrt_rows

    batch_list, beam_list = _ints(batch_sizes), _ints(beams)
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        if checkpoint is None:
            checkpoint, data = _default_model(out_dir, data, method, epochs)
        from corel_annotate.training.checkpoint import load_checkpoint

        cfg, _ = load_checkpoint(checkpoint)
        data = data or Path(cfg.data.get("dir", ""))
        samples = CorelDataset(data).read("test" if CorelDataset(data).has_split("test") else "train").samples
    except ValueError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
        raise typer.Exit(2)
    paths = [s.path for s in samples[:images]]
    camera = None
    if photo_size != "native":
        spec = _camera_spec(photo_size, jpeg_mb, 92, jpeg_encoding)
        camera = spec.size
        console.print(f"writing {len(paths)} camera files ({spec.folder_name})", highlight=False, markup=False)
        try:
            paths = camera_files(paths, spec, out_dir)
        except ValueError as exc:
            console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
            raise typer.Exit(2)
    jpegs = [p.read_bytes() for p in paths]
    preprocess = cfg.preprocess
    bundles = {}
    for precision in [p.strip() for p in precisions.split(",") if p.strip()]:
        target = out_dir / f"{checkpoint.stem}.{precision}.bundle"
        console.print(f"exporting {precision} bundle {target}", highlight=False, markup=False)
        export_bundle(checkpoint, target, precision=precision, force=True, log=lambda _m: None)
        bundles[precision] = target
    float_bundle = None
    if float_input and "fp32" in bundles:
        float_bundle = out_dir / f"{checkpoint.stem}.fp32-float-input.bundle"
        console.print(f"exporting fp32 bundle with float32 input {float_bundle}", highlight=False, markup=False)
        export_bundle(checkpoint, float_bundle, force=True, input_dtype="float32", log=lambda _m: None)
    torch.set_num_threads(threads or torch.get_num_threads())
    console.print("measuring the float32 matmul peak", highlight=False, markup=False)
    hardware = matmul_peak(threads)
    from .hardware import machine

    result = {"machine": machine().to_dict(), "checkpoint": str(checkpoint), "method": cfg.model.method, "backbone": cfg.model.backbone,
              "image_size": preprocess.image_size, "cpu_count": cpu_count(), "threads": threads,
              "torch_threads": torch.get_num_threads(), "hardware": hardware,
              "encoder_gflops": graph_flops(bundles.get("fp32", next(iter(bundles.values()))) / "encoder.onnx") / 1e9,
              "rows": [], "command": _command("latency"), "photo_size": photo_size,
              "photo_bytes_median": float(np.median([len(j) for j in jpegs])), "files": describe(paths)}
    log = lambda m: console.print(m, highlight=False, markup=False)
    variants = []
    if torch_eager:
        variants.append(TorchVariant(checkpoint, threads))
    variants += [RuntimeVariant(f"runtime-{p}", b, threads=threads) for p, b in bundles.items()]
    if float_bundle:
        variants.append(RuntimeVariant("runtime-fp32-float-input", float_bundle, threads=threads))
    if openvino:
        try:
            from corel_annotate.runtime.engines.openvino_session import cpu_precisions

            engine_precisions = cpu_precisions()
        except ValueError as exc:
            console.print(f"OpenVINO rows left out: {exc}", highlight=False, markup=False)
            engine_precisions = []
        for p, b in bundles.items():
            for ep in engine_precisions if p == "fp32" else ["fp32"][:bool(engine_precisions)]:
                name = f"openvino-{p}" + ("" if p != "fp32" or ep == "fp32" else f"-{ep}")
                variants.append(RuntimeVariant(name.replace("fp32-bf16", "bf16"), b, device="openvino",
                                               threads=threads, precision=ep))
                if p == "fp32" and variants[-1].is_sequence:   # the step on OpenVINO too: the choice, side by side
                    variants.append(RuntimeVariant(variants[-1].name + "-openvino-step", b, device="openvino",
                                                   threads=threads, precision=ep, step_device="openvino"))
                if p == "fp32" and float_bundle:   # the same engine on the normalised float32 input
                    variants.append(RuntimeVariant(name.replace("fp32-bf16", "bf16") + "-float-input", float_bundle,
                                                   device="openvino", threads=threads, precision=ep))
    if camera and "fp32" in bundles:
        variants.append(RuntimeVariant("runtime-fp32-full-decode", bundles["fp32"], threads=threads, decode="full"))
    console.print("timing the stages of one photo (decode, resize, encoder, decoder)", highlight=False, markup=False)
    result["stages"] = {v.name: stage_times(v, jpegs[:16]) for v in variants if isinstance(v, RuntimeVariant)}
    result["rows"] += [r.to_dict() for r in bench_variants(variants, jpegs, batch_list, beam_list, repeats,
                                                           warmup, threads, log, rounds, paths)]
    result["rows"] += tensorrt_rows(checkpoint, out_dir, jpegs, batch_list, beam_list, repeats, warmup, log)
    if "fp32" in bundles:
        fp32_rows = [r for r in result["rows"] if r["variant"] == "runtime-fp32"]
        best = min(fp32_rows, key=lambda r: r["encoder_ms"]["median"])
        folder = out_dir / "infer-images"
        folder.mkdir(exist_ok=True)
        copies = max(1, -(-8 * best["batch"] // len(jpegs)))
        for k in range(copies):
            for p, j in zip(paths, jpegs):
                (folder / f"{k}_{p.name}").write_bytes(j)
        runs = [("infer", None, "cpu", "fp32")]
        if camera:
            runs += [("infer_full_decode", "full", "cpu", "fp32"), ("infer_default", None, "auto", "auto")]
        for key, decode, device, precision in runs:
            inf = infer_throughput(bundles["fp32"], folder, best["batch"], threads, decode, device, precision)
            inf["encoder_bound_images_per_second"] = 1000.0 / best["encoder_ms"]["median"]
            inf["fraction_of_encoder_bound"] = inf["images_per_second"] / inf["encoder_bound_images_per_second"]
            result[key] = inf
    if accuracy:

        result["accuracy"] = {v.name: evaluate_bundle(v.annotator, data).metrics.to_dict()
                              for v in variants if isinstance(v, RuntimeVariant) and not v.name.endswith("full-decode")}
    used = [*bundles, *(["bf16"] if "bf16" in engine_precisions else [])] if openvino else list(bundles)
    result["machine"]["precision"] = "per row: " + ", ".join(dict.fromkeys(used)) + \
        (" (pytorch-eager: fp32)" if torch_eager else "")
    for path in write(result, out_dir):
        console.print(f"wrote {path}", highlight=False, markup=False)


def _bundles_precision(bundles: list[Path]) -> str:
    """The precision of the bundles a bench ran: one word when they agree, else per bundle."""
    from .hardware import bundle_precision

    each = {b.name: bundle_precision(b) for b in bundles}
    return next(iter(each.values())) if len(set(each.values())) == 1 else \
        "per bundle: " + ", ".join(f"{k} {v}" for k, v in each.items())


def _overrides(**values) -> dict:
    """The TrainConfig fields given on the command line (None: corel-train's default)."""
    return {k: v for k, v in values.items() if v is not None}


def _command(name: str) -> str:
    return f"corel-bench {name} " + shlex.join(sys.argv[2:]) if len(sys.argv) > 1 else ""


@app.command("accuracy")
def accuracy_cmd(
    data: Optional[Path] = typer.Option(None, help="Corel-layout directory (images/, train.json, test.json, "
                                        "vocabulary.txt). Default: a synthetic dataset made in --out-dir."),
    out_dir: Path = typer.Option(Path("bench-out/accuracy"), help="Checkpoints, bundles and the results "
                                 "(accuracy.json/.md/.png)."),
    glove: Optional[Path] = typer.Option(None, help="GloVe text file for ml-gcn's label embeddings "
                                         "(without it they are trainable)."),
    rows: str = typer.Option("", help="Comma-separated rows to run (default all: "
                             "cnn-bce,cnn-focal,cnn-asl,ml-gcn-asl,ria,sr-cnn-rnn,attention,attention-mla)."),
    preset: str = typer.Option("fast", help="corel-train's --preset: the backbone and input size."),
    epochs: Optional[int] = typer.Option(None, help="Training epochs (default: corel-train's)."),
    image_size: Optional[int] = typer.Option(None, help="Input size (default: the preset's)."),
    augment_views: Optional[int] = typer.Option(None, help="Cached augmented views per photo (default: "
                                                "corel-train's; 0 for the ablation without augmentation)."),
    train_top: Optional[int] = typer.Option(None, help="Backbone stages trained on the cache (default: "
                                            "corel-train's; 0 trains the heads only)."),
    seed: Optional[int] = typer.Option(None, help="Training seed (default: corel-train's)."),
    cache_dir: Optional[Path] = typer.Option(None, help="Feature cache (default: corel-train's)."),
    latency_images: int = typer.Option(50, help="Test photos timed one by one, JPEG file to labels."),
    reuse: bool = typer.Option(False, "--reuse", help="Keep checkpoints already finished in --out-dir "
                               "instead of training them again."),
    probe: bool = typer.Option(True, "--probe/--no-probe", help="Add the linear-probe baseline row."),
    two_stage: bool = typer.Option(True, "--two-stage/--one-stage", help="Two-stage: cnn-asl trains first and "
                                   "every other row trains only its head on cnn-asl's frozen backbone "
                                   "(corel-train --backbone-from). One-stage: every row trains its own top stages."),
    head_epochs: Optional[int] = typer.Option(None, help="Two-stage: epochs of the head-only rows (default: "
                                              "corel-train's with --backbone-from)."),
) -> None:
    """Train every method with corel-train's defaults, export each, evaluate each through the runtime and
    write the reference's table (per-class and per-image P/R/F1, N+, mAP, s/epoch, ms/img) with a chart.

    Exit codes: 0 done, 2 bad input."""
    from corel_annotate.training.features import default_cache_dir
    from corel_annotate.training.synth import SynthConfig, generate

    from corel_annotate.training.config import HEAD_ONLY_EPOCHS, resolve_preset

    from .accuracy import run_accuracy, select_entries, write

    log = lambda m: console.print(m, highlight=False, markup=False)
    try:
        backbone, image_size = resolve_preset(preset, None, image_size)
        entries = select_entries([r.strip() for r in rows.split(",") if r.strip()])
        if data is None:
            data = out_dir / "synthetic-data"
            if not (data / "test.json").is_file():
                generate(data, SynthConfig(images=400, labels=10, image_size=160, seed=0))
        overrides = _overrides(epochs=epochs, image_size=image_size, augment_views=augment_views, train_top=train_top,
                               seed=seed)
        result = run_accuracy(data, out_dir, entries, overrides, glove, cache_dir or default_cache_dir(),
                              latency_images, reuse, probe, log, backbone,
                              (head_epochs or HEAD_ONLY_EPOCHS) if two_stage else None)
    except ValueError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
        raise typer.Exit(2)
    for path in write(result, out_dir, command=_command("accuracy")):
        log(f"wrote {path}")


@app.command("memory")
def memory_cmd(
    checkpoint: list[Path] = typer.Option(..., "--checkpoint", "-c", help="Checkpoint (repeat for several); its "
                                          "training photos must be on this machine (the memory is built from them)."),
    data: Path = typer.Option(..., help="Corel-layout directory whose test split scores both bundles."),
    out_dir: Path = typer.Option(Path("bench-out/memory"), help="Bundles and results (memory.json/.md)."),
    latency_photos: int = typer.Option(50, help="Test photos timed one by one, JPEG file to labels."),
    rounds: int = typer.Option(3, help="Alternating timing rounds."),
) -> None:
    """Export each checkpoint with and without its label memory, score both bundles on the test split through
    the runtime (with the per-label view) and time both photo by photo in alternating rounds.

    Exit codes: 0 done, 2 bad input."""
    from .memory_bench import run_memory, write

    _run_and_write(lambda log: run_memory(checkpoint, data, out_dir, latency_photos, rounds, _command("memory"), log),
                   write, out_dir)


def _run_and_write(run, write, out_dir: Path) -> None:
    """A bench's run (given the log) and its result files; a ValueError is one red line and exit code 2."""
    log = lambda m: console.print(m, highlight=False, markup=False)
    try:
        result = run(log)
    except ValueError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
        raise typer.Exit(2)
    for path in write(result, out_dir):
        log(f"wrote {path}")


@app.command("memory-variants")
def memory_variants_cmd(
    bundle: Path = typer.Option(..., help="A bundle with a label memory (corel-export's default)."),
    data: Path = typer.Option(..., help="Corel-layout directory with the bundle's vocabulary; its test split is scored."),
    out_dir: Path = typer.Option(Path("bench-out/memory-variants"), help="Results (memory-variants.json/.md)."),
) -> None:
    """Score the bundle's label memory alone on the test split, as stored (plain K nearest photos), with
    2PKNN's per-label neighbourhoods, and with its keys projected to 64, 128 and 256 dimensions (PCA);
    settings chosen on the stored photos' leave-one-out scores.

    Exit codes: 0 done, 2 bad input."""
    from .memory_variants import run_variants, write

    _run_and_write(lambda log: run_variants(bundle, data, _command("memory-variants"), log), write, out_dir)


@app.command("tags")
def tags_cmd(
    images: int = typer.Option(1000, help="Generated photos to tag with each library."),
    out_dir: Path = typer.Option(Path("bench-out/tags"), help="Results (tags.json/.md)."),
) -> None:
    """Tags per second: XMP sidecars written with exiftool (one stay-open process, as corel-infer
    --write-tags does) and with pyexiv2, each read back by the other library; tags embedded in the photos
    (IPTC + XMP), read back by pyexiv2; txt captions for scale.

    Exit codes: 0 done, 2 bad input."""
    from .tags import run_tags, write

    _run_and_write(lambda log: run_tags(images, out_dir, _command("tags"), log), write, out_dir)


@app.command("new-label")
def new_label_cmd(
    data: Path = typer.Option(..., help="Corel-layout directory (its train and test splits)."),
    backbone_from: Optional[Path] = typer.Option(None, help="A cnn-asl checkpoint of --data whose adapted backbone "
                                                 "the head trains on (corel-train --backbone-from); without it, "
                                                 "corel-train's defaults and --train-args."),
    out_dir: Path = typer.Option(Path("bench-out/new-label"), help="Data directories, checkpoint, bundles, results."),
    label: Optional[str] = typer.Option(None, help="The label to hold out (default: one with 25-80 training photos "
                                        "that never stands alone, with the most test photos)."),
    shots: str = typer.Option("5,10,20", help="Comma-separated counts of its photos to add."),
    train_args: str = typer.Option("", help="Extra corel-train options, as one string (e.g. the backbone "
                                   "checkpoint's --augment-views and --cache-dir)."),
) -> None:
    """Hold one label out of training, then add N of its photos with corel-memory add, and measure that label on
    the test split next to the others.

    Exit codes: 0 done, 2 bad input."""
    from .new_label import run_new_label, write

    counts, extra = _ints(shots), shlex.split(train_args)
    _run_and_write(lambda log: run_new_label(data, backbone_from, out_dir, label, counts, extra,
                                             _command("new-label"), log), write, out_dir)


@app.command("augmentation")
def augmentation_cmd(
    data: list[Path] = typer.Option(..., help="Corel-layout directory; repeat the option to compare on several "
                                    "(a subset of the photos, say)."),
    augmented: Path = typer.Option(..., help="corel-augment's output (train_aug.json, images/) made from these "
                                   "photos; offspring of photos a directory does not train on are never used."),
    out_dir: Path = typer.Option(Path("bench-out/augmentation"), help="Checkpoints, bundles and the results "
                                 "(augmentation.json/.md)."),
    rows: str = typer.Option("sr-cnn-rnn", help="Comma-separated rows of corel-bench accuracy to compare."),
    seeds: str = typer.Option("1,2,3", help="Comma-separated training seeds; each seed pairs a run without and "
                              "one with the generated images."),
    glove: Optional[Path] = typer.Option(None, help="GloVe text file for ml-gcn's label embeddings."),
    epochs: Optional[int] = typer.Option(None, help="Training epochs (default: corel-train's)."),
    image_size: Optional[int] = typer.Option(None, help="Input size (default: corel-train's)."),
    augment_views: Optional[int] = typer.Option(None, help="Cached augmented views per image (default: "
                                                "corel-train's)."),
    train_top: Optional[int] = typer.Option(None, help="Backbone stages trained on the cache (default: "
                                            "corel-train's)."),
    cache_dir: Optional[Path] = typer.Option(None, help="Feature cache (default: corel-train's)."),
    reuse: bool = typer.Option(False, "--reuse", help="Keep checkpoints already finished in --out-dir."),
) -> None:
    """Train each row with and without corel-augment's generated images, paired by seed, and write a table
    of the test metrics (through the runtime) with the per-seed differences.

    Exit codes: 0 done, 2 bad input."""
    from corel_annotate.training.features import default_cache_dir

    from .augmentation import run_augmentation, write
    from .accuracy import select_entries

    log = lambda m: console.print(m, highlight=False, markup=False)
    try:
        entries = select_entries([r.strip() for r in rows.split(",") if r.strip()])
        try:
            seed_list = [int(v) for v in seeds.split(",") if v.strip()]
        except ValueError:
            raise ValueError(f"--seeds {seeds!r} is not a comma-separated list of integers") from None
        if not seed_list:
            raise ValueError("--seeds needs at least one seed")
        overrides = _overrides(epochs=epochs, image_size=image_size, augment_views=augment_views, train_top=train_top)
        result = run_augmentation(data, augmented, entries, seed_list, overrides, glove,
                                  cache_dir or default_cache_dir(), out_dir, reuse, log)
    except ValueError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
        raise typer.Exit(2)
    for path in write(result, out_dir, command=_command("augmentation")):
        log(f"wrote {path}")


@app.command("backbones")
def backbones_cmd(
    data: Optional[Path] = typer.Option(None, help="Corel-layout directory. Default: a synthetic dataset made in "
                                        "--out-dir."),
    out_dir: Path = typer.Option(Path("bench-out/backbones"), help="One folder per candidate, and the results "
                                 "(backbones.json/.md)."),
    candidates: str = typer.Option(",".join(DEFAULT_CANDIDATES), help="Comma-separated BACKBONE@SIZE."),
    row: str = typer.Option("cnn-asl", help="The corel-bench accuracy row trained on every candidate."),
    glove: Optional[Path] = typer.Option(None, help="GloVe text file (for an ml-gcn row)."),
    epochs: Optional[int] = typer.Option(None, help="Training epochs (default: corel-train's)."),
    augment_views: int = typer.Option(0, help="Cached augmented views per photo (0: the plain photos only)."),
    train_top: int = typer.Option(0, help="Backbone stages trained on the cache (0: frozen features, the head only)."),
    cache_dir: Optional[Path] = typer.Option(None, help="Feature cache (default: corel-train's)."),
    latency_images: int = typer.Option(50, help="Test photos timed one by one, JPEG file to labels."),
    reuse: bool = typer.Option(False, "--reuse", help="Keep checkpoints already finished in --out-dir."),
) -> None:
    """Accuracy against per-image cost for each backbone and input size: the measurement behind corel-train's
    --preset.

    Exit codes: 0 done, 2 bad input."""
    from corel_annotate.training.features import default_cache_dir
    from corel_annotate.training.synth import SynthConfig, generate

    from .accuracy import select_entries, write_tables
    from .backbones import markdown, parse_candidates, run_backbones

    log = lambda m: console.print(m, highlight=False, markup=False)
    try:
        pairs = parse_candidates(candidates)
        (entry,) = select_entries([row])
        if data is None:
            data = out_dir / "synthetic-data"
            if not (data / "test.json").is_file():
                generate(data, SynthConfig(images=400, labels=10, image_size=160, seed=0))
        overrides = _overrides(epochs=epochs, augment_views=augment_views, train_top=train_top)
        result = run_backbones(data, out_dir, pairs, entry, overrides, glove, cache_dir or default_cache_dir(),
                               latency_images, reuse, log)
    except ValueError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
        raise typer.Exit(2)
    for path in write_tables(result, out_dir, "backbones", _command("backbones"), markdown,
                             precision="fp32 (onnxruntime)"):
        log(f"wrote {path}")


@app.command("subset")
def subset_cmd(
    source: Path = typer.Argument(..., help="Corel-layout directory to draw from."),
    out: Path = typer.Argument(..., help="New directory for the subset (must not exist or be empty)."),
    train: int = typer.Option(300, help="Training photos to draw."),
    seed: int = typer.Option(0, help="Seed of the draw."),
) -> None:
    """Cut a small long-tailed data set from SOURCE: TRAIN random training photos, the labels they carry,
    and SOURCE's test photos restricted to those labels (images linked, not copied).

    Exit codes: 0 written, 2 bad input."""
    from .subset import make_subset

    try:
        info = make_subset(source, out, train, seed)
    except ValueError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
        raise typer.Exit(2)
    console.print(f"wrote {out}: {info.train_images} training photos, {info.labels} labels "
                  f"({info.labels_with_1_to_5_train_photos} with 1-5 training photos), {info.test_images} test photos",
                  highlight=False, markup=False)


@app.command("browser")
def browser_cmd(
    model: list[Path] = typer.Option(..., "--model", "-m", help="Bundle directory (repeat for several)."),
    data: Path = typer.Option(..., help="Corel-layout directory whose split's photos are timed and compared."),
    split: str = typer.Option("test", help="Which split: DATA/SPLIT.json."),
    threads: str = typer.Option("1,2", help="Comma-separated thread counts (WebAssembly threads and onnxruntime's)."),
    repeats: int = typer.Option(30, help="Timed encoder runs per row."),
    timing_photos: int = typer.Option(30, help="Photos timed one by one, file to labels."),
    limit: Optional[int] = typer.Option(None, help="Photos compared for parity (default: the whole split)."),
    out_dir: Path = typer.Option(Path("bench-out/browser"), help="Where browser.json and browser.md go."),
    screenshot: Optional[Path] = typer.Option(None, help="Also save a screenshot of the page annotating 8 photos "
                                              "with the first bundle (a label clicked: its heat map)."),
) -> None:
    """The browser runtime in Debian's Chromium (onnxruntime-web, WebAssembly) beside the native runtime at the
    same thread counts: page ready time, encoder and photo-to-labels latency, and label parity with Python.

    Exit codes: 0 done, 2 bad input or no chromium."""

    from .accuracy import write_tables
    from .browser import markdown, run_browser

    log = lambda m: console.print(m, highlight=False, markup=False)
    try:
        result = run_browser(model, data, split, _ints(threads), repeats, timing_photos, limit, _command("browser"), log,
                             screenshot)
    except ValueError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
        raise typer.Exit(2)
    for path in write_tables(result.to_dict(), out_dir, "browser", result.command,
                             lambda d, _c: markdown(result), precision=_bundles_precision(model)):
        log(f"wrote {path}")


@app.command("step")
def step_cmd(
    model: Path = typer.Option(..., "--model", "-m", help="A sequence bundle."),
    photo: list[Path] = typer.Option(..., help="Photos: the first one's first decoder step is timed; every one is "
                                     "decoded greedily, step-wise and by the fused Loop (repeat the option)."),
    calls: int = typer.Option(300, help="Calls per round."),
    rounds: int = typer.Option(5, help="Rounds; the median round counts."),
    out_dir: Path = typer.Option(Path("bench-out/step"), help="Where step.json and step.md go."),
    stem: str = typer.Option("step", help="File name stem of the results."),
) -> None:
    """The ways to run one decoder step at batch 1, side by side: onnxruntime, OpenVINO, OpenVINO's stateful
    form (state inside the request, constants bound once), the int8 step; the search's own cost per step; and
    whole greedy decodes, step-wise against an ONNX Loop around the step on onnxruntime and OpenVINO.

    Exit codes: 0 done, 2 bad input (a scores bundle, a missing photo)."""
    from .accuracy import write_tables
    from .step_options import markdown, step_options

    try:
        result = step_options(model, photo, calls, rounds)
    except ValueError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
        raise typer.Exit(2)
    result["command"] = _command("step")
    precision = f"{_bundles_precision([model])} (onnxruntime-int8 row: the int8 step)"
    for path in write_tables(result, out_dir, stem, result["command"], markdown, precision=precision):
        console.print(f"wrote {path}", highlight=False, markup=False)


@app.command("serve")
def serve_cmd(
    model: Path = typer.Option(..., "--model", "-m", help="Bundle directory to serve."),
    data: Path = typer.Option(..., help="Corel-layout directory whose split's photos are sent."),
    split: str = typer.Option("test", help="Which split: DATA/SPLIT.json."),
    clients: str = typer.Option("1,4,16,64", help="Comma-separated numbers of concurrent closed-loop clients."),
    requests: int = typer.Option(25, help="Requests per client per row."),
    mixed: int = typer.Option(1000, help="Requests of the mixed good/bad run (0: skip)."),
    soak_seconds: float = typer.Option(0, help="Soak at --soak-clients for this long, sampling the server's memory "
                                       "(0: skip; the issue's soak is 600)."),
    soak_clients: int = typer.Option(16, help="Clients during the soak."),
    max_image_bytes: int = typer.Option(8_000_000, help="The server's per-photo byte limit (the mixed run's "
                                        "oversized bodies exceed it)."),
    server_args: str = typer.Option("", help="More corel-serve options, space-separated."),
    hostile: bool = typer.Option(False, "--hostile", help="Last, a hostile run on the same server: "
                                 "--hostile-requests requests from --hostile-clients clients, half good photos, half "
                                 "bombs, truncated files, oversized beams, photos and bodies, wrong dtypes and shape "
                                 "lies; good throughput, p50/p99, errors by kind, the server's RSS throughout."),
    hostile_requests: int = typer.Option(10_000, help="Requests of the --hostile run."),
    hostile_clients: int = typer.Option(16, help="Clients of the --hostile run."),
    out_dir: Path = typer.Option(Path("bench-out/serve"), help="Where serve.json and serve.md go."),
    stem: str = typer.Option("serve", help="File name stem of the results."),
) -> None:
    """corel-serve under closed-loop load from 1..N concurrent clients beside in-process corel-infer on the same
    photos: throughput, p50/p95/p99, server batch sizes, CPU share, correctness; a mixed good/bad run; a soak.

    Exit codes: 0 done, 2 bad input or a server that would not start."""
    from .accuracy import write_tables
    from .serve import markdown, run_serve

    log = lambda m: console.print(m, highlight=False, markup=False)  # noqa: E731
    extra = ["--max-image-bytes", str(max_image_bytes), *shlex.split(server_args)]
    try:
        result = run_serve(model, data, split, _ints(clients), requests, mixed, soak_seconds, soak_clients, extra,
                           _command("serve"), log, hostile_requests if hostile else 0, hostile_clients)
    except ValueError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
        raise typer.Exit(2)
    for path in write_tables(result.to_dict(), out_dir, stem, result.command, markdown,
                             precision=_bundles_precision([model])):
        log(f"wrote {path}")


@app.command("ray")
def ray_cmd(
    model: Path = typer.Option(Path("bench-out/scenes/attention.bundle"), "--model", "-m", help="Bundle directory."),
    data: Path = typer.Option(Path("../shared/datasets/miml-scenes"), help="Corel-layout directory: every photo "
                              "in DATA/images is annotated."),
    images: Optional[int] = typer.Option(None, help="Only the first N photos (default: all)."),
    workers: str = typer.Option("1,2", help="Comma-separated --workers values for the --ray rows."),
    rounds: int = typer.Option(2, help="Rounds; each runs every configuration in turn (alternating order)."),
    batch_size: int = typer.Option(8, help="corel-infer's --batch-size for every row."),
    kill: bool = typer.Option(True, "--kill/--no-kill", help="Also run --ray with the most workers and SIGKILL "
                              "one actor a quarter of the way through: every photo must get exactly one record."),
    out_dir: Path = typer.Option(Path("benchmarks/results"), help="Where ray-scenes.json and .md go."),
    scratch: Path = typer.Option(Path("bench-out/ray"), help="The runs' record files and photo list."),
    stem: str = typer.Option("ray-scenes", help="File name stem of the results."),
) -> None:
    """Images per second of local corel-infer against corel-infer --ray with each --workers value on the same
    cores, Ray's start-up cost, whether the --ray records equal the local ones, and a worker killed mid-run.

    Exit codes: 0 done, 2 bad input."""
    from .accuracy import write_tables
    from .ray_bench import markdown, run_ray_bench

    log = lambda m: console.print(m, highlight=False, markup=False)
    try:
        result = run_ray_bench(model, data, images, _ints(workers), rounds, batch_size, scratch,
                               _command("ray"), log, kill)
    except ValueError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
        raise typer.Exit(2)
    for path in write_tables(result, out_dir, stem, result["command"], markdown):
        log(f"wrote {path}")


def _pixels(size: str) -> tuple[int, int]:
    """WIDTHxHEIGHT as two integers (typer.Exit(2) with a one-line reason otherwise)."""
    try:
        w, h = (int(v) for v in size.lower().split("x"))
        return w, h
    except ValueError:
        console.print(f"[red]error:[/red] photo size {escape(size)}: expected WIDTHxHEIGHT, e.g. 4032x3024",
                      highlight=False)
        raise typer.Exit(2)


def _camera_spec(size: str, jpeg_mb: float, quality: int, encoding: str, preview: str = ""):
    """The camera files' spec from the options (typer.Exit(2) with a one-line reason if they are wrong)."""
    from .camera_files import CameraSpec

    try:
        return CameraSpec(_pixels(size), jpeg_mb or None, quality, encoding, preview=_pixels(preview) if preview else None)
    except ValueError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
        raise typer.Exit(2)


@app.command("archive")
def archive_cmd(
    checkpoint: Path = typer.Option(..., help="Checkpoint: its fp32 and int8 bundles are exported into --out-dir."),
    data: Path = typer.Option(..., help="Corel-layout directory: the camera files are made from its test photos."),
    images: int = typer.Option(64, help="Camera files in the folder."),
    size: str = typer.Option("4032x3024", help="The camera files' pixels, WIDTHxHEIGHT."),
    jpeg_mb: float = typer.Option(3.5, help="Target MB per file, reached with sensor-like noise (0: the smooth "
                                  "upscale, about 0.7 MB at 12 MP)."),
    quality: int = typer.Option(92, help="JPEG quality of the camera files."),
    encodings: str = typer.Option("baseline,progressive", help="Comma-separated: one folder of files per encoding "
                                  "(baseline, as cameras and phones write; progressive, as web exports; mixed, alternately)."),
    precisions: str = typer.Option("fp32,int8", help="Bundles to export and run."),
    batch_size: int = typer.Option(8, help="corel-infer's --batch-size."),
    rounds: int = typer.Option(3, help="Pipeline rounds per engine, interleaved."),
    threads: int = typer.Option(0, help="corel-infer's --threads (0: the engine's default)."),
    previews: str = typer.Option("1920x1440", help="Also measure corel-infer --previews on the first encoding's files "
                                 "rewritten with a camera's large preview of this size (WIDTHxHEIGHT; empty: skip)."),
    levers: bool = typer.Option(True, "--levers/--no-levers", help="Also time the pipeline's levers side by side on "
                                "the first encoding with the auto engine: the decoder (simplejpeg or Pillow), the "
                                "prefetch unit (a photo or a batch), decoding and engine threads."),
    out_dir: Path = typer.Option(Path("bench-out/archive"), help="Bundles and camera files (kept for reuse)."),
    results: Path = typer.Option(Path("bench-out/archive"), help="Where STEM.json and STEM.md go."),
    stem: str = typer.Option("archive", help="File name stem of the results."),
) -> None:
    """corel-infer over a folder of camera-size files of a camera's file size, per engine, against the core-time
    bound cores / (decode + resize + encoder + decoder), each stage timed alone on one thread.

    Exit codes: 0 done, 2 bad input."""
    from corel_annotate.export.bundle import export_bundle
    from corel_annotate.runtime.dataset import CorelDataset

    from .accuracy import write_tables
    from .archive import markdown, run_archive
    from .camera_files import camera_files, describe

    log = lambda m: console.print(m, highlight=False, markup=False)  # noqa: E731
    specs = [_camera_spec(size, jpeg_mb, quality, e.strip()) for e in encodings.split(",") if e.strip()]
    try:
        dataset = CorelDataset(data)
        samples = dataset.read("test" if dataset.has_split("test") else "train").samples[:images]
        folders = {}
        for spec in specs:
            log(f"writing {len(samples)} camera files ({spec.folder_name})")
            paths = camera_files([s.path for s in samples], spec, out_dir)
            folders[spec.encoding] = (paths, {**describe(paths), "size": f"{spec.size[0]}x{spec.size[1]}",
                                              "quality": quality, "folder": spec.folder_name})
            log(f"{len(paths)} files, mean {folders[spec.encoding][1]['mean_mb']:.2f} MB")
        preview_files = None
        if previews:
            preview_spec = _camera_spec(size, jpeg_mb, quality, specs[0].encoding, previews)
            log(f"writing {len(samples)} camera files with a large preview ({preview_spec.folder_name})")
            paths = camera_files([s.path for s in samples], preview_spec, out_dir)
            preview_files = (paths, {**describe(paths), "preview": previews, "folder": preview_spec.folder_name})
        bundles = {}
        for precision in [p.strip() for p in precisions.split(",") if p.strip()]:
            bundles[precision] = out_dir / f"{checkpoint.stem}.{precision}.bundle"
            if not (bundles[precision] / "manifest.json").is_file():
                log(f"exporting {precision} bundle {bundles[precision]}")
                export_bundle(checkpoint, bundles[precision], precision=precision, force=True, log=lambda _m: None)
    except ValueError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
        raise typer.Exit(2)
    result = run_archive(bundles, folders, batch_size, rounds, _command("archive"), log, threads, levers, preview_files)
    for path in write_tables(result, results, stem, result["command"], markdown):
        log(f"wrote {path}")


@app.callback()
def main() -> None:
    """Benchmarks of corel-annotate: `corel-bench latency` measures speed side by side, `corel-bench accuracy`
    trains and scores every method on real photos, `corel-bench augmentation` measures what ML-WGAN images add, `corel-bench browser` runs bundles in Chromium, `corel-bench serve` loads corel-serve."""
    from .hardware import describe

    # the header of every subcommand: the machine its figures will come from (recorded in every result too)
    console.print(f"corel-bench on {describe()}", highlight=False, markup=False)


if __name__ == "__main__":
    app()
