"""``corel-serve``: exported bundles behind NVIDIA Triton Inference Server (KServe v2 HTTP and gRPC)."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.markup import escape


from ..bundle.limits import BEAM_CEILING, MAX_IMAGE_BYTES, MIB
from ..preprocessing import MAX_PIXELS
from ..serve.triton_server import ServeConfig
from . import DEVICE_HELP, PRECISION_HELP, Device, Precision, console, fail, log

serve_app = typer.Typer(add_completion=False, help=__doc__)
_DEFAULT = ServeConfig()


@serve_app.command()
def serve_command(
    model: List[str] = typer.Option(..., "--model", "-m", help="Bundle directory written by corel-export, or "
                                    "NAME=BUNDLE; repeat for several models. A bundle is named from its manifest "
                                    "(its method, and precision when not fp32)."),
    host: str = typer.Option(_DEFAULT.host, help="Address to listen on (loopback unless you say otherwise)."),
    http_port: int = typer.Option(_DEFAULT.http_port, help="KServe v2 HTTP port."),
    grpc_port: int = typer.Option(_DEFAULT.grpc_port, help="KServe v2 gRPC port."),
    metrics_port: int = typer.Option(_DEFAULT.metrics_port, help="Prometheus metrics port (/metrics)."),
    max_batch: int = typer.Option(_DEFAULT.max_batch, help="Largest batch the dynamic batcher forms."),
    max_queue_delay_ms: float = typer.Option(_DEFAULT.max_queue_delay_ms, help="How long a request may wait "
                                             "for others to join its batch."),
    instances: int = typer.Option(_DEFAULT.instances, help="Model instances per bundle. They share this "
                                  "process (and its GIL): on 2 cores 1 instance gave 156 images/s, 2 gave 112."),
    max_image_bytes: int = typer.Option(MAX_IMAGE_BYTES, help="Refuse encoded photos larger than this (per image)."),
    max_request_mb: int = typer.Option(_DEFAULT.max_request_bytes // MIB, help="Refuse requests carrying more "
                                       "photo bytes than this, all their photos together (an error in each row)."),
    max_photos_per_request: int = typer.Option(_DEFAULT.max_photos, help="Refuse requests carrying more photos "
                                               "(an error in each row); at most --max-batch, above which Triton "
                                               "refuses the request itself."),
    max_beam_width: Optional[int] = typer.Option(None, help="Refuse requests asking for a wider beam (an error in "
                                                 "each row). Default: per bundle, the widest beam whose search for "
                                                 f"one photo fits --decode-memory-mb, at most {BEAM_CEILING}; "
                                                 "printed at start-up."),
    decode_memory_mb: int = typer.Option(_DEFAULT.decode_memory // MIB, help="Memory bound of one beam search: "
                                         "the default beam cap follows from it and the manifest's shapes, and "
                                         "batches are decoded in chunks within it."),
    max_pixels: int = typer.Option(MAX_PIXELS, help="Refuse photos with more pixels (decompression-bomb guard)."),
    drain_timeout: int = typer.Option(_DEFAULT.drain_timeout_s, help="On SIGTERM, seconds to let the requests "
                                      "in flight finish."),
    device: Device = typer.Option(Device.auto, help=DEVICE_HELP),
    precision: Precision = typer.Option(Precision.auto, help=PRECISION_HELP),
    threads: int = typer.Option(0, help="Engine threads per instance (0: cores / instances)."),
    log_file: Optional[Path] = typer.Option(None, help="Write the Triton server's own log here (default: not kept)."),
    labels: Optional[Path] = typer.Option(None, "--labels", help="A label map (TOML or JSON; docs/tags.md) every "
                                          "served bundle applies: display names, merges, exclusions, per-label "
                                          "thresholds. The bundles are not changed."),
) -> None:
    """Serve bundles on Triton with dynamic batching. Clients send encoded photos (JPEG, PNG, ...) as a
    BYTES tensor "image" [1] per row, and optionally "beam_width" (sequence bundles) or "top_k" and
    "threshold" (scores bundles); the answer per row is "labels", "scores", "error" (empty when the
    photo was annotated) and, when requested, "attention". A request over a limit (beam width, photos,
    bytes) gets an error in each of its rows; the limits are printed at start-up. The endpoint has no
    authentication: keep --host on loopback or put a proxy in front (docs/serving.md). Ready (/v2/health/ready) only once every
    bundle is verified and warm. SIGTERM or Ctrl-C drains the requests in flight and exits 0.
    Exit codes: 0 stopped cleanly, 2 bad bundle, options or ports taken, 1 the server died.
    Client: corel-infer PHOTOS --server http://HOST:PORT --model NAME."""
    from ..serve.triton_server import check_ports_free, load_models, serve

    config = ServeConfig(host, http_port, grpc_port, metrics_port, max_batch, max_queue_delay_ms, instances,
                         max_image_bytes, max_pixels, drain_timeout, device.value, precision.value, threads, log_file,
                         labels, max_beam_width, decode_memory_mb * MIB, max_photos_per_request, max_request_mb * MIB)
    try:
        config.check()
        if config.exposure_warning():
            log(config.exposure_warning())
        check_ports_free(config)
        models = load_models(model, config, log)
    except ValueError as exc:
        fail(str(exc))
    try:
        serve(models, config, log)
    except ValueError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
        raise typer.Exit(1)
    log("stopped")


if __name__ == "__main__":
    serve_app()
