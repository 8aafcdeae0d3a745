"""Bundles are verified before any session exists; a failed export leaves nothing that loads."""
from __future__ import annotations

import json
import shutil

import pytest

from corel_annotate.export.bundle import export_bundle
from corel_annotate.runtime.annotator import Annotator
from corel_annotate.runtime.bundle.manifest import sha256_file


@pytest.fixture
def bundle_copy(bundles, tmp_path):
    target = tmp_path / "b"
    shutil.copytree(bundles["ria"][1], target)
    return target


def edit_manifest(bundle, change):
    path = bundle / "manifest.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_intact_bundle_loads(bundle_copy):
    assert Annotator.load(bundle_copy).method == "ria"


def test_changed_graph_is_refused(bundle_copy):
    with open(bundle_copy / "decoder_step.onnx", "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(ValueError, match="decoder_step.onnx.*sha256.*changed"):
        Annotator.load(bundle_copy)


def test_missing_file_is_refused(bundle_copy):
    (bundle_copy / "encoder.onnx").unlink()
    with pytest.raises(ValueError, match="encoder.onnx.*missing"):
        Annotator.load(bundle_copy)


def test_unknown_format_version_is_refused(bundle_copy):
    edit_manifest(bundle_copy, lambda d: d.update(format_version=99))
    with pytest.raises(ValueError, match="format version 99"):
        Annotator.load(bundle_copy)


@pytest.mark.parametrize("name", ["../encoder.onnx", "/etc/passwd", "sub/../../x.onnx"])
def test_paths_cannot_leave_the_bundle(bundle_copy, name):
    def change(d):
        d["graphs"]["encoder"]["file"] = name
        d["files"][name] = "0" * 64
    edit_manifest(bundle_copy, change)
    with pytest.raises(ValueError, match="outside the bundle"):
        Annotator.load(bundle_copy)


def test_symlink_out_of_the_bundle_is_refused(bundle_copy, tmp_path):
    outside = tmp_path / "outside.onnx"
    shutil.move(bundle_copy / "encoder.onnx", outside)
    (bundle_copy / "encoder.onnx").symlink_to(outside)
    with pytest.raises(ValueError, match="outside the bundle"):
        Annotator.load(bundle_copy)


def test_graph_interface_must_match_the_manifest(bundle_copy):
    shutil.copy(bundle_copy / "encoder.onnx", bundle_copy / "decoder_step.onnx")
    edit_manifest(bundle_copy, lambda d: d["files"].update({"decoder_step.onnx": sha256_file(bundle_copy / "decoder_step.onnx")}))
    with pytest.raises(ValueError, match="do not match the manifest"):
        Annotator.load(bundle_copy)


def test_failed_export_leaves_no_bundle(bundles, tmp_path):
    target = tmp_path / "strict.bundle"
    with pytest.raises(ValueError, match="differs from PyTorch"):
        export_bundle(bundles["attention"][0], target, tolerance=0.0, log=lambda _m: None)
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_existing_bundle_is_kept_unless_forced(bundles, tmp_path):
    target = tmp_path / "cnn.bundle"
    export_bundle(bundles["cnn"][0], target, log=lambda _m: None)
    with pytest.raises(ValueError, match="already exists"):
        export_bundle(bundles["cnn"][0], target, log=lambda _m: None)
    export_bundle(bundles["cnn"][0], target, force=True, log=lambda _m: None)
    assert Annotator.load(target).method == "cnn"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cnn.bundle"]
