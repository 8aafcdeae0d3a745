"""The bundle manifest's JSON Schema, generated from the manifest dataclasses (pydantic reads them).

    python -m corel_annotate.runtime.bundle.schema            # rewrite runtime/bundle/bundle.schema.json
    python -m corel_annotate.runtime.bundle.schema --check    # exit 1 when the committed schema is stale

The schema is what a runtime in another language is written against; the Python runtime's loader
(``runtime/bundle/manifest.py``) checks the same types strictly and the cross-field rules besides.
"""
from __future__ import annotations

import json
import sys
from typing import Any

from .rules import apply_schema_bounds
from .manifest import FORMAT, FORMAT_VERSION, READABLE_VERSIONS, SCHEMA_FILE, BundleManifest


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
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"https://corel-annotate.invalid/bundle-v{FORMAT_VERSION}.schema.json",
            "title": f"corel-annotate bundle manifest, format version {FORMAT_VERSION}",
            "description": (BundleManifest.__doc__ or "").strip() or None, **schema}


def render() -> str:
    return json.dumps(manifest_schema(), indent=1, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
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
