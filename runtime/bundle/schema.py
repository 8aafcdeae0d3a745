"""The bundle manifest's JSON Schema, generated from the manifest dataclasses (pydantic reads them),
and the field table of the specification generated from the schema.

    python -m corel_annotate.runtime.bundle.schema            # rewrite runtime/bundle/bundle.schema.json
    python -m corel_annotate.runtime.bundle.schema --check    # exit 1 when the committed schema is stale
    python -m corel_annotate.runtime.bundle.schema --doc      # rewrite the tables of docs/bundle-format.md
    python -m corel_annotate.runtime.bundle.schema --doc --check   # exit 1 when those tables are stale

The schema is what a runtime in another language is written against; the Python runtime's loader
(``runtime/bundle/manifest.py``) validates with the same dataclasses through pydantic, strictly
(``typed_json.read_strict``), and checks the cross-field rules besides.
Every field's description is the attribute docstring written under it in its dataclass, and the
specification (``docs/bundle-format.md``) carries the same descriptions in its field table
(:func:`markdown_table`) and the rules table of ``rules.py`` (:func:`rules_table`), between marker
comments, so the schema and the specification say the same thing.
"""
from __future__ import annotations

import ast
import dataclasses
import inspect
import json
import re
import sys
import textwrap
import typing
from pathlib import Path
from typing import Any

from .rules import RULES, apply_schema_bounds
from .manifest import FORMAT, FORMAT_VERSION, READABLE_VERSIONS, SCHEMA_FILE, BundleManifest

SPEC_FILE = Path(__file__).resolve().parents[2] / "docs" / "bundle-format.md"
"""The specification whose tables are generated here (in a source checkout)."""
TABLES = ("schema-table", "rules-table")
"""The generated regions of the specification: ``<!-- NAME:start -->`` ... ``<!-- NAME:end -->``."""


def _close_objects(node: Any) -> None:
    """No unknown fields anywhere a dataclass is described (the loader refuses them too)."""
    if isinstance(node, dict):
        if node.get("type") == "object" and "properties" in node:
            node.setdefault("additionalProperties", False)
        for value in node.values():
            _close_objects(value)
    elif isinstance(node, list):
        for value in node:
            _close_objects(value)


