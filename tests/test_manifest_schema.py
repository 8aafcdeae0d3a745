"""The manifest as a contract: its JSON Schema is generated from the dataclasses and kept in the
repository, every exported manifest validates against it, and the loader accepts every valid
manifest and refuses every corrupted one with a one-line message (a hypothesis property test)."""
from __future__ import annotations

import copy
import dataclasses
import json
import typing
from typing import Any, Literal, Union

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from corel_annotate.runtime.bundle.schema import main as schema_main, manifest_schema
from corel_annotate.runtime.bundle.manifest import FORMAT, SCHEMA_FILE, BundleManifest, load_manifest

VALIDATOR = jsonschema.Draft202012Validator(json.loads(SCHEMA_FILE.read_text(encoding="utf-8")))
SOURCE = "bundle/manifest.json"


def test_committed_schema_is_generated_from_the_dataclasses():
    assert schema_main(["--check"]) == 0, "run python -m corel_annotate.runtime.bundle.schema"
    jsonschema.Draft202012Validator.check_schema(manifest_schema())


def test_every_exported_manifest_validates_against_the_schema(bundles):
    kinds = set()
    for _, bundle in bundles.values():
        data = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
        VALIDATOR.validate(data)
        kinds.add(load_manifest(bundle).kind)
        assert "method" not in data, "the runtime reads kinds, not method names"
    assert kinds == {"scores", "sequence"}


@pytest.mark.parametrize("version", [1, 5])
def test_an_unknown_version_is_refused_with_a_re_export_hint(bundles, version):
    data = json.loads((bundles["ria"][1] / "manifest.json").read_text(encoding="utf-8"))
    data["format_version"] = version
    with pytest.raises(ValueError, match=rf"version {version} is not supported \(this runtime reads versions 2, 3, 4\).*re-export"):
        BundleManifest.from_dict(data, SOURCE)
    assert not VALIDATOR.is_valid(data)
    for readable in (2, 3, 4):  # a version-2 manifest is a version-3 one without a memory: all are read
        data["format_version"] = readable
        VALIDATOR.validate(data)
        assert BundleManifest.from_dict(data, SOURCE).format_version == readable


# --- random manifests ---------------------------------------------------------------------------
NAMES = st.from_regex(r"[a-z][a-z0-9_]{0,5}", fullmatch=True)
HEX = st.from_regex(r"[0-9a-f]{64}", fullmatch=True)


def tensor(name: str, dtype: str, *dims) -> dict:
    return {"name": name, "dtype": dtype, "shape": ["batch", *dims]}


@st.composite
def manifests(draw, memory: bool | None = None) -> dict:
    """A valid manifest of either kind, with random tensor names, sizes and settings, and a label memory
    (its graph fed by an encoder embedding output) when ``memory`` is true (randomly when None)."""
    n = draw(st.integers(1, 6))
    size = draw(st.integers(8, 96))
    names = draw(st.lists(NAMES, min_size=12, max_size=12, unique=True))
    image = names[0]
    memory = draw(st.booleans()) if memory is None else memory
    data: dict[str, Any] = {
        "format": FORMAT, "format_version": draw(st.sampled_from([3, 4] if memory else [2, 3, 4])),
        "vocabulary": [f"label{i}" for i in range(n)], "image_input": image,
        "preprocess": {"image_size": size, "mean": draw(st.lists(st.floats(0, 1), min_size=3, max_size=3)),
                       "std": draw(st.lists(st.floats(0.1, 1), min_size=3, max_size=3))},
        "precision": draw(st.sampled_from(["fp32", "fp16", "int8"])), "opset": draw(st.integers(13, 21)),
        "source": {"method": draw(NAMES), "anything": draw(st.integers())},
    }
    image_in = tensor(image, "float32", 3, size, size)
    if data["format_version"] == 4 and draw(st.booleans()):   # pixel input
        data["preprocess"].update(input_dtype="uint8", layout="NHWC")
        image_in = tensor(image, "uint8", size, size, 3)
    scores = draw(st.booleans())
    head = draw(st.integers(1, n)) if memory and scores else n  # labels added to a scores bundle's memory
    if scores:
        data["kind"] = "scores"
        data["graphs"] = {"encoder": {"file": "encoder.onnx", "inputs": [image_in],
                                      "outputs": [tensor(names[1], "float32", head)]}}
        data["scoring"] = {"logits_output": names[1], "thresholds": draw(st.lists(st.floats(0, 1), min_size=n, max_size=n)),
                           "top_k": draw(st.none() | st.integers(1, n)), "min_labels": draw(st.integers(0, n))}
    else:
        data["kind"] = "sequence"
        k_state = draw(st.integers(1, 3))
        k_const = draw(st.integers(0, 2))
        token, logp = names[1], names[2]
        state_in = names[3:3 + k_state]
        consts = names[6:6 + k_const]
        state_out = [f"{s}_out" for s in state_in]
        attention = draw(st.none() | st.just(names[9]))
        step_inputs = draw(st.permutations([tensor(token, "int64")] + [tensor(s, "float32", 4) for s in state_in]
                                           + [tensor(c, "float32", 7, 3) for c in consts]))
        data["graphs"] = {
            "encoder": {"file": "encoder.onnx", "inputs": [image_in],
                        "outputs": [tensor(s, "float32", 4) for s in state_in] + [tensor(c, "float32", 7, 3) for c in consts]},
            "decoder_step": {"file": "decoder_step.onnx", "inputs": step_inputs,
                             "outputs": [tensor(logp, "float32", n + 1)] + [tensor(s, "float32", 4) for s in state_out]
                             + ([tensor(attention, "float32", 7)] if attention else [])}}
        max_len = draw(st.integers(1, 6))
        forbid = draw(st.booleans())
        data["sequence"] = {
            "token_input": token, "log_probs_output": logp, "state": dict(zip(state_out, state_in)),
            "constants": list(consts), "attention_output": attention, "start_id": n + 1, "stop_id": n,
            "decoding": {"beam_width": draw(st.integers(1, 8)), "max_len": max_len, "forbid_repeat": forbid,
                         "min_labels": draw(st.integers(0, min(max_len, n) if forbid else max_len)),
                         "length_penalty": draw(st.floats(-2, 2)),
                         "length_penalty_formula": draw(st.sampled_from(["n^alpha", "gnmt"]))}}
    if memory:
        dim, examples = draw(st.integers(1, 16)), draw(st.integers(1, 500))
        embedding, memory_scores = names[10], names[11]
        data["graphs"]["encoder"]["outputs"].append(tensor(embedding, "float32", dim))
        data["graphs"]["memory"] = {"file": "memory.onnx", "inputs": [tensor(embedding, "float32", dim)],
                                    "outputs": [tensor(memory_scores, "float32", n)]}
        data["memory"] = {"embedding_output": embedding, "scores_output": memory_scores, "examples": examples,
                          "k": draw(st.integers(1, examples)), "temperature": draw(st.floats(1e-3, 10)),
                          "weight": draw(st.floats(0, 1)), "head_labels": head, "graph": "memory"}
    data["files"] = {g["file"]: draw(HEX) for g in data["graphs"].values()}
    return data


