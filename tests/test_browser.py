"""The browser runtime (runtime/web/) in a real Chromium against the Python runtime, through corel-web's server.

Debian's chromium is driven by Playwright through ``executable_path`` (``make test`` installs both).
Outside CI a machine without chromium skips these tests; in CI (``CI=true``) a missing browser fails.
"""
from __future__ import annotations

import copy
import json
import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from PIL import Image
from typer.testing import CliRunner

from corel_annotate.benchmarks.browser import open_page
from corel_annotate.runtime.annotator import Annotator
from corel_annotate.runtime.dataset import CorelDataset
from corel_annotate.runtime.bundle.manifest import BundleManifest, load_manifest
from corel_annotate.runtime.preprocessing import preprocess_file
from corel_annotate.runtime.web.server import PageConfig, WebServer
from test_manifest_rules import BOUND_RULES, CASES as RULE_CASES_FLAT
from test_manifest_schema import MEMORY_MUTATIONS, VALIDATOR, _get, manifests, set_path, typed_fields, wrong_value

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed: `make browser` (apt-get install chromium) should have run")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture(scope="module")
def photos(synth_data, tmp_path_factory) -> Path:
    """Real photos of the synthetic set plus the awkward inputs: PNG with alpha, a palette PNG with a
    transparent colour, EXIF-rotated and grayscale JPEGs, a large JPEG (antialiased downscale), a broken file."""
    out = tmp_path_factory.mktemp("web-photos")
    test = CorelDataset(synth_data).read("test").samples
    for s in test:
        shutil.copy(s.path, out / s.path.name)
    rng = np.random.default_rng(0)
    base = Image.open(test[0].path).convert("RGB").resize((300, 200))
    rgba = base.convert("RGBA")
    alpha = np.tile(np.linspace(0, 255, 300, dtype=np.uint8), (200, 1))
    rgba.putalpha(Image.fromarray(alpha))
    rgba.save(out / "x-alpha.png")
    palette = base.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    palette.save(out / "x-palette.png", transparency=0)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    Image.open(test[1].path).convert("RGB").resize((240, 160)).save(out / "x-rotated.jpg", quality=92, exif=exif)
    base.convert("L").save(out / "x-gray.jpg", quality=92)
    big = np.clip(np.kron(np.asarray(base, dtype=np.float32), np.ones((5, 5, 1))) + rng.normal(0, 6, (1000, 1500, 3)), 0, 255)
    Image.fromarray(big.astype(np.uint8)).save(out / "x-large.jpg", quality=92)
    (out / "x-broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    return out


@pytest.fixture(scope="module")
def pages(browser, bundles, photos):
    """A served page per bundle: attention (sequence, with attention maps) and ml-gcn (scores)."""
    servers = {m: WebServer(bundles[m][1], photos=photos).start() for m in ("attention", "ml-gcn")}
    try:
        yield {m: open_page(browser, s, "?threads=2&backend=wasm") for m, s in servers.items()}
    finally:
        for s in servers.values():
            s.stop()


SPECIAL = ["x-alpha.png", "x-palette.png", "x-rotated.jpg", "x-gray.jpg", "x-large.jpg"]


def test_page_verifies_the_bundle_and_is_cross_origin_isolated(pages):
    page = pages["attention"]
    assert page.get_attribute("#status", "class") == "ready", page.inner_text("#status")
    assert "attention bundle (sequence, fp32" in page.inner_text("#status")
    assert page.evaluate("crossOriginIsolated") is True
    assert "wasm (2 threads)" in page.inner_text("#status")


@pytest.mark.parametrize("name", SPECIAL + ["first-test-photo"])
def test_preprocessing_matches_python_within_2_of_255(pages, bundles, photos, name):
    if name == "first-test-photo":
        name = sorted(p.name for p in photos.iterdir() if not p.name.startswith("x-"))[0]
    manifest = load_manifest(bundles["attention"][1])
    expected = preprocess_file(photos / name, manifest.preprocess)
    got = np.asarray(pages["attention"].evaluate("u => window.corel.preprocessUrl(u)", f"/photos/{name}"),
                     dtype=np.float32).reshape(expected.shape)
    pre = manifest.preprocess
    # in 8-bit units over 255: pixel input (format 4) is compared as is, a normalised one scaled back by std
    pixels = (np.abs(got - expected.astype(np.float32)) / 255 if pre.input_dtype == "uint8" else
              np.abs(got - expected) * np.asarray(pre.std, dtype=np.float32).reshape((3, 1, 1) if pre.layout == "NCHW" else 3))
    # A JPEG big enough for the draft rule is downscaled in the DCT domain by Pillow and by a box average
    # of the fully decoded photo in the browser: the two differ by up to 3/255 (measured) on single pixels.
    bound = 4 / 255 if name == "x-large.jpg" else 2 / 255
    assert pixels.max() <= bound + 1e-6, f"{name}: largest difference {pixels.max() * 255:.2f}/255"
    assert pixels.mean() < 0.5 / 255


def _parity(page, bundle: Path, names: list[tuple[str, Path]], beam: int | None):
    """For every photo, the page's labels equal the Python runtime's, and its scores and (for a bundle with an
    attention output) attention maps are there: returns the largest score and attention differences."""
    assert names, "no photos to compare"
    annotator = Annotator.load(bundle)
    manifest = load_manifest(bundle)
    has_attention = manifest.sequence is not None and bool(manifest.sequence.attention_output)
    options = {"beam_width": beam, "keep_alphas": True} if annotator.kind == "sequence" else {}
    score_err, attention_err = 0.0, 0.0
    for name, path in names:  # the dataset's photos; the awkward inputs are compared pixel by pixel above
        want = annotator.annotate([path], **options)[0]
        got = page.evaluate("([u, b]) => window.corel.annotateUrl(u, {beamWidth: b})", [f"/photos/{name}", beam])
        assert got["labels"] == list(want.labels), (name, got["labels"], list(want.labels))
        assert len(got["scores"]) == len(want.scores) == len(want.labels), name
        if want.labels:
            score_err = max(score_err, float(np.max(np.abs(np.asarray(got["scores"]) - np.asarray(want.scores)))))
        if has_attention:
            maps, wanted = np.asarray(got["attention"], dtype=np.float64), np.asarray(want.alphas[:len(want.labels)])
            assert len(got["attention"]) == len(want.labels) and maps.shape == wanted.shape, (name, maps.shape, wanted.shape)
            if want.labels:
                attention_err = max(attention_err, float(np.max(np.abs(maps - wanted))))
        else:
            assert got["attention"] == [], name
    return score_err, attention_err


@pytest.mark.parametrize("method,beam", [("attention", 1), ("attention", 3), ("ml-gcn", None)])
def test_browser_labels_match_python(pages, bundles, photos, method, beam):
    names = [(p.name, p) for p in sorted(photos.iterdir()) if not p.name.startswith("x-")]
    score_err, attention_err = _parity(pages[method], bundles[method][1], names, beam)
    assert score_err <= 1e-3
    assert attention_err <= 1e-3


@pytest.mark.parametrize("method", ["attention", "ml-gcn"])
def test_browser_runs_format_3_bundles_with_the_normalised_float_input(browser, float_bundles, photos, method):
    """A bundle made before pixel input (float32 NCHW, normalised by the runtime) works in the page as
    before: its preprocessing equals Python's and its labels equal the Python runtime's."""
    bundle = float_bundles[method]
    manifest = load_manifest(bundle)
    assert manifest.format_version == 3 and manifest.preprocess.input_dtype == "float32"
    names = [(p.name, p) for p in sorted(photos.iterdir()) if not p.name.startswith("x-")][:12]
    with WebServer(bundle, photos=photos) as server:
        page = open_page(browser, server, "?threads=2&backend=wasm")
        assert page.get_attribute("#status", "class") == "ready", page.inner_text("#status")
        expected = preprocess_file(names[0][1], manifest.preprocess)
        got = np.asarray(page.evaluate("u => window.corel.preprocessUrl(u)", f"/photos/{names[0][0]}"), dtype=np.float32)
        assert expected.dtype == np.float32 and got.shape == (expected.size,)
        assert float(np.max(np.abs(got.reshape(expected.shape) - expected))) * min(manifest.preprocess.std) <= 2 / 255 + 1e-6
        score_err, attention_err = _parity(page, bundle, names, 1 if method == "attention" else None)
        page.close()
    assert score_err <= 1e-3 and attention_err <= 1e-3


def test_attention_label_click_draws_a_heat_map_and_broken_photo_fails_alone(pages, photos):
    page = pages["attention"]
    files = [photos / "x-broken.jpg", photos / "x-alpha.png", photos / "x-rotated.jpg"]
    page.set_input_files("#files", [str(f) for f in files])
    page.wait_for_function("() => document.querySelectorAll('.card .meta + ul, .card .error, .card .labels').length >= 3",
                           timeout=60_000)
    cards = page.query_selector_all(".card")
    assert len(cards) == 3
    broken = page.query_selector(".card.failed .error").inner_text()
    assert broken.startswith("x-broken.jpg: cannot read image"), broken
    assert len(page.query_selector_all(".card:not(.failed) .labels li")) >= 2
    page.click(".card:not(.failed) .labels li.clickable")
    painted = page.evaluate("""() => {
      const c = document.querySelector('.card:not(.failed) canvas');
      const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
      let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++;
      return n / (c.width * c.height);
    }""")
    assert painted > 0.5


def test_tampered_bundles_are_refused_in_the_page(browser, bundles, photos, tmp_path):
    graph = tmp_path / "graph.bundle"
    shutil.copytree(bundles["ml-gcn"][1], graph)
    data = bytearray((graph / "encoder.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (graph / "encoder.onnx").write_bytes(bytes(data))
    fields = tmp_path / "fields.bundle"
    shutil.copytree(bundles["ml-gcn"][1], fields)
    manifest = json.loads((fields / "manifest.json").read_text())
    manifest["scoring"]["colour"] = "blue"
    (fields / "manifest.json").write_text(json.dumps(manifest))
    version = tmp_path / "version.bundle"
    shutil.copytree(bundles["ml-gcn"][1], version)
    manifest = json.loads((version / "manifest.json").read_text())
    manifest["format_version"] = 1
    (version / "manifest.json").write_text(json.dumps(manifest))
    expected = {graph: "encoder.onnx: sha256", fields: 'manifest.scoring: unknown field "colour"',
                version: "manifest.format_version: must be one of 2, 3, 4"}
    for bundle, message in expected.items():
        with WebServer(bundle, photos=photos) as server:
            page = open_page(browser, server)
            assert page.get_attribute("#status", "class") == "error"
            assert message in page.inner_text("#status"), page.inner_text("#status")
            page.close()


def test_server_serves_only_its_folders_with_isolation_headers(bundles):
    with WebServer(bundles["ml-gcn"][1], config=PageConfig(threads=1)) as server:
        assert server.url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(server.url + "bundle/manifest.json") as r:
            assert r.headers["Cross-Origin-Opener-Policy"] == "same-origin"
            assert r.headers["Cross-Origin-Embedder-Policy"] == "require-corp"
            assert json.loads(r.read())["kind"] == "scores"
        with urllib.request.urlopen(server.url + "config.json") as r:
            assert json.loads(r.read())["threads"] == 1
        with urllib.request.urlopen(server.url + "vendor/ort-wasm-simd-threaded.jsep.wasm") as r:
            assert r.headers["Content-Type"] == "application/wasm"
        for path in ("bundle/../manifest.py", "bundle/%2e%2e/server.py", "schema/server.py", "photos/a.jpg",
                     "web/../cli/infer.py", "web/server.py", "web/__init__.py"):
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(server.url + path)
            assert err.value.code == 404, path


def test_corel_web_refuses_a_bad_bundle(tmp_path):
    from corel_annotate.runtime.cli.web import web_app

    result = CliRunner().invoke(web_app, ["--model", str(tmp_path / "missing.bundle"), "--port", "0"])
    assert result.exit_code == 2
    assert "missing.bundle" in result.output and "error" in result.output


CHECK_JS = """async (m) => {
  const { validate } = await import('/web/schema.js');
  const { checkManifest } = await import('/web/bundle.js');
  const schema = await (await fetch('/schema/bundle.schema.json')).json();
  return [validate(schema, m), validate(schema, m) ? null : checkManifest(m)];
}"""


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(manifest=manifests(), data=st.data())
def test_browser_schema_check_agrees_with_jsonschema(pages, manifest, data):
    """Random valid manifests, and the same with a required field dropped, a field retyped or an unknown
    field added: the page's schema check accepts exactly what jsonschema accepts, and its cross-field
    rules accept every valid manifest."""
    m = copy.deepcopy(manifest)
    fields = list(typed_fields(BundleManifest, m))
    change = data.draw(st.sampled_from(["none", "drop", "retype", "unknown"]))
    if change == "drop":
        required = [f for f in fields if f[2]]
        path, _, _ = data.draw(st.sampled_from(required))
        set_path(m, path, delete=True)
    elif change == "retype":
        candidates = [(p, wrong_value(tp)) for p, tp, _ in fields if wrong_value(tp) is not None]
        path, value = data.draw(st.sampled_from(candidates))
        set_path(m, path, value)
    elif change == "unknown":
        objects = [()] + [p for p, tp, _ in fields if isinstance(_get(m, p), dict) and p[-1] not in
                          ("state", "files", "source", "versions", "engines", "graphs")]
        path = data.draw(st.sampled_from(objects))
        node = _get(m, path) if path else m
        node["zz_unknown"] = 1
    schema_problem, rule_problem = pages["ml-gcn"].evaluate(CHECK_JS, m)
    assert (schema_problem is None) == VALIDATOR.is_valid(m), (change, schema_problem)
    if change == "none":
        assert rule_problem is None, rule_problem


RULES_JS = """async (m) => {
  const { validate } = await import('/web/schema.js');
  const { checkManifest } = await import('/web/bundle.js');
  const schema = await (await fetch('/schema/bundle.schema.json')).json();
  return [validate(schema, m), checkManifest(m)];
}"""


def _drop_encoder(m):
    del m["graphs"]["encoder"]


def _other_input_dtype(m):
    m["preprocess"]["input_dtype"] = "float32" if m["preprocess"].get("input_dtype", "float32") == "uint8" else "uint8"


BROKEN_MANIFESTS = [   # (kind, what, change, the page's schema message or None, its cross-field rule message)
    ("scores", "format version 1", lambda m: m.update(format_version=1),
     "manifest.format_version: must be one of 2, 3, 4",
     "format version 1; this runtime reads versions 2, 3, 4 (re-export the checkpoint)"),
    ("scores", "format version 5", lambda m: m.update(format_version=5),
     "manifest.format_version: must be one of 2, 3, 4",
     "format version 5; this runtime reads versions 2, 3, 4 (re-export the checkpoint)"),
    ("scores", "no encoder", _drop_encoder, None, "no encoder graph"),
    ("sequence", "no encoder", _drop_encoder, None, "no encoder graph"),
    ("scores", "input dtype", _other_input_dtype, None, "graphs.encoder: input dtype {dtype}, but preprocess.input_dtype is {other}"),
    ("sequence", "input dtype", _other_input_dtype, None, "graphs.encoder: input dtype {dtype}, but preprocess.input_dtype is {other}"),
    ("scores", "one threshold short", lambda m: m["scoring"]["thresholds"].pop(), None,
     "scoring.thresholds has {short} values for {V} labels"),
    ("scores", "one threshold more", lambda m: m["scoring"]["thresholds"].append(0.5), None,
     "scoring.thresholds has {more} values for {V} labels"),
    ("scores", "a label twice", lambda m: m["vocabulary"].append(m["vocabulary"][0]), None,
     'vocabulary label "{first}" appears twice'),
    ("sequence", "stop and start swapped", lambda m: m["sequence"].update(stop_id=m["sequence"]["start_id"],
                                                                           start_id=m["sequence"]["stop_id"]), None,
     "sequence: stop_id {start} and start_id {V} must be {V} and {start}"),
]


@pytest.mark.parametrize("kind, what", [c[:2] for c in BROKEN_MANIFESTS])
def test_browser_manifest_check_refuses_invalid_manifests_with_its_message(pages, bundles, kind, what):
    """Real exported manifests, each broken one way: the page's checks name what is wrong, in these words."""
    _, _, change, schema_message, rule_message = next(c for c in BROKEN_MANIFESTS if c[:2] == (kind, what))
    manifest = json.loads((bundles["ml-gcn" if kind == "scores" else "attention"][1] / "manifest.json").read_text())
    assert pages["ml-gcn"].evaluate(RULES_JS, manifest) == [None, None], "the real manifest passes"
    V = len(manifest["vocabulary"])
    dtype = manifest["graphs"]["encoder"]["inputs"][0]["dtype"]
    words = {"V": V, "start": V + 1, "first": manifest["vocabulary"][0], "dtype": dtype,
             "other": "float32" if dtype == "uint8" else "uint8", "short": V - 1, "more": V + 1}
    broken = copy.deepcopy(manifest)
    change(broken)
    schema_problem, rule_problem = pages["ml-gcn"].evaluate(RULES_JS, broken)
    assert rule_problem == rule_message.format(**words)
    if schema_message is not None:
        assert schema_problem == schema_message
    with pytest.raises(ValueError):
        BundleManifest.from_dict(broken)


# --- bundles with a label memory -----------------------------------------------------------------
def _with_memory_weight(bundle: Path, weight: float, out: Path) -> Path:
    """A copy of ``bundle`` whose manifest's memory weight is ``weight`` (the graphs, and so the sha256 the
    manifest records, are unchanged: the weight is applied by the runtime, not baked into a graph)."""
    shutil.copytree(bundle, out)
    data = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    data["memory"]["weight"] = weight
    (out / "manifest.json").write_text(json.dumps(data, indent=1), encoding="utf-8")
    assert load_manifest(out, verify=True).memory.weight == weight
    return out


@pytest.fixture(scope="module")
def memory_cases(memory_bundles, photos, tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """Per case, a bundle with a label memory that the runtime really applies, and the photos to serve with it:

    * ``scores``: the exported ml-gcn memory bundle (its weight set to 0.5 if the exporter chose 0, so the
      blend does something);
    * ``sequence``: the attention memory bundle with kNN-LM weight 0.3 (the exporter may choose 0);
    * ``added``: the scores bundle after ``corel-memory add`` of photos that bring an 11th label, which only
      the memory scores (``head_labels`` < V), served with those photos."""
    from corel_annotate.export.memory import add_examples
    from corel_annotate.training.synth import SynthConfig, generate

    root = tmp_path_factory.mktemp("web-memory")
    scores = memory_bundles["ml-gcn"]
    if load_manifest(scores).memory.weight == 0:
        scores = _with_memory_weight(scores, 0.5, root / "ml-gcn-w05.bundle")
    sequence = _with_memory_weight(memory_bundles["attention"], 0.3, root / "attention-w03.bundle")
    extra = root / "extra-data"
    generate(extra, SynthConfig(images=80, labels=11, scenes=3, image_size=128, max_labels=4, seed=3))
    added, edit = add_examples(scores, extra, root / "ml-gcn-added.bundle", log=lambda _m: None)
    assert edit.added_labels == [added.vocabulary[-1]] and added.memory.head_labels == len(added.vocabulary) - 1
    extra_photos = root / "extra-photos"
    extra_photos.mkdir()
    for sample in CorelDataset(extra).read("test").samples:
        shutil.copy(sample.path, extra_photos / sample.path.name)
    return {"scores": (scores, photos), "sequence": (sequence, photos),
            "added": (root / "ml-gcn-added.bundle", extra_photos)}


@pytest.fixture(scope="module")
def memory_pages(browser, memory_cases):
    servers = {case: WebServer(bundle, photos=served).start() for case, (bundle, served) in memory_cases.items()}
    try:
        yield {case: open_page(browser, s, "?threads=2&backend=wasm") for case, s in servers.items()}
    finally:
        for s in servers.values():
            s.stop()


SCORES_JS = """async ([x, n]) => {
  const { annotator } = await window.corel.ready;
  const Input = annotator.manifest.preprocess.input_dtype === "uint8" ? Uint8Array : Float32Array;
  return Array.from(await annotator.scores(Input.from(x), n));
}"""


@pytest.mark.parametrize("case,beam", [("scores", None), ("sequence", 1), ("sequence", 3), ("added", None)])
def test_browser_applies_the_label_memory_as_python_does(memory_pages, memory_cases, case, beam):
    """The page runs the memory graph and blends (scores) or interpolates (sequence, kNN-LM) as the Python
    runtime does: the same labels, scores within 1e-3, and for score bundles every label's score equal."""
    bundle, served = memory_cases[case]
    page = memory_pages[case]
    assert page.get_attribute("#status", "class") == "ready", page.inner_text("#status")
    manifest = load_manifest(bundle)
    assert manifest.memory is not None and manifest.memory.weight > 0
    names = [(p.name, p) for p in sorted(served.iterdir()) if not p.name.startswith("x-")]
    score_err, _ = _parity(page, bundle, names, beam)   # the same labels on every photo, or it fails
    assert score_err <= 1e-3
    if manifest.kind == "scores":  # every label's blended score, on the same preprocessed pixels
        annotator = Annotator.load(bundle, device="cpu")
        batch = np.stack([preprocess_file(path, manifest.preprocess) for _, path in names[:8]])
        want = annotator.scores(batch)
        got = np.asarray(page.evaluate(SCORES_JS, [batch.ravel().tolist(), len(batch)]), dtype=np.float32)
        assert got.shape == (want.size,)
        np.testing.assert_allclose(got.reshape(want.shape), want, atol=1e-3, rtol=0)
        if case == "added":  # the added label is scored by the memory alone
            assert want[:, -1].max() > 0


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(manifest=manifests(memory=True))
def test_browser_manifest_check_refuses_broken_memories(pages, manifest):
    """A valid manifest with a label memory passes the page's checks; each broken memory (no memory graph,
    a memory graph without its section, k above the examples, weight outside [0, 1], ...) passes the schema
    and is refused by the page's cross-field rules, as by the Python loader."""
    schema_problem, rule_problem = pages["ml-gcn"].evaluate(CHECK_JS, manifest)
    assert schema_problem is None and rule_problem is None, (schema_problem, rule_problem)
    for i, mutate in enumerate(MEMORY_MUTATIONS):
        broken = copy.deepcopy(manifest)
        mutate(broken)
        with pytest.raises(ValueError):
            BundleManifest.from_dict(broken)
        schema_problem, rule_problem = pages["ml-gcn"].evaluate(CHECK_JS, broken)
        # bounds (k >= 1, weight in [0, 1], temperature > 0) come with the schema; the rest are cross-field rules
        assert (schema_problem is None) == VALIDATOR.is_valid(broken), (i, schema_problem)
        problem = schema_problem or rule_problem
        assert problem is not None, f"memory mutation {i} accepted by the page: {broken.get('memory')}"
        assert "\n" not in problem


@pytest.fixture(scope="module")
def rule_manifests(memory_bundles) -> dict[str, dict]:
    """Real exported manifests with a label memory: one scores bundle, one sequence bundle."""
    return {kind: json.loads((memory_bundles[m] / "manifest.json").read_text(encoding="utf-8"))
            for kind, m in (("scores", "ml-gcn"), ("sequence", "attention"))}


@pytest.mark.parametrize("rule, what", [(c[0], c[1]) for c in RULE_CASES_FLAT])
def test_browser_refuses_every_rule_broken_as_the_loader_does(pages, rule_manifests, rule, what):
    """Each broken manifest of the rules table (tests/test_manifest_rules.py), made from a real exported
    manifest of each kind it applies to: the loader refuses it, and so does the page, through the schema
    when the rule is a bound and through its own checks otherwise."""
    _, _, applies, change = next(c for c in RULE_CASES_FLAT if c[:2] == (rule, what))
    tried = 0
    for manifest in rule_manifests.values():
        if not applies(manifest):
            continue
        tried += 1
        assert pages["ml-gcn"].evaluate(CHECK_JS, manifest) == [None, None]
        broken = copy.deepcopy(manifest)
        change(broken)
        with pytest.raises(ValueError):
            BundleManifest.from_dict(broken)
        schema_problem, rule_problem = pages["ml-gcn"].evaluate(CHECK_JS, broken)
        if rule in BOUND_RULES:
            assert schema_problem is not None, (rule, what, rule_problem)
        assert schema_problem is not None or rule_problem is not None, (rule, what)
    assert tried, (rule, what)


def test_the_page_says_it_cannot_read_heic(pages, tmp_path):
    """A HEIC photo (made here with pillow-heif) dropped on the page: its card says the browser cannot read
    HEIC and where it can be read, instead of a decoder's message."""
    from corel_annotate.runtime.preprocessing import heif_available

    if not heif_available():
        if os.environ.get("CI"):
            pytest.fail("pillow-heif is not installed (the dev extra installs it)")
        pytest.skip("pillow-heif is not installed")
    path = tmp_path / "iphone.heic"
    Image.new("RGB", (64, 48), (10, 200, 30)).save(path)
    assert Image.open(path).format == "HEIF"
    page = pages["ml-gcn"]
    errors = len(page.query_selector_all(".card .error"))
    page.set_input_files("#files", [str(path)])
    page.wait_for_function(f"() => document.querySelectorAll('.card .error').length > {errors}", timeout=60_000)
    message = page.query_selector_all(".card .error")[-1].inner_text()
    assert message.startswith("iphone.heic: this browser cannot read HEIC/HEIF photos"), message
    assert "corel-annotate[heif]" in message


def test_the_page_applies_a_label_map_and_exports_csv_and_xmp(browser, bundles, photos, tmp_path):
    """corel-web --labels: the page's labels equal the Annotator's with the same map; its CSV lists what it
    shows, and exiftool reads the labels back from the XMP sidecars in its zip."""
    import csv
    import io
    import subprocess
    import zipfile

    from corel_annotate.runtime.bundle.label_map import LabelMap

    exiftool = shutil.which("exiftool")
    if exiftool is None and not os.environ.get("CI"):
        pytest.skip("exiftool is not installed")
    label_map = LabelMap.from_dict({"labels": {"sky": {"name": "blue sky", "path": "nature|weather"},
                                               "tree": "plants", "grass": "plants", "people": {"exclude": True},
                                               "water": {"threshold": 0.0}}}, "labels.json")
    bundle = bundles["ml-gcn"][1]
    annotator = Annotator.load(bundle, device="cpu", precision="fp32", labels=label_map)
    names = sorted(p.name for p in photos.iterdir() if not p.name.startswith("x-"))[:24]
    with WebServer(bundle, photos=photos, labels=label_map.bind(annotator.manifest.vocabulary, "scores")) as server:
        page = open_page(browser, server, "?threads=2&backend=wasm")
        try:
            for name in names:
                want = annotator.annotate([photos / name])[0]
                got = page.evaluate("u => window.corel.annotateUrl(u)", f"/photos/{name}")
                assert got["labels"] == want.labels, name
                assert np.allclose(got["scores"], want.scores, atol=1e-3), name
            page.set_input_files("#files", [str(photos / n) for n in names[:4]] + [str(photos / "x-broken.jpg")])
            page.wait_for_function("() => document.querySelectorAll('.card .labels, .card .error').length >= 5", timeout=60_000)
            shown = {card.get_attribute("data-name"): json.loads(card.get_attribute("data-labels"))
                     for card in page.query_selector_all(".card:not(.failed)")}
            assert any(label in ("blue sky", "plants", "water") for labels in shown.values() for label in labels)
            with page.expect_download() as csv_download:
                page.click("#export-csv")
            rows = list(csv.DictReader(io.StringIO(Path(csv_download.value.path()).read_text(encoding="utf-8"))))
            with page.expect_download() as zip_download:
                page.click("#export-xmp")
            archive = zipfile.ZipFile(zip_download.value.path())
        finally:
            page.close()
    assert [r["image"] for r in rows] == names[:4] + ["x-broken.jpg"]
    assert {r["image"]: r["labels"].split(";") for r in rows if r["status"] == "ok"} == shown
    assert rows[-1]["status"] == "error" and rows[-1]["error"].startswith("x-broken.jpg: cannot read image")
    assert sorted(archive.namelist()) == sorted(f"{n}.xmp" for n in shown)
    archive.extractall(tmp_path)
    for name, labels in shown.items():
        out = subprocess.run([exiftool, "-j", "-G1", "-XMP-dc:Subject", "-XMP-lr:HierarchicalSubject",
                              "-XMP-digiKam:TagsList", str(tmp_path / f"{name}.xmp")],
                             capture_output=True, text=True, check=True).stdout
        found = json.loads(out)[0]
        as_list = lambda v: v if isinstance(v, list) else [v]   # noqa: E731
        assert as_list(found["XMP-dc:Subject"]) == labels
        paths = {"blue sky": "nature|weather|"}
        assert as_list(found["XMP-lr:HierarchicalSubject"]) == [f"corel-annotate|{paths.get(x, '')}{x}" for x in labels]
        assert as_list(found["XMP-digiKam:TagsList"]) == [f"corel-annotate/{paths.get(x, '').replace('|', '/')}{x}"
                                                          for x in labels]


def _request(port: int, path: str, host: str | None) -> tuple[int, dict, bytes]:
    """GET ``path`` from 127.0.0.1:``port`` with this ``Host`` header (None: no Host at all)."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.putrequest("GET", path, skip_host=True)
    if host is not None:
        conn.putheader("Host", host)
    conn.endheaders()
    reply = conn.getresponse()
    out = reply.status, dict(reply.headers), reply.read()
    conn.close()
    return out


def test_server_answers_only_requests_addressed_to_it(bundles, photos, capfd):
    """DNS rebinding: a page on attacker.example resolving its name to 127.0.0.1 sends its own Host."""
    name = sorted(p.name for p in photos.iterdir() if p.suffix == ".jpeg")[0]
    with WebServer(bundles["attention"][1], photos=photos, allow_hosts=("Photos.Example.org",)) as server:
        port = server.httpd.server_address[1]
        paths = ["/", f"/photos/{name}", "/bundle/manifest.json", "/config.json", "/web/app.js"]
        for path in paths:
            for host in (f"attacker.example:{port}", "attacker.example", f"127.0.0.1:{port + 1}", f"localhost.attacker.example:{port}",
                         f"127.0.0.1.attacker.example:{port}", f"127.0.0.1:{port}:1", "photos.example.org:x", "", None):
                status, _, body = _request(port, path, host)
                assert status == 403, (path, host, status)
                assert (photos / name).read_bytes() not in body and b'"kind"' not in body
            for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LOCALHOST:{port}", f"[::1]:{port}", "photos.example.org",
                         "photos.example.org:443"):
                status, headers, body = _request(port, path, host)
                assert status == 200, (path, host, status)
        _, headers, body = _request(port, f"/photos/{name}", f"127.0.0.1:{port}")
        assert body == (photos / name).read_bytes()
        assert headers["X-Content-Type-Options"] == "nosniff"
        csp = headers["Content-Security-Policy"]
        assert "default-src 'self'" in csp and "'wasm-unsafe-eval'" in csp and "'unsafe-eval'" not in csp.replace("'wasm-unsafe-eval'", "")
    err = capfd.readouterr().err
    assert f"refused GET /photos/{name} for Host 'attacker.example:{port}'" in err
    assert "--allow-host" in err and all(len(line) < 300 for line in err.splitlines())
    with pytest.raises(ValueError, match="--allow-host"):
        WebServer(bundles["attention"][1], allow_hosts=(" ",))


def test_page_works_under_its_csp_and_caps_the_beam_option(browser, bundles, photos):
    """The page annotates under the Content-Security-Policy with no violation, and a ?beam= above the
    server's cap is each photo's error, not a search."""
    from corel_annotate.runtime.bundle.limits import RequestLimits

    bundle = bundles["attention"][1]
    name = sorted(p.name for p in photos.iterdir() if p.suffix == ".jpeg")[0]
    limits = RequestLimits.for_manifest(load_manifest(bundle), max_beam_width=4)
    expected = Annotator.load(bundle, device="cpu").annotate([photos / name], beam_width=4)[0].labels
    with WebServer(bundle, photos=photos, limits=limits) as server:
        for query, want in (("?backend=wasm&threads=2&beam=4", expected), ("?backend=wasm&beam=5", "cap of 4"),
                            ("?backend=wasm&beam=-3", "at least 1")):
            page = browser.new_page()
            violations: list[str] = []
            page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
            page.goto(server.url + query)
            page.wait_for_function("() => document.getElementById('status').className !== 'busy'", timeout=180_000)
            assert page.get_attribute("#status", "class") == "ready", page.inner_text("#status")
            page.set_input_files("#files", [str(photos / name)])
            page.wait_for_function("() => document.querySelectorAll('.card .labels, .card .error').length >= 1", timeout=60_000)
            if isinstance(want, list):
                assert json.loads(page.get_attribute(".card", "data-labels")) == want
            else:
                assert want in page.inner_text(".card .error"), page.inner_text(".card")
            assert page.evaluate("document.querySelectorAll('img[src^=\"blob:\"]').length") == 1
            assert not violations, violations
            page.close()
