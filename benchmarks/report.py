"""Benchmark results as JSON, a Markdown table and a PNG chart."""
from __future__ import annotations

import json
from pathlib import Path


def _fmt(t: dict | None, digits: int = 2) -> str:
    if not t:
        return "–"
    return f"{t['median']:.{digits}f} ({t['p10']:.{digits}f}–{t['p90']:.{digits}f})"


def markdown(result: dict) -> str:
    """The latency table: per image figures in ms, median (p10–p90)."""
    hw = result["hardware"]
    files = result.get("files") or {}
    mb = f"{files['mean_mb']:.2f}" if files else "–"
    lines = [
        f"Checkpoint `{result['checkpoint']}` ({result['method']}, {result['backbone']}, {result['image_size']} px); "
        f"{result['cpu_count']} CPU cores, runtime threads {result['threads'] or 'default'}, "
        f"PyTorch threads {result['torch_threads']}.",
        f"Encoder: {result['encoder_gflops']:.3f} GFLOP per image. Measured float32 matmul peak: "
        f"{hw['peak_gflops']:.1f} GFLOP/s (numpy {hw['numpy_gflops']:.1f}, onnxruntime {hw['onnxruntime_gflops']:.1f})"
        + (f"; bfloat16 (OpenVINO, for the bf16 rows' %): {hw['bf16_peak_gflops']:.1f} GFLOP/s" if "bf16_peak_gflops" in hw
           else "")
        + (f"; int8 (OpenVINO QDQ MatMul, for the openvino-int8 rows' %): {hw['int8_peak_gops']:.1f} GOP/s." if "int8_peak_gops" in hw
           else "."),
        *([f"Photos: {files['files']} JPEG files, mean {files['mean_mb']:.2f} MB (from {files['min_mb']:.2f} to "
            f"{files['max_mb']:.2f}), {files['progressive']} progressive, {files['exif_oriented']} stored sideways with "
            "an EXIF orientation."] if files else []),
        "",
        "| variant | photo MB | batch | encoder ms/img | encoder GFLOP/s (% of peak) | decoder step ms | greedy ms/img | beam 3 ms/img | beam 10 ms/img |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in result["rows"]:
        if row.get("note"):
            lines.append(f"| {row['variant']} | {mb} | {row['batch'] or '–'} | {row['note']} | | | | | |")
            continue
        enc = row["encoder_ms"]
        rate = result["encoder_gflops"] / (enc["median"] / 1000.0)
        peak = hw["peak_gflops"]
        if row["variant"].endswith("bf16"):
            peak = hw.get("bf16_peak_gflops", peak)
        elif row["variant"] == "openvino-int8":
            peak = hw.get("int8_peak_gops", peak)
        e2e = row["end_to_end_ms"]
        lines.append(f"| {row['variant']} | {mb} | {row['batch']} | {_fmt(enc)} | {rate:.1f} ({100 * rate / peak:.0f}%) "
                     f"| {_fmt(row.get('step_ms'), 3)} | {_fmt(e2e.get('greedy'))} | {_fmt(e2e.get('beam3'))} "
                     f"| {_fmt(e2e.get('beam10'))} |")
    if result.get("stages"):
        first = next(iter(result["stages"].values()))
        lines += ["", f"Where one photo's time goes at batch 1 ({first['photo_pixels'][0]}x{first['photo_pixels'][1]} "
                      "JPEG to labels, greedy), ms (share):", "",
                  "| variant | photo MB | decode pixels | resize + normalise | encoder | decoder | total | total ÷ encoder |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for name, st in result["stages"].items():
            cells = " | ".join(f"{st['ms'][s]:.2f} ({100 * st['share'][s]:.0f}%)" for s in ("decode", "resize", "encoder", "decoder"))
            lines.append(f"| {name} | {mb} | {cells} | {st['total_ms']:.2f} | {st['total_ms'] / st['ms']['encoder']:.2f}× |")
    api = [r for r in result["rows"] if r.get("api_ms")]
    if api:
        lines += ["", "The public API as a user's loop calls it, `Annotator.annotate([path], batch_size=1)` (greedy), "
                      "one call per photo file, timed in the same interleaved rounds as the table above (batch 1):", "",
                  "| variant | `Annotator.annotate` ms/photo | encoder ms | ÷ encoder | greedy ms/img (bytes to labels) "
                  "| ÷ encoder |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for r in api:
            enc, greedy = r["encoder_ms"]["median"], r["end_to_end_ms"]["greedy"]["median"]
            lines.append(f"| {r['variant']} | {_fmt(r['api_ms'])} | {enc:.2f} | {r['api_ms']['median'] / enc:.2f}× "
                         f"| {greedy:.2f} | {greedy / enc:.2f}× |")
    for key in ("infer", "infer_full_decode", "infer_default"):
        if result.get(key):
            inf = result[key]
            label = f"{inf.get('engine', 'onnxruntime-cpu fp32')}, decode {inf.get('decode', 'bundle rule')}, batch"
            lines += ["", f"`corel-infer` pipeline over {inf['images']} JPEG files ({label} {inf['batch_size']}): "
                          f"{inf['images_per_second']:.1f} images/s = {100 * inf['fraction_of_encoder_bound']:.0f}% of "
                          f"1 / encoder latency at the best batch ({inf['encoder_bound_images_per_second']:.1f} images/s)."]
    if result.get("accuracy"):
        lines += ["", "| bundle | per-class F1 | per-image F1 | N+ |", "| --- | ---: | ---: | ---: |"]
        for name, m in result["accuracy"].items():
            lines.append(f"| {name} | {m['per_class/f1']:.4f} | {m['per_image/f1']:.4f} | {m['N+']} |")
    lines += ["", f"Command: `{result['command']}`"]
    return "\n".join(lines) + "\n"


def chart(result: dict, path: Path) -> None:
    """Grouped bars: greedy end-to-end ms per image by variant, one group per batch size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in result["rows"] if not r.get("note")]
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    batches = sorted({r["batch"] for r in rows})
    fig, ax = plt.subplots(figsize=(8, 4.2))
    width = 0.8 / max(1, len(variants))
    for i, variant in enumerate(variants):
        values = []
        for b in batches:
            match = [r for r in rows if r["variant"] == variant and r["batch"] == b]
            values.append(match[0]["end_to_end_ms"]["greedy"]["median"] if match else 0.0)
        ax.bar([x + i * width for x in range(len(batches))], values, width, label=variant)
    ax.set_xticks([x + width * (len(variants) - 1) / 2 for x in range(len(batches))])
    ax.set_xticklabels([f"batch {b}" for b in batches])
    ax.set_ylabel("ms per image, JPEG to labels (greedy)")
    ax.set_title(f"{result['method']} on {result['cpu_count']} CPU cores: lower is better")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(result: dict, out_dir: Path, stem: str = "latency") -> list[Path]:
    """The latency result as JSON (with its ``"machine"`` record), its tables and its chart."""
    from .hardware import record_of, with_machine_line

    result = record_of(result)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{stem}.json", out_dir / f"{stem}.md", out_dir / f"{stem}.png"]
    paths[0].write_text(json.dumps(result, indent=1))
    paths[1].write_text(with_machine_line(markdown(result), result["machine"]))
    chart(result, paths[2])
    return paths


def write_json_and_markdown(result: dict, out_dir: Path, stem: str, text: str, default=None) -> list[Path]:
    """A bench's result as ``STEM.json`` (the figures and the ``"machine"`` record) and ``STEM.md`` (its
    table ``text`` and the line naming the machine) in ``out_dir``."""
    from .hardware import record_of, with_machine_line

    result = record_of(result)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{stem}.json", out_dir / f"{stem}.md"]
    paths[0].write_text(json.dumps(result, indent=1, default=default))
    paths[1].write_text(with_machine_line(text, result["machine"]))
    return paths
