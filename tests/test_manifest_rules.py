"""One table of manifest rules (``runtime/bundle/rules.py``) held to both checkers: the Python loader
and the browser's ``bundle.js`` carry exactly the table's rules, each tagged with its id, and one
broken manifest per rule is refused by the loader and, for bounds, by the schema.  The browser's
refusal of the same broken manifests is in ``tests/test_browser.py``."""
from __future__ import annotations

import ast
import copy
import re
from typing import Callable

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from conftest import REPO
from corel_annotate.runtime.bundle.rules import RULE_IDS, RULES, apply_schema_bounds
from corel_annotate.runtime.bundle.schema import manifest_schema
from test_manifest_schema import VALIDATOR, manifests, refused_in_one_line

pytestmark = pytest.mark.runtime  # run by the runtime-only install (make test-runtime), not by the first stage

Case = tuple[str, Callable[[dict], bool], Callable[[dict], None]]
ALL = lambda d: True   # noqa: E731
SCORES = lambda d: d["kind"] == "scores"   # noqa: E731
SEQUENCE = lambda d: d["kind"] == "sequence"   # noqa: E731
MEMORY = lambda d: "memory" in d   # noqa: E731


def _n(d: dict) -> int:
    return len(d["vocabulary"])


def _rename_file(d: dict, new: str) -> None:
    old = d["graphs"]["encoder"]["file"]
    d["graphs"]["encoder"]["file"] = new
    d["files"][new] = d["files"].pop(old)


def _rename_encoder_output(d: dict, name: str, new: str) -> None:
    next(t for t in d["graphs"]["encoder"]["outputs"] if t["name"] == name)["name"] = new


def _state_input(d: dict) -> str:
    return next(iter(d["sequence"]["state"].values()))


def _step_output(d: dict, name: str) -> dict:
    return next(t for t in d["graphs"]["decoder_step"]["outputs"] if t["name"] == name)


