"""Read a JSON document's top-level object one member at a time (large arrays one element at a time).

Why: the converter starts decoding images as soon as a COCO json's ``images`` list is known, while
the rest of the file (the large ``annotations`` list) is still being parsed. ``json.loads`` holds the
GIL for the whole document, which would stall the decode threads; parsing a large array element by
element gives the other threads the GIL between elements.

The values are exactly what ``json.loads`` gives (the same C scanner parses every value), and invalid
JSON raises ``json.JSONDecodeError`` at the same place. A document whose top level is not an object
raises :class:`NotAnObject` carrying the value ``json.loads`` returns.
"""
from __future__ import annotations

import json
import re
from json.decoder import JSONDecodeError, scanstring
from typing import Iterator

_WHITESPACE = re.compile(r"[ \t\n\r]*")
_WHITESPACE_CHARS = " \t\n\r"


class NotAnObject(ValueError):
    """The document is valid JSON but its top level is not an object; ``value`` is the parsed value."""

    def __init__(self, value):
        super().__init__(f"the top level is a {type(value).__name__}, expected an object")
        self.value = value


def decode_json_bytes(data: bytes) -> str:
    """The text of a JSON file, with the encoding detection ``json.loads`` applies to bytes (UTF-8/16/32,
    a UTF-8 byte order mark allowed). Raises UnicodeDecodeError."""
    return data.decode(json.detect_encoding(data), "surrogatepass")


def _skip_whitespace(text: str, index: int) -> int:
    if index < len(text) and text[index] in _WHITESPACE_CHARS:
        return _WHITESPACE.match(text, index).end()
    return index


def _scan_value(scan_once, text: str, index: int):
    try:
        return scan_once(text, index)
    except StopIteration as stop:
        raise JSONDecodeError("Expecting value", text, stop.value) from None


def _scan_array_elements(scan_once, text: str, index: int) -> tuple[list, int]:
    """(the array starting at text[index] == '[', index after it), parsed one element per scanner call."""
    items = []
    append = items.append
    whitespace = _WHITESPACE.match
    index = _skip_whitespace(text, index + 1)
    if text[index:index + 1] == "]":
        return items, index + 1
    try:
        while True:
            value, index = scan_once(text, index)
            append(value)
            separator = text[index:index + 1]
            if separator and separator in _WHITESPACE_CHARS:
                index = whitespace(text, index).end()
                separator = text[index:index + 1]
            if separator == ",":
                index += 1
                if text[index:index + 1] in _WHITESPACE_CHARS:
                    index = whitespace(text, index).end()
            elif separator == "]":
                return items, index + 1
            else:
                raise JSONDecodeError("Expecting ',' delimiter", text, index)
    except StopIteration as stop:
        raise JSONDecodeError("Expecting value", text, stop.value) from None


def iter_object_members(text: str, elementwise: frozenset | set = frozenset()) -> Iterator[tuple[str, object]]:
    """Yield (key, value) for each member of the top-level JSON object in ``text``, in document order.

    Members named in ``elementwise`` whose value is an array are parsed one element at a time (same
    values). A key that appears twice is yielded twice (``json.loads`` would keep the last value).
    Raises JSONDecodeError for invalid JSON (including trailing data) and NotAnObject when the top
    level is valid JSON but not an object.
    """
    scan_once = json.scanner.make_scanner(json.JSONDecoder())
    index = _skip_whitespace(text, 0)
    if text[index:index + 1] != "{":
        raise NotAnObject(json.loads(text))
    index = _skip_whitespace(text, index + 1)
    if text[index:index + 1] == "}":
        index += 1
    else:
        while True:
            if text[index:index + 1] != '"':
                raise JSONDecodeError("Expecting property name enclosed in double quotes", text, index)
            key, index = scanstring(text, index + 1, True)
            index = _skip_whitespace(text, index)
            if text[index:index + 1] != ":":
                raise JSONDecodeError("Expecting ':' delimiter", text, index)
            index = _skip_whitespace(text, index + 1)
            if key in elementwise and text[index:index + 1] == "[":
                value, index = _scan_array_elements(scan_once, text, index)
            else:
                value, index = _scan_value(scan_once, text, index)
            yield key, value
            index = _skip_whitespace(text, index)
            separator = text[index:index + 1]
            if separator == "}":
                index += 1
                break
            if separator != ",":
                raise JSONDecodeError("Expecting ',' delimiter", text, index)
            index = _skip_whitespace(text, index + 1)
    index = _skip_whitespace(text, index)
    if index != len(text):
        raise JSONDecodeError("Extra data", text, index)
