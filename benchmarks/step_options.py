"""``corel-bench step``: the ways to run one decoder step at batch 1, side by side on one bundle.

* ``onnxruntime``: the runtime's choice today; every call feeds the token, the state and the per-image
  constants (onnxruntime reads numpy inputs in place).
* ``openvino``: the same call on a compiled OpenVINO model (it copies every input into its own tensors).
* ``openvino-stateful``: OpenVINO's stateful form (``MakeStateful``): the state stays inside the
  infer request from step to step and the constants are bound once per photo, so a call feeds the
  token alone.  It serves greedy decoding only: beam search reorders state rows at every step.
* ``onnxruntime-int8``: the step with dynamic int8 weights (what ``--precision int8`` exports), which
  reads a quarter of the weight bytes per call.
* ``search overhead``: one greedy decode through the runtime's Python search, less its step calls.
* ``fused greedy``: whole greedy decodes per photo, the step-wise search against an ONNX ``Loop`` around
  the step (``greedy_loop``, a measured prototype) on onnxruntime and OpenVINO, with how many photos
  decode alike.

The per-call medians are what a fused or stateful step could save; the weight bytes say what a step
at batch 1 must read from memory whatever runs it."""
from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

from corel_annotate.runtime.annotator import Annotator
from corel_annotate.runtime.bundle.manifest import load_manifest


def _median_ms(fn: Callable[[], object], calls: int, rounds: int) -> float:
    samples = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        samples.append((time.perf_counter() - t0) / calls * 1000.0)
    return statistics.median(samples)


def _weight_bytes(path: Path) -> int:
    import onnx

    return sum(int(np.prod(t.dims)) * onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
               for t in onnx.load(str(path)).graph.initializer)