def typed_fields(cls: type, data: Any, path: tuple = ()):
    """``(path, type, required)`` of every dataclass field present in ``data``, nested ones included."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        tp = hints[f.name]
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        yield path + (f.name,), tp, required or f.name in ("format", "format_version")
        value = data[f.name]
        inner = [a for a in typing.get_args(tp) if a is not type(None)] if typing.get_origin(tp) in (Union,) else [tp]
        for t in inner:
            origin, args = typing.get_origin(t), typing.get_args(t)
            if dataclasses.is_dataclass(t) and isinstance(value, dict):
                yield from typed_fields(t, value, path + (f.name,))
            elif origin is tuple and args and dataclasses.is_dataclass(args[0]) and isinstance(value, list):
                for i, item in enumerate(value):
                    yield from typed_fields(args[0], item, path + (f.name, i))
            elif origin is dict and dataclasses.is_dataclass(args[1]) and isinstance(value, dict):
                for key, item in value.items():
                    yield from typed_fields(args[1], item, path + (f.name, key))


def wrong_value(tp: Any) -> Any:
    """A JSON value that type ``tp`` does not admit (None when every value is admitted)."""
    origin = typing.get_origin(tp)
    if tp is Any or (origin is dict and typing.get_args(tp)[1] is Any):
        return None if tp is Any else ["not", "an", "object"]
    if origin is Union:
        options = [a for a in typing.get_args(tp) if a is not type(None)]
        return 1.5 if int in options and str in options else wrong_value(options[0])
    if origin is Literal:
        return "no-such-choice"
    return {str: 7, int: "7", float: "seven", bool: 1}.get(tp, "not-an-object" if dataclasses.is_dataclass(tp)
                                                         or origin is dict else {"not": "an array"})


def set_path(data: dict, path: tuple, value: Any = None, delete: bool = False) -> None:
    node = data
    for key in path[:-1]:
        node = node[key]
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = value


def refused_in_one_line(data: Any) -> str:
    with pytest.raises(ValueError) as info:
        BundleManifest.from_dict(data, SOURCE)
    message = str(info.value)
    assert message.startswith(SOURCE) and "\n" not in message, message
    return message


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(manifest=manifests())
def test_loader_and_schema_accept_every_valid_manifest(manifest):
    VALIDATOR.validate(manifest)
    parsed = BundleManifest.from_dict(copy.deepcopy(manifest), SOURCE)
    again = BundleManifest.from_dict(json.loads(parsed.to_json()), SOURCE)
    assert again == parsed
    assert parsed.kind == manifest["kind"] and len(parsed.vocabulary) == len(manifest["vocabulary"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(manifest=manifests(), data=st.data())
def test_loader_refuses_every_corrupted_manifest_in_one_line(manifest, data):
    fields = list(typed_fields(BundleManifest, manifest))
    how = data.draw(st.sampled_from(["drop", "retype", "unknown", "semantic"]))
    broken = copy.deepcopy(manifest)
    if how == "drop":
        path, _, _ = data.draw(st.sampled_from([f for f in fields if f[2]]))
        set_path(broken, path, delete=True)
    elif how == "retype":
        candidates = [(p, tp) for p, tp, _ in fields if wrong_value(tp) is not None]
        path, tp = data.draw(st.sampled_from(candidates))
        set_path(broken, path, wrong_value(tp))
    elif how == "unknown":
        objects = [()] + [p for p, tp, _ in fields if dataclasses.is_dataclass(tp)
                          or (typing.get_origin(tp) is Union and any(dataclasses.is_dataclass(a) for a in typing.get_args(tp)))
                          if isinstance(_get(manifest, p), dict)]
        path = data.draw(st.sampled_from(objects))
        (_get(broken, path) if path else broken)["surprise"] = 1
    else:
        seq = manifest["kind"] == "sequence"
        mutations = [lambda d: d["vocabulary"].append(d["vocabulary"][0]),
                     lambda d: d["files"].pop(d["graphs"]["encoder"]["file"]),
                     lambda d: d.update(image_input=d["image_input"] + "x"),
                     lambda d: d["graphs"]["encoder"]["inputs"][0]["shape"].__setitem__(2, d["preprocess"]["image_size"] + 1),
                     lambda d: d.update(kind="scores" if seq else "sequence")]
        if seq:
            mutations += [lambda d: d["sequence"].update(stop_id=d["sequence"]["stop_id"] + 1),
                          lambda d: d["sequence"]["state"].update({next(iter(d["sequence"]["state"])): "nowhere"}),
                          lambda d: d["sequence"].update(log_probs_output="missing"),
                          lambda d: d["sequence"]["decoding"].update(beam_width=0),
                          lambda d: d["sequence"]["decoding"].update(min_labels=d["sequence"]["decoding"]["max_len"] + 1),
                          lambda d: d["graphs"].pop("decoder_step")]
        else:
            mutations += [lambda d: d["scoring"]["thresholds"].append(0.5),
                          lambda d: d["scoring"].update(top_k=0),
                          lambda d: d["scoring"]["thresholds"].__setitem__(0, 1.5),
                          lambda d: d["scoring"].update(logits_output="missing")]
        if "memory" in manifest:
            mutations += MEMORY_MUTATIONS
        data.draw(st.sampled_from(mutations))(broken)
    refused_in_one_line(broken)
    if how in ("drop", "retype", "unknown"):
        assert not VALIDATOR.is_valid(broken), f"the schema should refuse it too ({how})"


# broken label memories, schema-valid: the cross-field rules (Python's and the browser's) refuse each
MEMORY_MUTATIONS = [
    lambda d: d["graphs"].pop("memory"),                                          # a memory section without its graph
    lambda d: d.pop("memory"),                                                    # a memory graph without its section
    lambda d: d["memory"].update(k=d["memory"]["examples"] + 1),                  # k > examples
    lambda d: d["memory"].update(k=0),
    lambda d: d["memory"].update(weight=1.5),                                     # weight outside [0, 1]
    lambda d: d["memory"].update(weight=-0.25),
    lambda d: d["memory"].update(temperature=0.0),
    lambda d: d["memory"].update(head_labels=len(d["vocabulary"]) + 1),
    lambda d: d["memory"].update(embedding_output="missing"),
    lambda d: d["memory"].update(scores_output="missing"),
    lambda d: d["graphs"]["memory"]["outputs"][0]["shape"].__setitem__(1, len(d["vocabulary"]) + 1),
    lambda d: d["graphs"]["memory"]["inputs"][0]["shape"].append(2),
]


def _get(data: Any, path: tuple) -> Any:
    for key in path:
        data = data[key]
    return data


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(manifest=manifests(), data=st.data())
def test_any_replaced_value_is_accepted_or_refused_cleanly(manifest, data):
    """Arbitrary JSON anywhere: the loader either accepts it or says why in one line, never a traceback."""
    paths = []

    def walk(node, path):
        paths.append(path)
        children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
        for key, value in children:
            walk(value, path + (key,))
    walk(manifest, ())
    path = data.draw(st.sampled_from(paths[1:]))
    junk = data.draw(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
                                  lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
                                  max_leaves=6))
    broken = copy.deepcopy(manifest)
    set_path(broken, path, junk)
    try:
        parsed = BundleManifest.from_dict(broken, SOURCE)
    except ValueError as exc:
        assert str(exc).startswith(SOURCE) and "\n" not in str(exc)
    else:   # the schema is the contract: the loader never accepts what it refuses, and what it accepts it keeps
        assert VALIDATOR.is_valid(broken), (path, junk, next(VALIDATOR.iter_errors(broken)).message)
        assert BundleManifest.from_dict(json.loads(parsed.to_json()), SOURCE) == parsed
