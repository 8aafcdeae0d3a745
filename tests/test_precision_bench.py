"""int8 and fp16 bundles, and one small corel-bench run with its JSON, Markdown and PNG outputs."""
from __future__ import annotations

import json
import sys

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

from corel_annotate.benchmarks.cli import app as bench_app
from corel_annotate.benchmarks.flops import graph_flops
from corel_annotate.benchmarks.hardware import machine, markdown_line
from corel_annotate.export.bundle import export_bundle
from corel_annotate.runtime.annotator import Annotator
from corel_annotate.runtime.evaluation.runner import evaluate_bundle
from test_infer_cli import cpu_has_bf16


def tensorrt_importable() -> bool:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def lowered(bundles, tmp_path_factory):
    root = tmp_path_factory.mktemp("lowered")
    ckpt = bundles["attention"][0]
    out = {p: export_bundle(ckpt, root / f"{p}.bundle", precision=p, log=lambda _m: None)[0] for p in ("int8", "fp16")}
    out["fp32"] = bundles["attention"][1]
    return out


INT8_BUDGET = 0.01
"""The advertised int8 budget: per-class F1 at most 0.01 below fp32 (docs/export.md, docs/performance.md)."""


def split_targets(data) -> np.ndarray:
    """The test split's multi-hot targets, read from the split file and the vocabulary directly."""
    vocab = (data / "vocabulary.txt").read_text().split()
    samples = json.loads((data / "test.json").read_text())["samples"]
    targets = np.zeros((len(samples), len(vocab)), dtype=np.int64)
    for i, sample in enumerate(samples):
        targets[i, [vocab.index(label) for label in sample["image_labels"]]] = 1
    return targets


def hand_per_class_f1(targets: np.ndarray, label_ids) -> float:
    """Per-class F1 as the papers define it: the F1 of the mean per-label precision and the mean per-label
    recall (a label never predicted has precision 0)."""
    predicted = np.zeros_like(targets)
    for i, ids in enumerate(label_ids):
        predicted[i, list(ids)] = 1
    tp = (predicted * targets).sum(axis=0)
    precision = np.mean([t / p if p else 0.0 for t, p in zip(tp, predicted.sum(axis=0), strict=True)])
    recall = np.mean([t / g if g else 0.0 for t, g in zip(tp, targets.sum(axis=0), strict=True)])
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def op_types(path) -> set[str]:
    return {n.op_type for n in onnx.load(str(path)).graph.node}


def test_int8_bundle_is_quantised_and_close_to_fp32(lowered, synth_data):
    encoder_ops = op_types(lowered["int8"] / "encoder.onnx")
    assert {"QuantizeLinear", "DequantizeLinear"} <= encoder_ops
    assert "DynamicQuantizeLinear" in op_types(lowered["int8"] / "decoder_step.onnx")
    manifest = json.loads((lowered["int8"] / "manifest.json").read_text())
    assert manifest["precision"] == "int8"
    fp32 = evaluate_bundle(Annotator.load(lowered["fp32"]), synth_data)
    int8 = evaluate_bundle(Annotator.load(lowered["int8"]), synth_data)
    assert len(fp32.annotations) == len(int8.annotations) == len(split_targets(synth_data)) > 0
    agree = np.mean([set(a.label_ids) == set(b.label_ids) for a, b in zip(fp32.annotations, int8.annotations)])
    assert agree > 0.7
    # F1 computed here from the two bundles' label sets on the test photos, against the advertised budget
    targets = split_targets(synth_data)
    f1_fp32 = hand_per_class_f1(targets, [a.label_ids for a in fp32.annotations])
    f1_int8 = hand_per_class_f1(targets, [a.label_ids for a in int8.annotations])
    assert f1_fp32 > 0.5, "the fp32 bundle has learnt the synthetic labels"
    assert f1_int8 >= f1_fp32 - INT8_BUDGET, (f1_fp32, f1_int8)


