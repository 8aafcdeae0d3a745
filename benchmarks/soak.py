"""Soak run: ``corel-infer`` over many synthetic photos with its resident memory sampled along the way.

    python -m corel_annotate.benchmarks.soak --model BUNDLE [--images 10000] [--out-dir soak-out]

Generates the photos (synthetic, Corel layout), runs ``corel-infer`` on them in a subprocess
writing JSON lines, samples the process's resident set size (``/proc/PID/status``) and the number
of records written every half second, and reports memory after warm-up against the peak and the
end.  Results go to ``soak.json`` in the output folder.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import typer

app = typer.Typer(add_completion=False, help=__doc__)


def rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


@app.command()
def main(model: Path = typer.Option(..., help="Bundle to run."), images: int = 10_000,
         out_dir: Path = Path("soak-out"), batch_size: int = 8, warmup_fraction: float = 0.1,
         interval: float = 0.5) -> None:
    from corel_annotate.training.synth import SynthConfig, generate

    data = out_dir / "data"
    if not (data / "train.json").exists():
        typer.echo(f"generating {images} synthetic photos in {data}", err=True)
        generate(data, SynthConfig(images=images, labels=12, image_size=128, test_fraction=0.5, seed=7))
    results = out_dir / "results.jsonl"
    results.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "corel_annotate.runtime.cli.infer", str(data / "images"), "--model", str(model), "-o", str(results),
           "--batch-size", str(batch_size), "--no-progress"]
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    samples = []
    while proc.poll() is None:
        rss = rss_mib(proc.pid)
        done = results.read_bytes().count(b"\n") if results.exists() else 0
        if rss is not None:
            samples.append({"t": round(time.perf_counter() - started, 2), "records": done, "rss_mib": round(rss, 1)})
        time.sleep(interval)
    seconds = time.perf_counter() - started
    stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    total = results.read_bytes().count(b"\n")
    after_warmup = [s for s in samples if s["records"] >= warmup_fraction * total]
    base = after_warmup[0]["rss_mib"] if after_warmup else float("nan")
    peak = max((s["rss_mib"] for s in after_warmup), default=float("nan"))
    end = after_warmup[-1]["rss_mib"] if after_warmup else float("nan")
    report = {"images": total, "seconds": round(seconds, 1), "images_per_second": round(total / seconds, 1),
              "exit_code": proc.returncode, "rss_after_warmup_mib": base, "rss_peak_mib": peak, "rss_end_mib": end,
              "growth_after_warmup": round((peak - base) / base, 4) if base == base else None,
              "samples": samples, "command": " ".join(cmd), "stderr_tail": stderr[-500:]}
    (out_dir / "soak.json").write_text(json.dumps(report, indent=1))
    typer.echo(f"{total} images in {seconds:.0f}s ({report['images_per_second']} images/s), exit {proc.returncode}; "
               f"RSS after warm-up {base:.1f} MiB, peak {peak:.1f} MiB, end {end:.1f} MiB "
               f"(growth {100 * report['growth_after_warmup']:.1f}%)")


if __name__ == "__main__":
    app()