# rule id -> broken manifests: (what is broken, which valid manifests it applies to, the change)
RULE_CASES: dict[str, list[Case]] = {
    "format": [("an unreadable version", ALL, lambda d: d.update(format_version=99)),
               ("another format", ALL, lambda d: d.update(format="not-a-bundle"))],
    "vocabulary": [("a label twice", ALL, lambda d: d["vocabulary"].append(d["vocabulary"][0])),
                   ("a label with a space", ALL, lambda d: d["vocabulary"].__setitem__(0, "two words")),
                   ("an empty label", ALL, lambda d: d["vocabulary"].__setitem__(0, ""))],
    "preprocess": [("a 4 px image size", ALL, lambda d: d["preprocess"].update(image_size=4)),
                   ("an unknown resize rule", ALL, lambda d: d["preprocess"].update(resize="crop")),
                   ("an unknown decode rule", ALL, lambda d: d["preprocess"].update(decode="gpu")),
                   ("a zero std", ALL, lambda d: d["preprocess"]["std"].__setitem__(1, 0.0)),
                   ("an unknown layout", ALL, lambda d: d["preprocess"].update(layout="CHW")),
                   ("an unknown input dtype", ALL, lambda d: d["preprocess"].update(input_dtype="int8"))],
    "encoder": [("an image input the encoder lacks", ALL, lambda d: d.update(image_input=d["image_input"] + "x")),
                ("a wrong image size", ALL, lambda d: d["graphs"]["encoder"]["inputs"][0]["shape"].__setitem__(
                    2, d["preprocess"]["image_size"] + 1)),
                ("no encoder", ALL, lambda d: d["graphs"].update(encoder_=d["graphs"].pop("encoder"))),
                ("pixels the encoder does not take", ALL, lambda d: d["preprocess"].update(
                    input_dtype="float32" if d["preprocess"].get("input_dtype") == "uint8" else "uint8")),
                ("a layout the encoder does not take", ALL, lambda d: d["preprocess"].update(
                    layout="NCHW" if d["preprocess"].get("layout") == "NHWC" else "NHWC"))],
    "tensors": [("an output twice", ALL, lambda d: d["graphs"]["encoder"]["outputs"].append(
                    copy.deepcopy(d["graphs"]["encoder"]["outputs"][0]))),
                ("a negative dimension", ALL, lambda d: d["graphs"]["encoder"]["outputs"][0]["shape"].append(-3))],
    "files": [("a graph without its sha256", ALL, lambda d: d["files"].pop(d["graphs"]["encoder"]["file"])),
              ("a graph file outside the bundle", ALL, lambda d: _rename_file(d, "../encoder.onnx")),
              ("a graph file in a folder", ALL, lambda d: _rename_file(d, "sub/encoder.onnx"))],
    "engines": [("an engine for no graph", ALL, lambda d: d.update(engines={"nowhere": {"file": "encoder.onnx"}})),
                ("an engine without a file", ALL, lambda d: d.update(engines={"encoder": {"precision": "fp16"}}))],
    "kind": [("the other kind", ALL, lambda d: d.update(kind="scores" if d["kind"] == "sequence" else "sequence")),
             ("a scores bundle with a step graph", SCORES, lambda d: d["graphs"].update(
                 decoder_step=copy.deepcopy(d["graphs"]["encoder"]))),
             ("a sequence bundle without its step graph", SEQUENCE, lambda d: d["graphs"].pop("decoder_step"))],
    "logits": [("logits the encoder lacks", SCORES, lambda d: d["scoring"].update(logits_output="missing")),
               ("logits of the wrong width", SCORES, lambda d: d["graphs"]["encoder"]["outputs"][0]["shape"].__setitem__(
                   1, 99))],
    "thresholds": [("one threshold too many", SCORES, lambda d: d["scoring"]["thresholds"].append(0.5))],
    "scoring-bounds": [("a threshold above 1", SCORES, lambda d: d["scoring"]["thresholds"].__setitem__(0, 1.5)),
                       ("a negative threshold", SCORES, lambda d: d["scoring"]["thresholds"].__setitem__(0, -0.1)),
                       ("top_k 0", SCORES, lambda d: d["scoring"].update(top_k=0)),
                       ("min_labels -1", SCORES, lambda d: d["scoring"].update(min_labels=-1))],
    "scoring-min-labels": [("min_labels above the labels", SCORES, lambda d: d["scoring"].update(min_labels=_n(d) + 1))],
    "step-inputs": [("a float token", SEQUENCE, lambda d: next(t for t in d["graphs"]["decoder_step"]["inputs"]
                                                            if t["name"] == d["sequence"]["token_input"]).update(dtype="float32")),
                    ("an extra step input", SEQUENCE, lambda d: d["graphs"]["decoder_step"]["inputs"].append(
                        {"name": "zz_extra", "dtype": "float32", "shape": ["batch", 2]}))],
    "step-outputs": [("log-probs the step lacks", SEQUENCE, lambda d: d["sequence"].update(log_probs_output="missing"))],
    "state": [("a state input the encoder lacks", SEQUENCE, lambda d: _rename_encoder_output(d, _state_input(d), "zz_gone"))],
    "log-probs": [("log-probs of the wrong width", SEQUENCE, lambda d: _step_output(
        d, d["sequence"]["log_probs_output"])["shape"].__setitem__(1, _n(d) + 2))],
    "stop-start": [("a stop id off by one", SEQUENCE, lambda d: d["sequence"].update(stop_id=d["sequence"]["stop_id"] + 1)),
                   ("a start id off by one", SEQUENCE, lambda d: d["sequence"].update(start_id=d["sequence"]["start_id"] + 1))],
    "decoding-bounds": [("beam width 0", SEQUENCE, lambda d: d["sequence"]["decoding"].update(beam_width=0)),
                        ("max_len 0", SEQUENCE, lambda d: d["sequence"]["decoding"].update(max_len=0, min_labels=0)),
                        ("min_labels -1", SEQUENCE, lambda d: d["sequence"]["decoding"].update(min_labels=-1))],
    "decoding-min-labels": [("min_labels above max_len", SEQUENCE, lambda d: d["sequence"]["decoding"].update(
        min_labels=d["sequence"]["decoding"]["max_len"] + 1)),
        ("min_labels above the labels without repeats", SEQUENCE, lambda d: d["sequence"]["decoding"].update(
            forbid_repeat=True, max_len=_n(d) + 1, min_labels=_n(d) + 1))],
    "memory-present": [("a memory without its graph", MEMORY, lambda d: d["graphs"].pop("memory")),
                       ("a memory graph without its section", MEMORY, lambda d: d.pop("memory"))],
    "memory-io": [("an embedding the encoder lacks", MEMORY, lambda d: d["memory"].update(embedding_output="missing")),
                  ("memory scores the graph lacks", MEMORY, lambda d: d["memory"].update(scores_output="missing")),
                  ("memory scores of the wrong width", MEMORY, lambda d: d["graphs"]["memory"]["outputs"][0]["shape"].__setitem__(
                      1, _n(d) + 1)),
                  ("a memory input of another shape", MEMORY, lambda d: d["graphs"]["memory"]["inputs"][0]["shape"].append(2))],
    "memory-bounds": [("k 0", MEMORY, lambda d: d["memory"].update(k=0)),
                      ("weight 1.5", MEMORY, lambda d: d["memory"].update(weight=1.5)),
                      ("weight -0.25", MEMORY, lambda d: d["memory"].update(weight=-0.25)),
                      ("temperature 0", MEMORY, lambda d: d["memory"].update(temperature=0.0)),
                      ("head_labels 0", MEMORY, lambda d: d["memory"].update(head_labels=0))],
    "memory-k": [("k above the examples", MEMORY, lambda d: d["memory"].update(k=d["memory"]["examples"] + 1))],
    "memory-head": [("head_labels above the labels", MEMORY, lambda d: d["memory"].update(head_labels=_n(d) + 1))],
}
CASES = [(rule, what, applies, change) for rule, cases in RULE_CASES.items() for what, applies, change in cases]
BOUND_RULES = {rule.id for rule in RULES if not rule.cross_field}


