"""Camera files decoded in batches on a GPU with the bundle behind it on the GPU: photos/s and one photo's
latency on realistic files, beside ``corel-infer``'s CPU job on the same machine and files, and how often
the labels differ from the CPU path's (the bundle's draft decode rule).

The GPU decodes every pixel (nvImageCodec where it is installed, else torchvision's nvJPEG), resizes to
the model input with antialiased bilinear on the GPU, and the bundle runs on TensorRT or onnxruntime's CUDA
provider (``--device``).  A GPU is lent rarely and briefly, so this is one prepared job; ``--device cpu``
runs the same code on this machine's CPU (torchvision's CPU decoder, onnxruntime CPU) as its test.

On the GPU machine, beside the package (onnxruntime-gpu, torch with torchvision, optionally
``nvidia-nvimgcodec-cu12``)::

    python -m corel_annotate.benchmarks.gpu_archive --bundle B --photos DIR --out OUT/gpu-archive.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np


def batch_decoder(device: str) -> tuple[Callable[[list[bytes]], list], str]:
    """A function from JPEG bytes to upright CHW uint8 torch tensors on ``device``, and its name."""
    import torch

    if device != "cpu":
        try:
            from nvidia import nvimgcodec
        except ImportError:
            nvimgcodec = None
        if nvimgcodec is not None:
            decoder = nvimgcodec.Decoder()
            params = nvimgcodec.DecodeParams(apply_exif_orientation=True)

            def decode_nv(datas: list[bytes]) -> list:
                return [torch.as_tensor(im, device="cuda").permute(2, 0, 1) for im in decoder.decode(datas, params=params)]
            return decode_nv, "nvImageCodec"
    from torchvision.io import ImageReadMode, decode_jpeg

    target = "cuda" if device != "cpu" else "cpu"

    def decode_tv(datas: list[bytes]) -> list:
        tensors = [torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in datas]
        if target == "cpu":
            return decode_jpeg(tensors, mode=ImageReadMode.RGB, apply_exif_orientation=True)
        # nvJPEG leaves EXIF orientation to the caller: read it from the header and turn the picture
        return [upright(im, orientation(d)) for im, d in zip(decode_jpeg(tensors, mode=ImageReadMode.RGB,
                                                                         device=target), datas)]
    return decode_tv, "torchvision nvJPEG" if target == "cuda" else "torchvision (CPU)"


def orientation(data: bytes) -> int:
    """The EXIF orientation in a JPEG's header (1 where there is none)."""
    import io

    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        return img.getexif().get(0x0112, 1)


def upright(image, value: int):
    """A CHW tensor turned as EXIF ``value`` says (the 8 values, as ``ImageOps.exif_transpose``)."""
    if value in (2, 4, 5, 7):
        image = image.flip(-2) if value == 4 else image.flip(-1)
    turns = {3: 2, 5: 1, 6: 3, 7: 3, 8: 1}.get(value, 0)   # quarter turns anticlockwise
    return image.rot90(turns, dims=(-2, -1)) if turns else image


def model_input(images: list, config) -> np.ndarray:
    """Decoded tensors to the batch the encoder takes (resized on their device, then to host memory)."""
    import torch

    size = config.image_size
    batch = torch.cat([torch.nn.functional.interpolate(im[None].float(), size=(size, size), mode="bilinear",
                                                       antialias=True) for im in images])
    batch = batch.round().clamp(0, 255)
    if config.input_dtype == "uint8":
        out = batch.to(torch.uint8)
        out = out.permute(0, 2, 3, 1) if config.layout == "NHWC" else out
        return np.ascontiguousarray(out.cpu().numpy())
    mean = torch.tensor(config.mean, device=batch.device).view(1, 3, 1, 1)
    std = torch.tensor(config.std, device=batch.device).view(1, 3, 1, 1)
    out = (batch * config.scale - mean) / std
    out = out.permute(0, 2, 3, 1) if config.layout == "NHWC" else out
    return np.ascontiguousarray(out.cpu().numpy().astype(np.float32))


def run(bundle: Path, photos: Sequence[Path], device: str, batch: int, rounds: int) -> dict:
    """The rows: the GPU pipeline's photos/s and batch-1 latency, the CPU job's photos/s, label agreement."""
    import torch

    from corel_annotate.runtime.annotator import Annotator
    from corel_annotate.runtime.jobs.local import LocalJob
    from corel_annotate.runtime.jobs.records import InferOptions

    if device != "cpu" and not torch.cuda.is_available():
        raise SystemExit(f"--device {device}: no CUDA device is available to PyTorch (use --device cpu to test "
                         "this script on a CPU)")
    datas = [p.read_bytes() for p in photos]
    annotator = Annotator.load(bundle, device=device if device != "cpu" else "cpu")
    decode, decoder_name = batch_decoder(device)
    config = annotator.preprocess_config
    sync = torch.cuda.synchronize if device != "cpu" else (lambda: None)
    chunks = [datas[i:i + batch] for i in range(0, len(datas), batch)]

    def labels_of(chunk: list[bytes]) -> list[list[str]]:
        return [sorted(a.labels) for a in annotator.annotate_batch(model_input(decode(chunk), config))]

    gpu_labels = [lab for chunk in chunks for lab in labels_of(chunk)]   # also the warm-up
    rates = []
    for _ in range(rounds):
        sync()
        t0 = time.perf_counter()
        for chunk in chunks:
            labels_of(chunk)
        sync()
        rates.append(len(datas) / (time.perf_counter() - t0))
    latency = []
    for data in datas[:32]:
        t0 = time.perf_counter()
        labels_of([data])
        sync()
        latency.append((time.perf_counter() - t0) * 1000)
    job = LocalJob.load(bundle, device="auto", precision="auto")
    options = InferOptions(batch_size=8)
    cpu_labels = [sorted(r.record.get("labels", [])) for r in job.records(list(photos), options)]
    t0 = time.perf_counter()
    count = sum(1 for r in job.records(list(photos), options) if not r.failed)
    cpu_rate = count / (time.perf_counter() - t0)
    differ = sum(a != b for a, b in zip(gpu_labels, cpu_labels))
    return {"photos": len(datas), "mean_mb": round(sum(map(len, datas)) / len(datas) / 1e6, 3),
            "decoder": decoder_name, "engine": annotator.engine, "batch": batch,
            "gpu_photos_per_s": rates, "gpu_best_photos_per_s": max(rates),
            "gpu_latency_ms_batch1_median": statistics.median(latency),
            "cpu_engine": job.engine, "cpu_photos_per_s": cpu_rate,
            "labels_differ_from_cpu": differ, "label_difference_rate": differ / len(datas)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--photos", type=Path, required=True, help="a folder of JPEG camera files")
    parser.add_argument("--out", type=Path, required=True, help="the JSON result")
    parser.add_argument("--device", default="tensorrt", choices=["tensorrt", "cuda", "cpu"],
                        help="where the bundle runs (cpu: this script's test on a CPU)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    photos = sorted(p for p in args.photos.iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))
    if not photos:
        parser.error(f"{args.photos}: no .jpg files")
    from .hardware import machine

    result = {"machine": machine().to_dict(), "command": " ".join(["gpu_archive", *(argv or sys.argv[1:])]),
              **run(args.bundle, photos, args.device, args.batch, args.rounds)}
    try:
        import torch

        result["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        result["gpu"] = None
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=1))


if __name__ == "__main__":
    main()
