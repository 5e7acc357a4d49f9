"""Strict JSON for client frames (SPEC §3): ``NaN``, ``Infinity`` and duplicate keys refused.

``loads_strict(frame)`` parses one text frame or raises ``ProtocolError`` ``invalid_json``
(SPEC §3.3), the first check of ``callroom.room.protocol.decode``.

Strict JSON, and fast. orjson rejects ``NaN``/``Infinity``, lone surrogates, numbers beyond
a double and nesting deeper than 1024, but keeps the last of duplicate keys (so does
msgspec, for dicts and Structs alike). The duplicate check (``_free_of_duplicate_keys``)
counts colons: without ``\\u`` escapes every colon of the text is either a member
separator or a character of a string, and orjson writes the parsed document back with
one colon per kept member and every string colon verbatim. So the text has as many colons
as ``orjson.dumps(doc)`` exactly when no member was dropped, i.e. when no object repeats a
key. Before counting, the common case is settled by one comparison: a compact frame (what
``JSON.stringify`` sends) is byte for byte ``orjson.dumps(doc)``, and a text equal to the
serialization of dicts cannot repeat a key. (Counting loops over every character of the
text; comparing is a ``memcmp``.) A text with a ``\\u`` escape (which could spell a
colon), or nested deeper than orjson writes (254), is checked by stdlib ``json`` with an
``object_pairs_hook`` instead; nesting beyond ``MAX_NESTING`` (512) levels is
``invalid_json`` on every Python. The hypothesis tests hold the fast checks against
generated documents with escapes. (Running that stdlib check after orjson on every frame
instead was measured slower.) The measurements behind these choices, with the commands
that repeat them: docs/performance.md, "Micro-measurements".
"""

from __future__ import annotations

import json
import re
from typing import Final

import orjson

from callroom.errors import ErrorCode, ProtocolError

__all__ = ["MAX_NESTING", "invalid_json", "loads_strict"]

_UNICODE_ESCAPE: Final = re.compile(r"\\u")  # re finds it ~3x faster than `in` on 2 KB


class _DuplicateKey(ValueError):
    pass


def _reject_duplicate_keys(pairs: list[tuple[str, object]]) -> None:
    # object_pairs_hook of the slow path: the parsed value is thrown away, only the
    # check matters (orjson already gave us the document).
    if len(pairs) > 1 and len({key for key, _ in pairs}) != len(pairs):
        raise _DuplicateKey


# Deeper documents are refused as they are, on every Python: how deep stdlib json can
# follow depends on the interpreter (~980 levels on 3.11, more on 3.12+, whose C
# scanner has its own recursion limit), and no frame of the protocol nests past 3.
MAX_NESTING = 512


def _nested_deeper_than(doc: object, limit: int) -> bool:
    """Whether ``doc`` has containers nested more than ``limit`` deep (no recursion)."""
    stack: list[tuple[object, int]] = [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list):
            if depth > limit:
                return True
            items = value.values() if isinstance(value, dict) else value
            stack.extend((item, depth + 1) for item in items)
    return False


def _free_of_duplicate_keys_slow(frame: str, doc: object) -> bool:
    if _nested_deeper_than(doc, MAX_NESTING):
        return False
    try:
        json.loads(frame, object_pairs_hook=_reject_duplicate_keys)
    except (ValueError, RecursionError):
        # A duplicate key; or a document stdlib json cannot follow: refused either way,
        # and the client gets the one invalid_json message that fits the common case.
        return False
    return True


def _free_of_duplicate_keys(frame: str, doc: object) -> bool:
    """True when no object of ``frame`` (already parsed by orjson into ``doc``) repeats a key.

    See the module docstring for why comparing colon counts is exact without ``\\u``.
    """
    try:
        rewritten = orjson.dumps(doc)
    except orjson.JSONEncodeError:  # nesting deeper than orjson.dumps writes (254)
        return _free_of_duplicate_keys_slow(frame, doc)
    if rewritten == frame.encode():
        return True  # the text IS the parsed document written back, so no key repeats
    if "\\" in frame and _UNICODE_ESCAPE.search(frame) is not None:
        return _free_of_duplicate_keys_slow(frame, doc)
    return frame.count(":") == rewritten.count(b":")


def invalid_json(message: str) -> ProtocolError:
    """An ``invalid_json`` refusal (SPEC §3.3); its ``event`` is always ``None``."""
    return ProtocolError(ErrorCode.INVALID_JSON, message, None)


def loads_strict(frame: str) -> object:
    """The document of ``frame`` if it is strict JSON (SPEC §3), else ``invalid_json``."""
    try:
        doc: object = orjson.loads(frame)
    except orjson.JSONDecodeError:
        raise invalid_json("the frame is not valid JSON") from None
    if not _free_of_duplicate_keys(frame, doc):
        raise invalid_json("the frame is not strict JSON: a key repeats in an object")
    return doc