def test_int8_export_is_accuracy_controlled_on_the_validation_photos(lowered, bundles):
    """The int8 export judges the whole int8 bundle on the checkpoint's own validation photos and keeps
    the per-class F1 drop within the default budget (0.01), recording what it measured."""
    from corel_annotate.export.int8_accuracy import validation_set
    from corel_annotate.training.checkpoint import load_checkpoint

    from corel_annotate.export.int8_accuracy import DEFAULT_MAX_DROP
    from corel_annotate.runtime.dataset import CorelDataset
    from corel_annotate.runtime.preprocessing import preprocess_file
    from corel_annotate.training.data import validation_split

    report = json.loads((lowered["int8"] / "manifest.json").read_text())["source"]["int8"]
    cfg, _ = load_checkpoint(bundles["attention"][0])
    assert report["method"] == "nncf accuracy control"
    from corel_annotate.runtime.engines.isa import isa_names, this_cpu

    assert (report["cpu"], report["isa"]) == (this_cpu()[0], isa_names(this_cpu()[1]))   # the ISA it was judged on
    assert report["validation_images"] == cfg.data["val_images"] == len(validation_set(cfg).images)
    assert DEFAULT_MAX_DROP == report["max_drop"] == INT8_BUDGET
    # the validation photos the training run held out, run through both bundles here, F1 counted here
    train = CorelDataset(cfg.data["dir"]).read("train")
    vocab = json.loads((lowered["fp32"] / "manifest.json").read_text())["vocabulary"]
    val_idx, _ = validation_split(len(train.samples), cfg.train.val_fraction, cfg.train.seed)
    assert len(val_idx) == report["validation_images"] > 0
    targets = np.zeros((len(val_idx), len(vocab)), dtype=np.int64)
    for row, i in enumerate(val_idx):
        targets[row, [vocab.index(label) for label in train.samples[i].labels]] = 1
    f1 = {}
    for precision in ("fp32", "int8"):
        annotator = Annotator.load(lowered[precision], device="cpu")
        images = np.stack([preprocess_file(train.samples[i].path, annotator.preprocess_config) for i in val_idx])
        ids = [a.label_ids for k in range(0, len(images), 16) for a in annotator.annotate_batch(images[k:k + 16])]
        f1[precision] = hand_per_class_f1(targets, ids)
    assert f1["fp32"] > 0.5, "the fp32 bundle has learnt the synthetic labels"
    assert f1["int8"] >= f1["fp32"] - INT8_BUDGET, f1
    # and the int8 figure the exporter recorded is what this bundle scores
    assert report["int8_per_class_f1"] == pytest.approx(f1["int8"], abs=1e-6), (report, f1)


def test_int8_validation_split_is_the_training_runs(bundles, synth_data):
    """The photos the int8 check judges on are exactly the ones training held out (none it fitted on),
    and there is no check when the training data is not on the machine."""
    import dataclasses

    from corel_annotate.export.int8_accuracy import validation_set
    from corel_annotate.runtime.dataset import CorelDataset
    from corel_annotate.runtime.preprocessing import preprocess_file
    from corel_annotate.training.checkpoint import load_checkpoint
    from corel_annotate.training.data import validation_split

    cfg, _ = load_checkpoint(bundles["attention"][0])
    train = CorelDataset(synth_data).read("train")
    val_idx, fit_idx = validation_split(len(train.samples), cfg.train.val_fraction, cfg.train.seed)
    assert not set(val_idx) & set(fit_idx) and len(val_idx) + len(fit_idx) == len(train.samples)
    validation = validation_set(cfg)
    first = preprocess_file(train.samples[val_idx[0]].path, cfg.preprocess)
    assert np.array_equal(validation.images[0], first)
    assert validation.targets.sum(axis=1).min() >= 1
    assert validation_set(dataclasses.replace(cfg, data={**cfg.data, "dir": str(synth_data / "missing")})) is None


def test_fp16_bundle_keeps_the_fp32_interface(lowered, synth_data):
    model = onnx.load(str(lowered["fp16"] / "encoder.onnx"))
    fp32 = onnx.load(str(lowered["fp32"] / "encoder.onnx"))
    assert any(init.data_type == onnx.TensorProto.FLOAT16 for init in model.graph.initializer)
    # uint8 pixels in, float32 out, as the fp32 bundle
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert [o.type.tensor_type.elem_type for o in model.graph.output] == \
        [o.type.tensor_type.elem_type for o in fp32.graph.output] == [onnx.TensorProto.FLOAT] * len(fp32.graph.output)
    fp32 = evaluate_bundle(Annotator.load(lowered["fp32"]), synth_data)
    fp16 = evaluate_bundle(Annotator.load(lowered["fp16"]), synth_data)
    agree = np.mean([set(a.label_ids) == set(b.label_ids) for a, b in zip(fp32.annotations, fp16.annotations)])
    assert agree > 0.95


