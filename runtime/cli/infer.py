"""``corel-infer``: annotate photos with a bundle, in this process, on a corel-serve server or on Ray
(``python -m corel_annotate.runtime.cli.infer`` is the same)."""
from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.markup import escape
from typer.core import TyperCommand

from ..bundle.limits import DECODE_MEMORY, MIB
from ..preprocessing import MAX_PIXELS
from . import (DEVICE_HELP, PRECISION_HELP, Device, Format, Precision, Sidecar, TagMode, console,
               fail, progress_bar)

infer_app = typer.Typer(add_completion=False, help="Annotate photos with an exported bundle.")


class _RayOptionCommand(TyperCommand):
    """``corel-infer`` with ``--ray`` taking an optional value (typer has no optional-value options):
    ``--ray`` followed by nothing, by another option or by something that is not a Ray address
    (``ray://...``, ``HOST:PORT``, ``auto``, ``local``) means ``--ray=local``."""

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        return super().parse_args(ctx, _ray_flag(list(args)))


_RAY_ADDRESS = re.compile(r"^(auto|local|ray://\S+|[\w.\-]+:\d+)$")


def _ray_flag(args: list[str]) -> list[str]:
    out = []
    for i, arg in enumerate(args):
        if arg == "--":
            return out + args[i:]
        nxt = args[i + 1] if i + 1 < len(args) else None
        out.append("--ray=local" if arg == "--ray" and (nxt is None or not _RAY_ADDRESS.match(nxt)) else arg)
    return out