def broken(manifest: dict, data) -> tuple[str, str, dict]:
    """A random rule's broken example made from ``manifest`` (a rule that applies to it)."""
    rule, what, _, change = data.draw(st.sampled_from([c for c in CASES if c[2](manifest)]))
    out = copy.deepcopy(manifest)
    change(out)
    return rule, what, out


def test_every_rule_has_broken_examples() -> None:
    assert list(RULE_CASES) == list(RULE_IDS)
    assert all(RULE_CASES[r] for r in RULE_IDS)


def test_the_schema_generator_writes_the_table_bounds() -> None:
    schema = manifest_schema()
    assert schema["$defs"]["ScoringSpec"]["properties"]["thresholds"]["items"]["maximum"] == 1
    assert schema["$defs"]["MemorySpec"]["properties"]["temperature"]["exclusiveMinimum"] == 0
    assert apply_schema_bounds(manifest_schema()) == schema   # applied once, idempotent


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(manifest=manifests(), data=st.data())
def test_the_loader_refuses_every_rule_broken(manifest, data) -> None:
    rule, what, bad = broken(manifest, data)
    refused_in_one_line(bad)
    if rule in BOUND_RULES:
        assert not VALIDATOR.is_valid(bad), f"the schema should carry {rule} ({what})"


# --- both checkers tag exactly the table's rules --------------------------------------------------
PY_TAG = re.compile(r"#\s*rule:\s*([\w-]+)")
JS_TAG = re.compile(r"//\s*rule:\s*([\w-]+)")
PY_FILES = ("manifest.py", "decoding_config.py", "scoring_config.py", "preprocess_config.py", "vocabulary.py")


def _tags(text: str, pattern: re.Pattern) -> set[str]:
    """Every rule id a comment names (a comment may name several: ``# rule: a, rule: b``)."""
    marker = "#" if pattern is PY_TAG else "//"
    return {rule for line in text.splitlines() if pattern.search(line)
            for rule in re.findall(r"rule:\s*([\w-]+)", line.split(marker, 1)[1])}


def test_the_python_checker_tags_every_rule_and_only_the_table() -> None:
    text = "\n".join((REPO / "runtime" / "bundle" / f).read_text(encoding="utf-8") for f in PY_FILES)
    assert _tags(text, PY_TAG) == set(RULE_IDS)


def test_every_refusal_in_the_manifest_checks_is_tagged() -> None:
    """Each ``raise`` in ``BundleManifest.check`` and its helpers names its rule (on its line or the one above)."""
    source = (REPO / "runtime" / "bundle" / "manifest.py").read_text(encoding="utf-8")
    lines = source.splitlines()
    cls = next(n for n in ast.parse(source).body if isinstance(n, ast.ClassDef) and n.name == "BundleManifest")
    methods = [m for m in cls.body if isinstance(m, ast.FunctionDef) and m.name in ("check", "_check_scores",
                                                                                   "_check_sequence", "_check_memory")]
    assert len(methods) == 4
    raises = [n for m in methods for n in ast.walk(m) if isinstance(n, ast.Raise)]
    assert len(raises) >= 20
    untagged = [lines[r.lineno - 1].strip() for r in raises
                if not PY_TAG.search(lines[r.lineno - 1]) and not PY_TAG.search(lines[r.lineno - 2])]
    assert not untagged, untagged


def test_the_browser_checker_tags_exactly_the_cross_field_rules() -> None:
    """Bounds reach the browser through the schema; every cross-field rule is code there, tagged."""
    js = (REPO / "runtime" / "web" / "bundle.js").read_text(encoding="utf-8")
    assert _tags(js, JS_TAG) == {rule.id for rule in RULES if rule.cross_field}
    body = js[js.index("export function checkManifest"):js.index("export async function loadBundle")]
    refusals = [line for line in body.splitlines() if re.search(r"\breturn [`\"]", line)]
    assert len(refusals) >= 20
    untagged = [line.strip() for line in refusals if not JS_TAG.search(line)]
    assert not untagged, untagged


@pytest.mark.parametrize("rule", [r for r in RULES if not r.cross_field], ids=lambda r: r.id)
def test_the_committed_schema_carries_each_bound(rule) -> None:
    import json

    from corel_annotate.runtime.bundle.manifest import SCHEMA_FILE

    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    for bound in rule.schema:
        node = schema["$defs"][bound.definition]["properties"][bound.property]
        targets = [node] if not bound.items else node.get("prefixItems") or [node["items"]]
        for target in targets:
            assert {k: target.get(k) for k in bound.keywords} == bound.keywords, (rule.id, bound)
