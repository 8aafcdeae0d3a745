"""JSON data into the dataclasses that declare it, through pydantic, with one-line errors.

:func:`read_strict` reads what a user hands us (a bundle manifest, a conformance kit, a label map):
every value must have its declared type exactly (``true`` is not an integer, a string is not a
number, integers are accepted as floats, arrays become tuples), NaN and infinities are refused,
unknown and missing fields are refused, and a dataclass's ``__post_init__`` checks run.
:func:`read_lenient` reads what we wrote ourselves and must keep reading (a training checkpoint's
configuration): unknown fields are ignored, missing ones take their defaults, and values are
converted where pydantic's lax mode converts them.

Either way a problem is a ``ValueError`` of one line naming the field's path and what is wrong,
``preprocess.image_size: expected an integer, got a boolean``, never a traceback.  The dataclasses
stay plain stdlib dataclasses; the configuration belongs to the reading, not to the class, because
the same sections (preprocessing, decoding, scoring) are read strictly in a manifest and leniently
in a checkpoint.
"""
from __future__ import annotations

import json
from functools import lru_cache
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import ConfigDict, TypeAdapter, ValidationError

if TYPE_CHECKING:
    from pydantic_core import ErrorDetails

T = TypeVar("T")

STRICT = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)
"""A user's file: exact types, no unknown field, finite numbers."""
LENIENT = ConfigDict(strict=False, extra="ignore")
"""Our own files, old and new: unknown fields ignored, lax conversions."""

EXPECTED = {
    "int_type": "an integer", "int_parsing": "an integer", "int_from_float": "an integer",
    "bool_type": "true or false", "bool_parsing": "true or false",
    "float_type": "a finite number", "float_parsing": "a finite number", "finite_number": "a finite number",
    "string_type": "a string",
    "tuple_type": "an array", "list_type": "an array", "set_type": "an array",
    "dict_type": "an object", "dataclass_type": "an object", "dataclass_exact_type": "an object",
    "model_type": "an object", "model_attributes_type": "an object", "none_required": "null",
}
"""What each of pydantic's type errors expected, in words."""
FIELD_ERRORS = ("missing", "extra_forbidden", "unexpected_keyword_argument")
"""Errors located at a field that is missing, or that its object does not declare."""


def read_strict(cls: type[T], data: Any) -> T:
    """Dataclass ``cls`` from parsed JSON ``data``, strictly (see the module); ValueError of one line."""
    try:
        text = json.dumps([data], allow_nan=True, default=_not_json)
    except TypeError as exc:
        raise ValueError(str(exc)) from None
    try:
        # JSON mode: strict pydantic takes a JSON array for a tuple field
        return _adapter(cls, strict=True).validate_json(text)[0]
    except ValidationError as exc:
        raise ValueError(_one_line(exc, data)) from None


def read_lenient(cls: type[T], data: Any) -> T:
    """Dataclass ``cls`` from parsed JSON ``data``, leniently (see the module); ValueError of one line."""
    try:
        return _adapter(cls, strict=False).validate_python((data,))[0]
    except ValidationError as exc:
        raise ValueError(_one_line(exc, data)) from None


@lru_cache(maxsize=None)
def _adapter(cls: type, strict: bool) -> TypeAdapter:
    # pydantic takes no config for a dataclass itself (a dataclass may carry its own); inside a
    # one-item tuple the config reaches it and every dataclass nested in it
    return TypeAdapter(tuple[cls], config=STRICT if strict else LENIENT)  # type: ignore[valid-type]


def _not_json(value: Any) -> Any:
    raise TypeError(f"a {type(value).__name__} value is not JSON data")


def _kind(value: Any) -> str:
    return {dict: "an object", list: "an array", tuple: "an array", str: "a string", bool: "a boolean",
            int: "an integer", float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


def _where(error: ErrorDetails, data: Any, errors: list[ErrorDetails]) -> tuple[str, tuple | None]:
    """The error's field path in ``data`` (``graphs.encoder.inputs[0].shape[1]``), and, when the
    error is one option's of a union, the union's location.  pydantic's location names the option
    (``int``, ``str``) as if it were a key: a name the data does not hold, where another error of
    the same value names another option."""
    loc = error["loc"]
    node, path, union = [data], "", None   # node: the value at the location so far, [] once unknown
    for i, key in enumerate(loc[1:], 1):   # past the one-item tuple
        inside = node and (isinstance(node[0], dict) and key in node[0] or isinstance(node[0], (list, tuple))
                           and isinstance(key, int) and 0 <= key < len(node[0]))
        field = i == len(loc) - 1 and error["type"] in FIELD_ERRORS   # the missing or unknown field itself
        if not inside and not field and any(e["loc"][:i] == loc[:i] and len(e["loc"]) > i and e["loc"][i] != key
                                            for e in errors):
            union = union or loc[:i]
            continue
        node = [node[0][key]] if inside else []
        path += f"[{key}]" if isinstance(key, int) else f".{key}" if path else str(key)
    return path, union


def _message(error: ErrorDetails, path: str, errors: list[ErrorDetails]) -> str:
    kind, value, loc = error["type"], error.get("input"), error["loc"]
    ctx = error.get("ctx") or {}
    if kind == "missing" and isinstance(loc[-1], int):   # a fixed-length array, too short
        short = sum(e["type"] == "missing" and e["loc"][:-1] == loc[:-1] for e in errors)
        return f"{path.rpartition('[')[0]}: expected {loc[-1] + short} items, got {loc[-1]}"
    if kind == "missing":
        return f"{path}: missing"
    if kind in FIELD_ERRORS:   # an unknown field: said of the object holding it
        parent, _, name = path.rpartition(".")
        return f"{parent + ': ' if parent else ''}unknown field {name!r}"
    where = f"{path}: " if path else ""
    if kind in EXPECTED:
        return f"{where}expected {EXPECTED[kind]}, got {value if kind == 'finite_number' else _kind(value)}"
    if kind == "literal_error":
        return f"{where}expected {ctx.get('expected')}, got {value!r}"
    if kind == "too_long" and "max_length" in ctx:
        return f"{where}expected {ctx['max_length']} items, got {ctx.get('actual_length')}"
    if kind in ("value_error", "assertion_error") and "error" in ctx:
        return f"{where}{ctx['error']}"   # a __post_init__ or a validator: its own words
    return f"{where}{error['msg']}"


def _one_line(exc: ValidationError, data: Any) -> str:
    """The first problem pydantic found in ``data``, in one line; a value no option of a union takes
    gets every option's expected type (``expected an integer or a string, got a number``)."""
    errors = exc.errors(include_url=False)
    path, union = _where(errors[0], data, errors)
    options = [e for e in errors if union is not None and e["loc"][:len(union)] == union]
    if len(options) > 1 and all(e["type"] in EXPECTED for e in options):
        expected = " or ".join(dict.fromkeys(EXPECTED[e["type"]] for e in options))
        return f"{path + ': ' if path else ''}expected {expected}, got {_kind(errors[0].get('input'))}"
    return " ".join(_message(errors[0], path, errors).split())