def step_options(bundle: Path, photos: list[Path], calls: int = 300, rounds: int = 5) -> dict:
    """Per-call ms of each way to run ``bundle``'s decoder step on the first photo's first step, and how
    far each agrees with onnxruntime's log-probabilities; then whole greedy decodes of every photo,
    step-wise against the fused Loop."""
    import onnxruntime as ort
    import openvino as ov
    from openvino._offline_transformations import apply_make_stateful_transformation

    from corel_annotate.export.precision import quantize_dynamic_int8
    from corel_annotate.runtime.search import search_labels

    manifest = load_manifest(bundle)
    seq = manifest.sequence
    if seq is None:
        raise ValueError(f"{bundle}: a scores bundle has no decoder step")
    annotator = Annotator.load(bundle, device="cpu")
    photo = photos[0]
    state = annotator.start_state(annotator.encode(annotator.preprocess([photo])))
    feed = {seq.token_input: np.array([seq.start_id], np.int64), **state.inputs()}
    step_path = bundle / manifest.graphs["decoder_step"].file
    outputs = [seq.log_probs_output, *seq.state]
    rows: dict[str, dict] = {}

    session = ort.InferenceSession(str(step_path), providers=["CPUExecutionProvider"])
    want = session.run(outputs, feed)[0]
    rows["onnxruntime"] = {"ms": _median_ms(lambda: session.run(outputs, feed), calls, rounds), "max_abs_diff": 0.0}

    core = ov.Core()
    config = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
    plain = core.compile_model(str(step_path), "CPU", config).create_infer_request()
    got = np.array(plain.infer(feed)[seq.log_probs_output])   # a copy: the request reuses its output memory
    rows["openvino"] = {"ms": _median_ms(lambda: plain.infer(feed), calls, rounds),
                        "max_abs_diff": float(np.abs(got - want).max())}

    model = core.read_model(str(step_path))
    model.reshape({p.get_any_name(): ov.PartialShape(list(feed[p.get_any_name()].shape)) for p in model.inputs})
    apply_make_stateful_transformation(model, {inp: out for out, inp in seq.state.items()})
    request = core.compile_model(model, "CPU", config).create_infer_request()
    for variable in request.query_state():   # each variable is named input + output (``h`` + ``h_out``)
        name = next(inp for out, inp in seq.state.items() if variable.name == inp + out)
        variable.state = ov.Tensor(np.ascontiguousarray(feed[name]))
    for name in seq.constants:
        request.set_tensor(name, ov.Tensor(np.ascontiguousarray(feed[name])))
    request.set_tensor(seq.token_input, ov.Tensor(feed[seq.token_input]))
    request.infer()
    got = np.array(request.get_tensor(seq.log_probs_output).data)
    rows["openvino-stateful"] = {"ms": _median_ms(request.infer, calls, rounds),
                                 "max_abs_diff": float(np.abs(got - want).max())}

    with tempfile.TemporaryDirectory() as tmp:
        int8_path = Path(tmp) / "step.int8.onnx"
        quantize_dynamic_int8(step_path, int8_path)
        int8 = ort.InferenceSession(str(int8_path), providers=["CPUExecutionProvider"])
        got = int8.run(outputs, feed)[0]
        rows["onnxruntime-int8"] = {"ms": _median_ms(lambda: int8.run(outputs, feed), calls, rounds),
                                    "max_abs_diff": float(np.abs(got - want).max()),
                                    "weight_bytes": _weight_bytes(int8_path)}
    rows["onnxruntime"]["weight_bytes"] = _weight_bytes(step_path)

    config_greedy = annotator.decoding_config(1)
    count = [0]

    def counted(tokens, st):
        count[0] += 1
        return annotator.step(tokens, st)

    search_labels(counted, state, config_greedy, len(annotator.vocabulary))
    steps = count[0]
    decode_ms = _median_ms(lambda: search_labels(annotator.step, state, config_greedy, len(annotator.vocabulary)),
                           max(1, calls // 10), rounds)
    return {"bundle": str(bundle), "photo": str(photo), "steps_per_photo": steps, "greedy_decode_ms": decode_ms,
            "search_overhead_ms_per_step": decode_ms / steps - rows["onnxruntime"]["ms"], "rows": rows,
            "fused_greedy": fused_greedy(bundle, annotator, photos, rounds)}


def fused_greedy(bundle: Path, annotator: Annotator, photos: list[Path], rounds: int) -> dict:
    """Greedy decodes of every photo, ms per photo (median round): the runtime's step-wise search (no
    ``min_labels``, no memory mix: the rules the Loop prototype leaves out) and the Loop graph on
    onnxruntime and OpenVINO; the photos whose labels the Loop decodes alike."""
    import onnxruntime as ort
    import openvino as ov

    from corel_annotate.runtime.search import search_labels

    from .greedy_loop import greedy_loop_model, loop_feed, loop_labels

    manifest = annotator.manifest
    config = annotator.decoding_config(1, min_labels=0)
    encoded = [annotator.encode(annotator.preprocess([p])) for p in photos]
    model = greedy_loop_model(bundle, manifest, encoded[0]).SerializeToString()
    ort_loop = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    ov_loop = ov.Core().compile_model(ov.Core().read_model(model, b""), "CPU",
                                      {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"})
    feeds = [loop_feed(manifest, e) for e in encoded]

    def stepwise(i: int) -> list[int]:
        [result] = search_labels(annotator.step, annotator.start_state(encoded[i]), config, len(annotator.vocabulary))
        return list(result.labels)

    runs = {"step-wise search (onnxruntime step)": stepwise,
            "Loop on onnxruntime": lambda i: loop_labels(manifest, ort_loop.run(["tokens"], feeds[i])[0]),
            "Loop on OpenVINO": lambda i: loop_labels(manifest, ov_loop(feeds[i])["tokens"])}
    want = [stepwise(i) for i in range(len(photos))]
    out = {}
    for name, run in runs.items():
        same = sum(run(i) == want[i] for i in range(len(photos)))
        out[name] = {"ms_per_photo": _median_ms(lambda: [run(i) for i in range(len(photos))], 1, rounds) / len(photos),
                     "equal_labels": same, "photos": len(photos)}
    return out


def markdown(result: dict, command: str) -> str:
    lines = [f"The decoder step of `{result['bundle']}` at batch 1, one photo's first step, median ms per call:", "",
             "| step | ms per call | max abs diff of log-probabilities from onnxruntime | weight MB read per call |",
             "| --- | ---: | ---: | ---: |"]
    for name, row in result["rows"].items():
        mb = f"{row['weight_bytes'] / 1e6:.1f}" if "weight_bytes" in row else "as onnxruntime"
        lines.append(f"| {name} | {row['ms']:.3f} | {row['max_abs_diff']:.1e} | {mb} |")
    lines += ["", f"One greedy decode through the runtime's search: {result['greedy_decode_ms']:.2f} ms for "
                  f"{result['steps_per_photo']} steps; the search and its feeds add "
                  f"{result['search_overhead_ms_per_step']:.3f} ms per step to onnxruntime's call.", "",
              "Whole greedy decodes (no `min_labels`, no memory mix), ms per photo:", "",
              "| greedy decoding | ms per photo | photos decoded alike |", "| --- | ---: | ---: |",
              *[f"| {name} | {row['ms_per_photo']:.2f} | {row['equal_labels']}/{row['photos']} |"
                for name, row in result["fused_greedy"].items()], "",
              f"Command: `{command}`"]
    return "\n".join(lines) + "\n"