def field_docs(cls: type) -> dict[str, str]:
    """The attribute docstrings of a dataclass: the string literal written under each field."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs = {}
    for field, doc in zip(body, body[1:]):
        if (isinstance(field, ast.AnnAssign) and isinstance(field.target, ast.Name) and isinstance(doc, ast.Expr)
                and isinstance(doc.value, ast.Constant) and isinstance(doc.value.value, str)):
            docs[field.target.id] = inspect.cleandoc(doc.value.value)
    return docs


def manifest_classes(cls: type = BundleManifest) -> dict[str, type]:
    """The dataclasses a manifest is made of, by name (the schema's ``$defs`` keys), ``cls`` first."""
    found = {cls.__name__: cls}
    for hint in typing.get_type_hints(cls).values():
        stack = [hint]
        while stack:
            tp = stack.pop()
            if dataclasses.is_dataclass(tp) and tp.__name__ not in found:
                found.update(manifest_classes(tp))
            stack.extend(typing.get_args(tp))
    return found


def _describe_fields(schema: dict[str, Any]) -> None:
    """Each property's ``description``: its dataclass's attribute docstring."""
    for name, cls in manifest_classes().items():
        node = schema if cls is BundleManifest else schema["$defs"][name]
        for field, doc in field_docs(cls).items():
            node["properties"][field]["description"] = doc


def manifest_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of ``manifest.json``, format version ``FORMAT_VERSION`` (every
    version in ``READABLE_VERSIONS`` validates)."""
    from pydantic import TypeAdapter

    schema = TypeAdapter(BundleManifest).json_schema(mode="validation")
    _close_objects(schema)
    apply_schema_bounds(schema)   # the rules table's bounds and choices
    schema["properties"]["format"] = {"const": FORMAT, "title": "Format", "default": FORMAT}
    # every version this runtime reads (a version-2 manifest is a version-3 one without a memory)
    schema["properties"]["format_version"] = {"enum": list(READABLE_VERSIONS), "title": "Format Version",
                                              "default": FORMAT_VERSION}
    schema["required"] = sorted(set(schema.get("required", [])) | {"format", "format_version"})
    _describe_fields(schema)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"https://corel-annotate.invalid/bundle-v{FORMAT_VERSION}.schema.json",
            "title": f"corel-annotate bundle manifest, format version {FORMAT_VERSION}",
            "description": (BundleManifest.__doc__ or "").strip() or None, **schema}


def render() -> str:
    return json.dumps(manifest_schema(), indent=1, sort_keys=True) + "\n"


# --- the specification's tables -------------------------------------------------------------------
def _markdown(text: str) -> str:
    """A description as one table cell: one line, reST ``literals`` as Markdown `code`, pipes escaped."""
    return " ".join(text.split()).replace("``", "`").replace("|", "\\|")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


def _bounds(node: dict[str, Any]) -> str:
    low, high = node.get("minimum"), node.get("maximum")
    if low is not None and high is not None:
        return f" in [{_number(low)}, {_number(high)}]"
    if low is not None:
        return f" ≥ {_number(low)}"
    if "exclusiveMinimum" in node:
        return f" > {_number(node['exclusiveMinimum'])}"
    return ""


def _type(node: dict[str, Any], bounds: str = "") -> str:
    """A schema node's type in words: ``integer ≥ 1 or null``, ``"full" or "draft"``, ``array of strings``."""
    bounds = bounds or _bounds(node)
    if "$ref" in node:
        return "object"
    if "const" in node:
        return f'`{json.dumps(node["const"])}`'
    if "enum" in node:
        return " or ".join(f"`{json.dumps(v)}`" for v in node["enum"])
    if "anyOf" in node:
        return " or ".join(_type(option, bounds if option.get("type") in ("integer", "number") else "")
                           for option in node["anyOf"])
    kind = node.get("type")
    if kind in ("integer", "number"):
        return kind + bounds
    if kind == "array":
        if "prefixItems" in node:
            items = node["prefixItems"]
            return f"array of {len(items)} {_plural(_type(items[0]))}"
        return f"array of {_plural(_type(node['items']))}"
    if kind == "object" and isinstance(node.get("additionalProperties"), dict):
        return f"object: name → {_type(node['additionalProperties'])}"
    return kind or "any"


def _plural(words: str) -> str:
    if " or " in words:
        return f"({words})"
    first, _, rest = words.partition(" ")
    plural = first + ("es" if first.endswith("x") else "s") if first in ("integer", "number", "string", "object",
                                                                           "boolean") else first
    return f"{plural} {rest}".strip()


def _rows(node: dict[str, Any], path: str, defs: dict[str, Any], seen: dict[str, str]) -> list[tuple[str, ...]]:
    """Rows for the properties of an object node (its ``$ref`` followed), nested objects after their field."""
    rows = []
    required = set(node.get("required", ()))
    names = list(node["properties"])
    if not path:   # what a reader checks first leads the table
        names = ["format", "format_version"] + [n for n in names if n not in ("format", "format_version")]
    for name in names:
        prop = node["properties"][name]
        where = f"{path}.{name}" if path else name
        need = "yes" if name in required else f"no (default `{json.dumps(prop['default'])}`)" if "default" in prop else "no"
        rows.append((f"`{where}`", _type(prop), need, _markdown(prop.get("description", ""))))
        rows.extend(_nested(prop, where, defs, seen))
    return rows


def _nested(prop: dict[str, Any], where: str, defs: dict[str, Any], seen: dict[str, str]) -> list[tuple[str, ...]]:
    """The rows of the object a property holds: directly, in an array (``[]``) or as a map's values (``.NAME``)."""
    options = prop.get("anyOf", [prop])
    for option in options:
        if "$ref" in option:
            return _object(option["$ref"], where, defs, seen)
        if option.get("type") == "array" and "$ref" in option.get("items", {}):
            return _object(option["items"]["$ref"], f"{where}[]", defs, seen)
        extra = option.get("additionalProperties")
        if option.get("type") == "object" and isinstance(extra, dict) and "$ref" in extra:
            return _object(extra["$ref"], f"{where}.NAME", defs, seen)
    return []


def _object(ref: str, where: str, defs: dict[str, Any], seen: dict[str, str]) -> list[tuple[str, ...]]:
    name = ref.rsplit("/", 1)[-1]
    if name in seen:   # described once, where it first appears
        return [(f"`{where}.*`", "", "", f"as `{seen[name]}.*`")]
    seen[name] = where
    return _rows(defs[name], where, defs, seen)


def markdown_table(schema: dict[str, Any] | None = None) -> str:
    """The manifest's fields as a Markdown table (field, type, required, description), generated
    from the schema: every field of every object, nested ones by their path (``NAME`` is any key of
    a map, ``[]`` any element of an array)."""
    schema = manifest_schema() if schema is None else schema
    rows = _rows(schema, "", schema["$defs"], {})
    lines = ["| field | type | required | description |", "| --- | --- | --- | --- |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def rules_table() -> str:
    """The manifest's rules beyond its field types (``rules.RULES``) as a Markdown table."""
    lines = ["| rule | a manifest is refused unless |", "| --- | --- |"]
    lines += [f"| `{rule.id}` | {_markdown(rule.says)} |" for rule in RULES]
    return "\n".join(lines) + "\n"


def generated_tables() -> dict[str, str]:
    return {"schema-table": markdown_table(), "rules-table": rules_table()}


def _region(name: str) -> re.Pattern[str]:
    return re.compile(rf"(<!-- {name}:start[^>]*-->\n)(.*?)(<!-- {name}:end -->)", re.S)


def doc_tables(text: str) -> dict[str, str]:
    """The generated regions of a specification's text, by name (ValueError when a marker is missing)."""
    out = {}
    for name in TABLES:
        match = _region(name).search(text)
        if match is None:
            raise ValueError(f"no <!-- {name}:start --> ... <!-- {name}:end --> region")
        out[name] = match.group(2)
    return out


def with_tables(text: str) -> str:
    """The specification's text with its generated regions rewritten."""
    doc_tables(text)   # every region is there
    for name, table in generated_tables().items():
        text = _region(name).sub(lambda m: m.group(1) + table + m.group(3), text)
    return text


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--doc" in argv:
        if not SPEC_FILE.is_file():
            print(f"{SPEC_FILE}: not found (the tables are rewritten in a source checkout)", file=sys.stderr)
            return 2
        current = SPEC_FILE.read_text(encoding="utf-8")
        text = with_tables(current)
        if "--check" in argv:
            if current != text:
                print(f"{SPEC_FILE}: tables stale; run python -m corel_annotate.runtime.bundle.schema --doc",
                      file=sys.stderr)
                return 1
            return 0
        SPEC_FILE.write_text(text, encoding="utf-8")
        print(f"wrote the tables of {SPEC_FILE}")
        return 0
    text = render()
    if "--check" in argv:
        current = SCHEMA_FILE.read_text(encoding="utf-8") if SCHEMA_FILE.is_file() else ""
        if current != text:
            print(f"{SCHEMA_FILE}: stale; run python -m corel_annotate.runtime.bundle.schema", file=sys.stderr)
            return 1
        return 0
    SCHEMA_FILE.write_text(text, encoding="utf-8")
    print(f"wrote {SCHEMA_FILE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
