"""The request limits (runtime/bundle/limits.py): the beam cap from the manifest's shapes, the memory bound
kept by decoding in chunks, and the per-request caps, through the served model's real callable."""
from __future__ import annotations

import numpy as np
import pytest

from corel_annotate.runtime.annotator import Annotator
from corel_annotate.runtime.bundle.manifest import load_manifest
from corel_annotate.runtime.bundle.limits import BEAM_CEILING, MIB, RequestLimits, hypothesis_bytes
from corel_annotate.runtime.serve.triton_model import BundleModel


def test_one_hypothesis_costs_at_least_the_rows_the_step_graph_reads(bundles):
    manifest = load_manifest(bundles["attention"][1])
    step = manifest.graphs["decoder_step"]
    shapes = {t.name: t.shape for t in step.inputs}
    # the attention decoder reads its features and their projection once per hypothesis
    features = int(np.prod(shapes["features"][1:])) * 4 + int(np.prod(shapes["projection"][1:])) * 4
    per = hypothesis_bytes(manifest)
    assert 2 * features < per < 4 * features
    assert hypothesis_bytes(load_manifest(bundles["ria"][1])) < per / 5   # no constants: only h, c and the search
    assert hypothesis_bytes(load_manifest(bundles["ml-gcn"][1])) == 0


def test_the_default_cap_fits_the_bound_and_chunks_keep_every_search_within_it(bundles):
    manifest = load_manifest(bundles["attention"][1])
    per = hypothesis_bytes(manifest)
    small = RequestLimits.for_manifest(manifest, decode_memory=10 * per + 1)
    assert small.max_beam_width == 10
    assert RequestLimits.for_manifest(manifest).max_beam_width == BEAM_CEILING
    own = manifest.sequence.decoding.beam_width
    assert RequestLimits.for_manifest(manifest, decode_memory=1).max_beam_width == own   # never below the manifest's
    for width in range(1, small.max_beam_width + 1):
        assert small.chunk_photos(width) * width * per <= small.decode_memory
        assert (small.chunk_photos(width) + 1) * width * per > small.decode_memory
    assert small.chunk_photos(None) == small.chunk_photos(own) != small.chunk_photos(own + 1)   # a request naming no width
    assert "beam width at most 10" in small.describe() and f"{per / MIB:.2f} MB per hypothesis" in small.describe()


@pytest.mark.parametrize("field,value,message", [("max_photos", 0, "max-photos 0: at least 1"),
                                                 ("max_beam_width", True, "must be an integer"),
                                                 ("max_image_bytes", 10 * MIB, "one photo could never be sent")])
def test_limits_are_validated_in_one_place(field, value, message):
    kwargs = {"max_beam_width": 4, "max_request_bytes": 5 * MIB, field: value}
    with pytest.raises(ValueError, match=message):
        RequestLimits(**kwargs)


def test_the_served_model_decodes_in_chunks_with_the_same_labels_and_refuses_over_the_limits(bundles, synth_data):
    bundle = bundles["attention"][1]
    annotator = Annotator.load(bundle, device="cpu")
    manifest = annotator.manifest
    per = hypothesis_bytes(manifest)
    photos = sorted((synth_data / "images").iterdir())[:5]
    data = [p.read_bytes() for p in photos]
    want = annotator.annotate(photos, beam_width=3)
    # room for one photo at width 3 per search: five photos go through five searches
    limits = RequestLimits(4, decode_memory=3 * per, hypothesis_bytes=per, max_photos=4,
                           max_request_bytes=sum(map(len, data[:4])) + 1, max_image_bytes=max(map(len, data)))
    model = BundleModel(annotator, "attention", limits)
    calls: list[int] = []
    annotate = annotator.annotate_batch
    annotator.annotate_batch = lambda batch, **kw: calls.append(len(batch)) or annotate(batch, **kw)
    requests = [{"image": np.array([[d] for d in data[:3]], dtype=object), "beam_width": np.array([[3]] * 3)},
                {"image": np.array([[d] for d in data[3:]], dtype=object), "beam_width": np.array([[3]] * 2)},
                {"image": np.array([[d] for d in data], dtype=object)},                      # 5 photos: over 4
                {"image": np.array([[data[0]]], dtype=object), "beam_width": np.array([[5]])}]  # width over 4
    replies = model(requests)
    assert calls == [1] * 5
    labels = [[v.decode() for v in row if v] for r in replies[:2] for row in r["labels"]]
    assert labels == [a.labels for a in want]
    assert all("at most 4 per request" in e.decode() for e in replies[2]["error"].reshape(-1))
    assert "more than this server's cap of 4" in replies[3]["error"].reshape(-1)[0].decode()
    assert not any(e for r in replies[:2] for e in r["error"].reshape(-1))
    model.close()


def test_the_ray_job_refuses_a_beam_above_its_cap_before_any_photo_is_read(bundles):
    from corel_annotate.runtime.jobs.ray_job import RayJob, Sizing

    bundle = bundles["attention"][1]
    manifest = load_manifest(bundle)
    job = RayJob("local", bundle, manifest, "cpu", "fp32", Sizing(1, 1.0, 1), None, False,
                 limits=RequestLimits.for_manifest(manifest, max_beam_width=8))
    job.check_overrides(beam_width=8)
    with pytest.raises(ValueError, match="beam width 9 is more than this server's cap of 8 .*--max-beam-width raises it"):
        job.check_overrides(beam_width=9)
    with pytest.raises(ValueError, match="at least 1"):
        job.check_overrides(beam_width=0)   # the bundle's own rules still come first