def hand_count_graph(path) -> None:
    """A graph whose multiply-adds are counted by hand: a strided Conv with "same" padding (sizes known only at
    run time), a depthwise Conv, a Flatten, a MatMul and a Gemm with transB, batch left free."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name) for name, shape in
             (("w1", (8, 3, 3, 3)), ("w2", (8, 1, 3, 3)), ("w3", (8 * 8 * 8, 10)), ("w4", (4, 10)), ("b4", (4,)))]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], strides=[2, 2], auto_pad="SAME_UPPER"),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], group=8, pads=[1, 1, 1, 1]),
             helper.make_node("Flatten", ["c2"], ["f"]),
             helper.make_node("MatMul", ["f", "w3"], ["m"]),
             helper.make_node("Gemm", ["m", "w4", "b4"], ["y"], transB=1)]
    graph = helper.make_graph(nodes, "hand", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 15, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))


def test_flops_match_a_hand_count(tmp_path):
    hand_count_graph(tmp_path / "hand.onnx")
    # per photo, 2 FLOPs per multiply-add:
    #   Conv 3->8, 3x3, stride 2, "same": 15x16 -> 8x8 outputs, each 3*3*3 multiply-adds: 2 * 8*8*8 * 27 = 27648
    #   depthwise Conv, 8 groups of one channel, 3x3, pad 1: 8x8 kept,  each 1*3*3:        2 * 8*8*8 * 9  =  9216
    #   MatMul [512] x [512, 10]:                                                          2 * 10 * 512   = 10240
    #   Gemm [10] x [4, 10]^T:                                                             2 * 4 * 10     =    80
    per_photo = 27648 + 9216 + 10240 + 80
    assert graph_flops(tmp_path / "hand.onnx", batch=1) == per_photo == 47184
    assert graph_flops(tmp_path / "hand.onnx", batch=3) == 3 * per_photo


def test_encoder_flops_scale_with_the_batch(bundles):
    flops = graph_flops(bundles["cnn"][1] / "encoder.onnx", batch=1)
    assert flops > 0 and graph_flops(bundles["cnn"][1] / "encoder.onnx", batch=2) == pytest.approx(2 * flops)


def test_corel_bench_latency_writes_table_chart_and_json(bundles, synth_data, tmp_path):
    out = tmp_path / "bench"
    result = CliRunner().invoke(bench_app, ["latency", "--checkpoint", str(bundles["attention"][0]), "--data",
                                            str(synth_data), "--out-dir", str(out), "--batch-sizes", "1,2",
                                            "--beams", "1,3", "--precisions", "fp32,int8", "--images", "6",
                                            "--repeats", "2", "--warmup", "1"])
    assert result.exit_code == 0, result.output
    data = json.loads((out / "latency.json").read_text())
    notes = [r for r in data["rows"] if r.get("note")]
    if tensorrt_importable():   # measured rows (below), and no excuse
        assert not any(r["variant"].startswith("tensorrt") for r in notes), notes
    else:
        assert [(r["variant"], r["note"].split(" (")[0]) for r in notes] == \
            [("tensorrt", "TensorRT is not installed on this machine")]
    measured = {(r["variant"], r["batch"]) for r in data["rows"] if not r.get("note")}
    openvino = ["openvino-fp32", "openvino-fp32-openvino-step", "openvino-fp32-float-input", "openvino-int8"] + \
        (["openvino-bf16", "openvino-bf16-openvino-step", "openvino-bf16-float-input"] if cpu_has_bf16() else [])
    runtime = ["runtime-fp32", "runtime-fp32-float-input", "runtime-int8"]
    tensorrt = ["tensorrt-fp32", "tensorrt-fp16"] if tensorrt_importable() else []
    assert measured == {(v, b) for v in ["pytorch-eager", *runtime, *openvino, *tensorrt] for b in (1, 2)}
    # the float-input twin: the same checkpoint exported with format 3's normalised input, timed beside
    assert json.loads((out / "attention.fp32-float-input.bundle" / "manifest.json").read_text())["preprocess"]["input_dtype"] == "float32"
    assert set(data["stages"]) >= {"runtime-fp32", "runtime-fp32-float-input"}
    for row in data["rows"]:   # the public API, one call per photo, at batch 1 of the runtime's rows only
        if not row.get("note"):
            assert (row["api_ms"] is not None) == (row["batch"] == 1 and row["variant"] != "pytorch-eager")
    assert "| runtime-fp32-float-input | " in (out / "latency.md").read_text().split("`Annotator.annotate` ms/photo")[1]
    for row in data["rows"]:
        if not row.get("note"):
            assert set(row["end_to_end_ms"]) == {"greedy", "beam3"}
            assert 0 < row["encoder_ms"]["p10"] <= row["encoder_ms"]["median"] <= row["encoder_ms"]["p90"]
    assert data["hardware"]["peak_gflops"] > 0 and data["encoder_gflops"] > 0
    assert data["machine"]["cores"] >= 1 and data["machine"]["precision"].startswith("per row: fp32, int8")
    assert (out / "latency.md").read_text().splitlines()[-1] == markdown_line(data["machine"])
    assert 0 < data["infer"]["fraction_of_encoder_bound"]
    table = (out / "latency.md").read_text()
    assert f"| runtime-int8 | {data['files']['mean_mb']:.2f} | 2 |" in table and "% of peak" in table
    assert (out / "latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_corel_bench_latency_on_camera_size_photos(bundles, synth_data, tmp_path):
    out = tmp_path / "bench"
    result = CliRunner().invoke(bench_app, ["latency", "--checkpoint", str(bundles["attention"][0]), "--data",
                                            str(synth_data), "--out-dir", str(out), "--batch-sizes", "1",
                                            "--beams", "1", "--precisions", "fp32", "--images", "3", "--no-torch",
                                            "--no-accuracy", "--repeats", "1", "--warmup", "0", "--rounds", "1",
                                            "--photo-size", "1024x768", "--jpeg-mb", "0.3", "--no-openvino",
                                            "--no-float-input"])
    assert result.exit_code == 0, result.output
    data = json.loads((out / "latency.json").read_text())
    photos = sorted((out / "camera-1024x768-0.3mb-q92-baseline-o4").glob("*.jpg"))
    assert len(photos) == 3
    assert data["files"]["files"] == 3 and abs(data["files"]["mean_mb"] - 0.3) < 0.06, data["files"]
    assert f"| runtime-fp32 | {data['files']['mean_mb']:.2f} | 1 |" in (out / "latency.md").read_text()
    from PIL import Image
    with Image.open(photos[0]) as im:
        assert im.size == (1024, 768) and im.format == "JPEG"
    stages = data["stages"]
    assert set(stages) == {"runtime-fp32", "runtime-fp32-full-decode"}
    for st in stages.values():
        assert st["photo_pixels"] == [1024, 768]
        assert sum(st["share"].values()) == pytest.approx(1.0)
    assert {r["variant"] for r in data["rows"] if not r.get("note")} == {"runtime-fp32", "runtime-fp32-full-decode"}
    assert data["infer_full_decode"]["images"] == data["infer"]["images"]
    assert "decode pixels" in (out / "latency.md").read_text()
    bad = CliRunner().invoke(bench_app, ["latency", "--checkpoint", str(bundles["attention"][0]), "--data",
                                         str(synth_data), "--out-dir", str(out), "--photo-size", "big"])
    assert bad.exit_code == 2
    too_big = CliRunner().invoke(bench_app, ["latency", "--checkpoint", str(bundles["attention"][0]), "--data",
                                             str(synth_data), "--out-dir", str(out), "--photo-size", "64x48",
                                             "--jpeg-mb", "5", "--no-torch", "--precisions", "fp32"])
    assert too_big.exit_code == 2 and "reaches only" in too_big.output


def test_corel_bench_step_times_each_way_to_run_the_step_and_checks_they_agree(bundles, synth_data, tmp_path):
    """The stateful OpenVINO step (state kept in the request, constants bound once) computes what the
    onnxruntime step computes; the int8 step reads about a quarter of the weight bytes."""
    photos = sorted((synth_data / "images").glob("*.jpeg"))[:6]
    result = CliRunner().invoke(bench_app, ["step", "--model", str(bundles["attention"][1]),
                                            *[a for p in photos for a in ("--photo", str(p))],
                                            "--calls", "5", "--rounds", "1", "--out-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    this = machine()
    assert result.output.startswith(f"corel-bench on {this.describe()}\n")   # the header names the machine
    record = json.loads((tmp_path / "step.json").read_text())["machine"]   # and the result records it
    assert (record["cpu"], record["cores"], record["isa"], record["flags"]) == (this.cpu, this.cores, this.isa, this.flags)
    assert record["engines"]["onnxruntime"] == this.engines["onnxruntime"]
    assert ("torch" in record["engines"]) == ("torch" in sys.modules)   # PyTorch only where the process imported it
    assert record["precision"] == "fp32 (onnxruntime-int8 row: the int8 step)"
    assert (tmp_path / "step.md").read_text().splitlines()[-1] == markdown_line(record)
    rows = json.loads((tmp_path / "step.json").read_text())["rows"]
    assert set(rows) == {"onnxruntime", "openvino", "openvino-stateful", "onnxruntime-int8"}
    assert rows["openvino"]["max_abs_diff"] < 1e-4 and rows["openvino-stateful"]["max_abs_diff"] < 1e-4
    assert rows["onnxruntime-int8"]["weight_bytes"] < 0.3 * rows["onnxruntime"]["weight_bytes"]
    assert all(row["ms"] > 0 for row in rows.values())
    # the fused Loop decodes what the step-wise search decodes (the rules it leaves out do not act here)
    fused = json.loads((tmp_path / "step.json").read_text())["fused_greedy"]
    assert len(fused) == 3 and all(row["equal_labels"] == row["photos"] == 6 for row in fused.values())
    scores = CliRunner().invoke(bench_app, ["step", "--model", str(bundles["ml-gcn"][1]), "--photo", str(photos[0]),
                                            "--out-dir", str(tmp_path)])
    assert scores.exit_code == 2 and "has no decoder step" in scores.output