@infer_app.command(cls=_RayOptionCommand)
def infer(
    paths: List[str] = typer.Argument(..., help="Image files, folders (searched recursively), .txt/.lst files "
                                      "listing one image path per line, or a Corel split file (DIR/test.json). "
                                      "With --ray also a URI Ray reads (file:///data/photos, s3://bucket/photos)."),
    model: str = typer.Option(..., "--model", "-m", help="Bundle directory written by corel-export; with "
                              "--server, the model's name on the server (corel-serve prints it)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write results here (default: standard output)."),
    fmt: Format = typer.Option(Format.jsonl, "--format", help="jsonl (one record per line), csv, or json (one array)."),
    batch_size: int = typer.Option(8, help="Images per encoder call."),
    beam_width: Optional[int] = typer.Option(None, help="Recurrent bundles: beam width (default: the manifest's)."),
    top_k: Optional[int] = typer.Option(None, help="Score bundles: keep at most K labels per image."),
    threshold: Optional[float] = typer.Option(None, help="Score bundles: one threshold for every label "
                                              "(default: the manifest's per-label thresholds)."),
    attention_maps: Optional[Path] = typer.Option(None, help="Attention bundles: write a PNG overlay per emitted "
                                                  "label into this folder."),
    device: Device = typer.Option(Device.auto, help=DEVICE_HELP),
    precision: Precision = typer.Option(Precision.auto, help=PRECISION_HELP),
    threads: int = typer.Option(0, help="Engine threads (0: the engine's default)."),
    server: Optional[str] = typer.Option(None, "--server", help="Annotate on a corel-serve (Triton) server at "
                                         "this URL (http://HOST:8000 or grpc://HOST:8001) instead of in this "
                                         "process; same records, --resume and error records."),
    in_flight: int = typer.Option(4, help="--server: most requests in flight at once, each of --batch-size photos."),
    ray: Optional[str] = typer.Option(None, "--ray", metavar="[ADDRESS]",
                                      help="Run on Ray Data: --ray alone starts a local Ray sized to this "
                                      "machine, --ray ADDRESS (ray://HOST:10001, HOST:6379 or auto) joins a "
                                      "cluster. Needs pip install 'corel-annotate[ray]'."),
    workers: int = typer.Option(0, help="--ray: Annotator actors (0: one per CPU of the cluster)."),
    max_beam_width: Optional[int] = typer.Option(None, help="--ray: the widest --beam-width the job accepts "
                                                 f"(default: what fits a {DECODE_MEMORY // MIB} MB decoding bound, from the manifest's "
                                                 "shapes); workers decode batches in chunks within that bound."),
    strict: bool = typer.Option(False, "--strict", help="Stop at the first image that cannot be read."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run: keep the records already in "
                                "--output and annotate only the images without one."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --output file."),
    max_pixels: int = typer.Option(MAX_PIXELS, help="Refuse images with more pixels (decompression-bomb guard)."),
    previews: bool = typer.Option(False, "--previews", help="Read a multi-picture JPEG by the large preview its camera "
                                  "stored beside the photo (MPF) where one covers the model's input: less to decode, "
                                  "but the labels may differ from the full picture's (docs/performance.md measures how "
                                  "often). Off by default; local runs only."),
    labels: Optional[Path] = typer.Option(None, "--labels", help="A label map (TOML or JSON; docs/tags.md): display "
                                          "names, merged and excluded labels, per-label thresholds, tag hierarchy. "
                                          "The bundle is not changed. With --server, give it to corel-serve."),
    write_tags: Optional[TagMode] = typer.Option(None, "--write-tags", help="Also put each photo's labels where photo "
                                                 "software reads them: xmp, a sidecar beside the photo (dc:subject, "
                                                 "lr:hierarchicalSubject, digiKam:TagsList; needs exiftool); embed, "
                                                 "the same and IPTC Keywords inside the photo (a copy renamed over it; "
                                                 "only this mode changes photos); or txt, a caption file photo.txt. "
                                                 "Existing tags are kept; photos this bundle already tagged are skipped."),
    backup: bool = typer.Option(False, "--backup", help="--write-tags embed: keep each changed photo's original "
                                "as photo.jpg_original (exiftool's name)."),
    retag: bool = typer.Option(False, "--retag", help="--write-tags: annotate and tag again the photos this bundle "
                               "already tagged (skipped by default)."),
    sidecar: Sidecar = typer.Option(Sidecar.append, help="--write-tags xmp: append names the sidecar photo.jpg.xmp "
                                    "(darktable, digiKam), replace names it photo.xmp (Adobe Lightroom, Bridge)."),
    tag_root: str = typer.Option("corel-annotate", help="--write-tags xmp: the root of the hierarchical tags "
                                 "(ROOT|label); a later run replaces only the tags under it."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar on standard error."),
) -> None:
    """Annotate photos. One record per image: {"image", "status": "ok"|"error", "labels", "scores"} or an
    "error" reason; bad files (corrupt, truncated, not images, special files, broken links, too large)
    get an error record and the run goes on. Each record is written and flushed as it is produced, so
    a killed run loses nothing: rerun it with --resume. Exit codes: 0 every image annotated, 1 some
    images failed, 2 bad bundle or arguments."""
    from ..jobs.attention_maps import write_attention_maps
    from ..jobs.records import InferOptions, RecordOutput
    from ..jobs.tags import TagOptions, TagWriter
    from ..bundle.label_map import LabelMap

    if server is not None and ray is not None:
        fail("--server and --ray are two ways to run the job; choose one")
    if previews and (server is not None or ray is not None):
        fail("--previews reads previews in this process; it does not go with --server or --ray")
    options = InferOptions(beam_width, top_k, threshold, attention_maps is not None, batch_size, max_pixels, previews)
    uris = [p for p in paths if "://" in p]
    if uris and ray is None:
        fail(f"{uris[0]}: a URI input needs --ray (Ray reads it); give a local path otherwise")
    if write_tags is not None and uris:
        fail(f"{uris[0]}: --write-tags writes beside local photos; give a local path")
    if labels is not None and server is not None:
        fail(f"--labels {labels}: a server applies its own label map; start it with corel-serve --labels {labels}")
    try:
        tag_options = TagOptions(write_tags.value, tag_root, sidecar.value, backup, retag) if write_tags is not None \
            else None
        label_map = LabelMap.read(labels) if labels is not None else None
    except ValueError as exc:
        fail(str(exc))
    files = _collect([p for p in paths if "://" not in p])
    if not files and not uris:
        fail("no images found in " + ", ".join(map(str, paths)))
    try:
        out = RecordOutput(output, fmt.value, resume, overwrite)
    except ValueError as exc:
        fail(str(exc))
    engine = ""
    tagger = None
    try:
        if server is not None:
            from ..jobs.triton_job import TritonJob

            job = TritonJob.connect(server, model, in_flight)
        elif ray is not None:
            from ..jobs.ray_job import RayJob

            job = RayJob.start(ray, Path(model), device.value, precision.value, workers, labels=label_map,
                               max_beam_width=max_beam_width)
        else:
            from ..jobs.local import LocalJob

            job = LocalJob.load(Path(model), device=device.value, threads=threads, precision=precision.value,
                                labels=label_map)
        _check_job(job, beam_width, top_k, threshold, attention_maps, model)
        note = getattr(getattr(job, "annotator", None), "engine_note", None)
        if note:
            console.print(note, highlight=False, markup=False)
        if tag_options is not None:
            tagger = TagWriter(tag_options, job.bundle_id, label_map.path if label_map is not None else None)
    except ValueError as exc:
        out.close()
        if "job" in locals():
            job.close()
        fail(str(exc))
    todo = out.todo(files)
    if out.resumed:
        have = f"{len(files) - len(todo)} of {len(files)}" if files else str(out.resumed)
        console.print(f"resuming: {have} images already have a record", highlight=False, markup=False)
    if tagger is not None:
        tagged = tagger.already_tagged(todo)
        if tagged:
            todo = [p for p in todo if p not in tagged]
            console.print(f"skipped {len(tagged)} photos this bundle already tagged (--retag tags them again)",
                          highlight=False, markup=False)
    try:
        with progress_bar(len(todo), progress and sys.stderr.isatty()) as bar:
            task = bar.add_task("annotating", total=len(todo) or None)
            for item in job.records(todo, options, uris=uris, done=out.done):
                if tagger is not None and not item.failed and item.record["image"] not in out.done:
                    try:
                        item.record["tags"] = tagger.write(item.path, item.record["labels"])
                    except ValueError as exc:   # the labels stay in the record; the photo is as it was
                        item.record.update(status="error", error=str(exc))
                if not out.write(item.record):
                    continue
                if item.failed and strict:
                    console.print(f"[red]error:[/red] {escape(item.record['error'])}", highlight=False)
                    raise typer.Exit(1)
                if attention_maps is not None and item.alphas is not None:
                    write_attention_maps(item.path, item.record["labels"], item.alphas, attention_maps)
                bar.advance(task, 1)
        engine = job.engine
    except ValueError as exc:
        fail(str(exc))
    finally:
        out.close()
        job.close()
        if tagger is not None:
            tagger.close()
    console.print(f"{out.written - out.failures}/{out.written} images annotated in this run ({engine})"
                  + (f", {out.failures} failed" if out.failures else "") + (f"; results in {output}" if output else ""),
                  highlight=False, markup=False)
    raise typer.Exit(1 if out.failures else 0)


def _collect(paths: list[str]) -> list[Path]:
    """The photos to annotate; files in the folders that are not photos we read are named, not hidden."""
    from collections import Counter

    from ..photos import collect_paths

    skipped: Counter = Counter()
    files = collect_paths(paths, skipped)
    if skipped:
        listed = ", ".join(f"{suffix} ({n})" for suffix, n in skipped.most_common())
        console.print(f"skipped {sum(skipped.values())} files that are not photos corel-infer reads: {listed}",
                      highlight=False, markup=False)
    return files


def _check_job(job, beam_width: int | None, top_k: int | None, threshold: float | None,
               attention_maps: Path | None, model: str) -> None:
    """Refuse options the job's bundle cannot honour before any image is read (ValueError, exit 2)."""
    job.check_overrides(beam_width, top_k, threshold)
    if attention_maps is not None and not job.has_attention:
        raise ValueError(f"--attention-maps needs a bundle whose decoder gives attention weights; {model} "
                         f"({job.method}) has none")


if __name__ == "__main__":
    infer_app()
