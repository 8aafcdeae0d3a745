"""Every rule a bundle manifest must keep beyond its field types: one table, read by all sides.

* **Bounds and choices** (a threshold in [0, 1], a beam width of at least 1, a known resize rule)
  are written into ``bundle.schema.json`` by the schema generator from the ``schema`` entries
  below, so any runtime that validates against the schema (the browser's, one in another
  language) enforces them without code of its own.  The Python loader enforces the same through
  the config classes it builds (``ScoringConfig``, ``DecodingConfig``, ``PreprocessConfig``).
* **Cross-field rules** (one threshold per label, a state map that connects the graphs) cannot be
  said in JSON Schema.  Each is checked in ``manifest.py`` and in the browser's ``bundle.js``, and
  every check there carries its rule's id (``# rule: ID`` / ``// rule: ID``).

``tests/test_manifest_rules.py`` holds the table to both checkers: each side's tags are exactly
the table's cross-field ids, and one broken manifest per rule is refused by the loader, by
jsonschema where the rule is a bound, and by the browser page (``tests/test_browser.py``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class SchemaBound:
    """JSON Schema keywords added to one property of one ``$defs`` entry (``items`` for each element)."""

    definition: str
    property: str
    keywords: dict[str, Any]
    items: bool = False


@dataclass(frozen=True)
class Rule:
    id: str
    says: str
    schema: tuple[SchemaBound, ...] = field(default=())

    @property
    def cross_field(self) -> bool:
        """Checked in code on each side (no schema keyword can say it)."""
        return not self.schema


RULES: tuple[Rule, ...] = (
    Rule("format", "format is the bundle format and format_version one the runtime reads"),
    Rule("vocabulary", "labels are non-empty, without white space, unique, and not the decoder's reserved names"),
    Rule("preprocess", "image_size at least 8; a known resize rule, decode rule, interpolation, layout and input "
                       "dtype; channel_order RGB; std positive",
         (SchemaBound("PreprocessConfig", "image_size", {"minimum": 8}),
          SchemaBound("PreprocessConfig", "channel_order", {"enum": ["RGB"]}),
          SchemaBound("PreprocessConfig", "layout", {"enum": ["NCHW", "NHWC"]}),
          SchemaBound("PreprocessConfig", "input_dtype", {"enum": ["float32", "uint8"]}),
          SchemaBound("PreprocessConfig", "resize", {"enum": ["stretch"]}),
          SchemaBound("PreprocessConfig", "decode", {"enum": ["full", "draft"]}),
          SchemaBound("PreprocessConfig", "interpolation", {"enum": ["bilinear", "bicubic"]}),
          SchemaBound("PreprocessConfig", "std", {"exclusiveMinimum": 0}, items=True))),
    Rule("encoder", "an encoder graph whose only input is image_input, of preprocess.input_dtype, shaped [batch, 3, "
                    "image_size, image_size] (layout NCHW) or [batch, image_size, image_size, 3] (layout NHWC)"),
    Rule("tensors", "no dimension is negative and no tensor name appears twice among a graph's inputs or outputs"),
    Rule("files", "every graph and engine file stays inside the bundle and has a sha256 in files"),
    Rule("engines", "each engine names one of the graphs and a file"),
    Rule("kind", "a scores bundle has scoring and no sequence section, and graphs encoder (+ memory); a sequence "
                 "bundle has sequence and no scoring section, and graphs encoder and decoder_step (+ memory)"),
    Rule("logits", "scoring.logits_output is an encoder output shaped [batch, head labels]"),
    Rule("thresholds", "one threshold per label"),
    Rule("scoring-bounds", "every threshold in [0, 1]; top_k null or at least 1; min_labels at least 0",
         (SchemaBound("ScoringSpec", "thresholds", {"minimum": 0, "maximum": 1}, items=True),
          SchemaBound("ScoringSpec", "top_k", {"minimum": 1}),
          SchemaBound("ScoringSpec", "min_labels", {"minimum": 0}))),
    Rule("scoring-min-labels", "scoring.min_labels at most the number of labels"),
    Rule("step-inputs", "decoder_step's inputs are the token input, the state's inputs and the constants, each once; "
                        "the token input is [batch] int64"),
    Rule("step-outputs", "decoder_step gives log_probs_output, every state output and attention_output, each once"),
    Rule("state", "every state input and constant is an encoder output"),
    Rule("log-probs", "log_probs_output is shaped [batch, labels + 1] (the labels, then stop)"),
    Rule("stop-start", "stop_id is the number of labels and start_id one more"),
    Rule("decoding-bounds", "beam_width and max_len at least 1; min_labels at least 0",
         (SchemaBound("DecodingConfig", "beam_width", {"minimum": 1}),
          SchemaBound("DecodingConfig", "max_len", {"minimum": 1}),
          SchemaBound("DecodingConfig", "min_labels", {"minimum": 0}))),
    Rule("decoding-min-labels", "decoding.min_labels at most max_len, and at most the labels when repeats are forbidden"),
    Rule("memory-present", "a memory section and a memory graph come together"),
    Rule("memory-io", "memory.embedding_output is an encoder output and the memory graph's only input, of the same "
                      "shape; scores_output is a memory graph output shaped [batch, labels]"),
    Rule("memory-bounds", "k and examples at least 1; temperature above 0; weight in [0, 1]; head_labels at least 1",
         (SchemaBound("MemorySpec", "k", {"minimum": 1}),
          SchemaBound("MemorySpec", "examples", {"minimum": 1}),
          SchemaBound("MemorySpec", "temperature", {"exclusiveMinimum": 0}),
          SchemaBound("MemorySpec", "weight", {"minimum": 0, "maximum": 1}),
          SchemaBound("MemorySpec", "head_labels", {"minimum": 1}))),
    Rule("memory-k", "memory.k at most the examples"),
    Rule("memory-head", "memory.head_labels at most the labels, and all of them for a sequence bundle"),
)
"""The rules, in the order the checkers apply them."""

RULE_IDS = tuple(rule.id for rule in RULES)


def apply_schema_bounds(schema: dict[str, Any]) -> dict[str, Any]:
    """Write the table's bounds and choices into a generated schema (``$defs`` by dataclass name)."""
    for rule in RULES:
        for bound in rule.schema:
            node = schema["$defs"][bound.definition]["properties"][bound.property]
            targets = [node] if not bound.items else node.get("prefixItems") or [node["items"]]
            for target in targets:
                target.update(bound.keywords)
    return schema
