"""corel-infer end to end on real JPEG files: formats, inputs, bad files, attention maps, exit codes."""
from __future__ import annotations

import csv
import io
import json

from PIL import Image
from typer.testing import CliRunner

from corel_annotate.runtime.cli.infer import infer_app

runner = CliRunner()


def test_folder_to_jsonl_file_and_attention_maps(bundles, synth_data, tmp_path):
    out = tmp_path / "r.jsonl"
    maps = tmp_path / "maps"
    images = sorted((synth_data / "images").iterdir())[:6]
    folder = tmp_path / "imgs"
    (folder / "nested").mkdir(parents=True)
    for i, p in enumerate(images):
        (folder / ("nested" if i % 2 else "") / p.name).write_bytes(p.read_bytes())
    result = runner.invoke(infer_app, [str(folder), "--model", str(bundles["attention"][1]), "-o", str(out),
                                       "--attention-maps", str(maps), "--no-progress", "--beam-width", "3"])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 6 and all(r["status"] == "ok" for r in records)
    vocab = (synth_data / "vocabulary.txt").read_text().split()
    assert all(set(r["labels"]) <= set(vocab) and len(r["scores"]) == len(r["labels"]) for r in records)
    pngs = sorted(maps.glob("*.png"))
    assert len(pngs) == sum(len(r["labels"]) for r in records)
    with Image.open(pngs[0]) as im:
        assert im.format == "PNG" and im.mode == "RGB"


def test_split_file_csv_and_json_formats(bundles, synth_data):
    args = [str(synth_data / "test.json"), "--model", str(bundles["ml-gcn"][1]), "--no-progress"]
    as_csv = runner.invoke(infer_app, args + ["--format", "csv", "--top-k", "2"])
    assert as_csv.exit_code == 0
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    n_test = len(json.loads((synth_data / "test.json").read_text())["samples"])
    assert len(rows) == n_test and all(len(r["labels"].split(";")) <= 2 for r in rows)
    as_json = runner.invoke(infer_app, args + ["--format", "json"])
    assert len(json.loads(as_json.stdout)) == n_test


def test_bad_files_get_error_records_and_exit_1(bundles, synth_data, tmp_path):
    good = sorted((synth_data / "images").iterdir())[0]
    (tmp_path / "good.jpeg").write_bytes(good.read_bytes())
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("not an image")
    (tmp_path / "cut.jpg").write_bytes(good.read_bytes()[:200])
    listing = tmp_path / "list.txt"
    listing.write_text("good.jpeg\nempty.jpg\ntext.jpg\ncut.jpg\nmissing.jpg\n")
    result = runner.invoke(infer_app, [str(listing), "--model", str(bundles["cnn"][1]), "--no-progress"])
    assert result.exit_code == 1
    records = {json.loads(line)["image"].rsplit("/", 1)[-1]: json.loads(line) for line in result.stdout.splitlines()}
    assert records["good.jpeg"]["status"] == "ok"
    for name in ("empty.jpg", "text.jpg", "cut.jpg", "missing.jpg"):
        assert records[name]["status"] == "error" and name in records[name]["error"]
        assert "\n" not in records[name]["error"]
    strict = runner.invoke(infer_app, [str(listing), "--model", str(bundles["cnn"][1]), "--no-progress", "--strict",
                                       "--batch-size", "1"])
    assert strict.exit_code == 1 and len(strict.stdout.splitlines()) == 2


def test_bad_bundle_exits_2(tmp_path, synth_data):
    result = runner.invoke(infer_app, [str(synth_data / "images"), "--model", str(tmp_path), "--no-progress"])
    assert result.exit_code == 2 and "not a bundle" in result.output


def test_missing_provider_falls_back_to_cpu_with_a_message(capsys):
    import onnxruntime as ort

    from corel_annotate.runtime.engines import onnxruntime_session as session

    if "CUDAExecutionProvider" in ort.get_available_providers():
        import pytest
        pytest.skip("this onnxruntime has CUDA")
    session._warned.discard("cuda")
    assert session.providers_for("cuda") == ["CPUExecutionProvider"]
    err = capsys.readouterr().err
    assert "CUDAExecutionProvider" in err and "CPU" in err and err.count("\n") == 1


def test_bad_decoding_options_exit_2_before_any_image(bundles, synth_data, tmp_path):
    image = str(next((synth_data / "images").iterdir()))
    for model, option in ((bundles["ria"][1], ["--beam-width", "0"]), (bundles["attention"][1], ["--beam-width", "-1"]),
                          (bundles["cnn"][1], ["--top-k", "0"]), (bundles["cnn"][1], ["--threshold", "1.5"])):
        out = tmp_path / "never.jsonl"
        result = runner.invoke(infer_app, [image, "--model", str(model), "-o", str(out), "--no-progress", *option])
        assert result.exit_code == 2, (option, result.output)
        assert "error:" in result.output and "Traceback" not in result.output
        assert not out.exists() or out.stat().st_size == 0


def test_attention_maps_need_a_bundle_with_an_attention_output(bundles, synth_data, tmp_path):
    image = str(next((synth_data / "images").iterdir()))
    result = runner.invoke(infer_app, [image, "--model", str(bundles["ria"][1]), "--attention-maps",
                                       str(tmp_path / "maps"), "--no-progress"])
    assert result.exit_code == 2 and "attention weights" in result.output


def cpu_has_bf16() -> bool:
    """Whether this CPU has bfloat16 units, read from the kernel's CPU flags (not through OpenVINO): AVX-512
    BF16 (every AMX CPU has it too) or AVX2-VNNI-INT8 with AVX-NE-CONVERT, the two ISAs OpenVINO's CPU
    plugin runs bf16 on."""
    flags = set()
    for line in open("/proc/cpuinfo", encoding="utf-8"):
        if line.startswith("flags"):
            flags |= set(line.split(":", 1)[1].split())
    assert flags, "no CPU flags in /proc/cpuinfo"
    return "avx512_bf16" in flags or {"avx_vnni_int8", "avx_ne_convert"} <= flags


def openvino_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("openvino") is not None


def test_the_engine_that_ran_is_reported(bundles, synth_data):
    image = str(next((synth_data / "images").iterdir()))
    auto = runner.invoke(infer_app, [image, "--model", str(bundles["cnn"][1]), "--no-progress"])
    # the documented default (docs/inference.md): OpenVINO, in bf16 where the CPU has bfloat16 units
    expected = ("openvino bf16" if cpu_has_bf16() else "openvino fp32") if openvino_installed() else "onnxruntime-cpu fp32"
    assert auto.exit_code == 0 and f"({expected})" in auto.output, auto.output
    plain = runner.invoke(infer_app, [image, "--model", str(bundles["cnn"][1]), "--no-progress", "--device", "cpu"])
    assert plain.exit_code == 0 and "(onnxruntime-cpu fp32)" in plain.output
    refused = runner.invoke(infer_app, [image, "--model", str(bundles["cnn"][1]), "--no-progress", "--device", "cpu",
                                        "--precision", "bf16"])
    assert refused.exit_code == 2 and "needs --device openvino" in refused.output
