"""Read a JSON file's top-level object in one pass with bounded memory: large arrays element by element,
each element handed over with its exact source text.

Why: a COCO json of tens of millions of boxes does not fit in memory as Python objects. The file is
read in chunks; the standard library's C scanner (the one ``json.load`` uses) parses one element at a
time from the buffered text, so every value is exactly what ``json.load`` gives (floats, integers of
any size, NaN and Infinity alike), and the element's source text can be spilled to disk as it is: a
later ``json.loads`` of it gives the same value again, with nothing re-serialised. Only the current
element (and one chunk) is held in memory.

``read_object_members`` returns the members that are not streamed (small ones: info, categories...);
the streamed arrays are replaced by a ``StreamedArray`` with their element count. Invalid JSON raises
``JsonStreamError`` naming the line, column and character of the whole file, like ``json.load``.
"""
from __future__ import annotations

import codecs
import dataclasses
import hashlib
import json
import re
from json.decoder import JSONDecodeError, scanstring
from typing import BinaryIO, Callable


CHUNK_BYTES = 4 << 20                 # bytes read from the file at a time
MAX_ELEMENT_CHARS = 256 << 20         # a streamed element longer than this is refused (bounded memory)
_WHITESPACE = re.compile(r"[ \t\n\r]*")


class JsonStreamError(ValueError):
    """The file is not valid JSON; the message says where (line, column, character of the file)."""


class NotAnObject(ValueError):
    """The file is JSON whose top level is not an object; ``type_name`` is the top-level value's type."""

    def __init__(self, type_name: str):
        super().__init__(f"the top level is a {type_name}, expected an object")
        self.type_name = type_name


@dataclasses.dataclass(frozen=True)
class StreamedArray:
    """Stands for a streamed array member in the result of ``read_object_members``."""

    num_elements: int


class TextBuffer:
    """The decoded text of a binary JSON file, read chunk by chunk (the encoding detected as ``json.load``
    does: UTF-8/16/32, a UTF-8 byte order mark allowed); the sha256 and size of the bytes read."""

    def __init__(self, file: BinaryIO, chunk_bytes: int = CHUNK_BYTES, on_read: Callable[[int], None] | None = None):
        self.file, self.chunk_bytes, self.on_read = file, chunk_bytes, on_read
        self.sha256, self.num_bytes = hashlib.sha256(), 0
        self.text, self.index, self.eof = "", 0, False
        self.chars_before, self.lines_before, self.line_start_before = 0, 0, 0
        head = self._read(chunk_bytes)
        self.decoder = codecs.getincrementaldecoder(json.detect_encoding(head))("surrogatepass")
        self._append(head)

    def _read(self, size: int) -> bytes:
        data = self.file.read(size)
        self.sha256.update(data)
        self.num_bytes += len(data)
        if self.on_read is not None:
            self.on_read(len(data))
        return data

    def _append(self, data: bytes) -> None:
        self.text += self.decoder.decode(data, final=not data)
        self.eof = not data

    def fill(self) -> None:
        """Drop the text before ``index`` and read at least one more chunk (more when the kept text is
        already long, so that re-scanning a long value stays linear)."""
        kept_from = self.index
        dropped = self.text[:kept_from]
        newlines = dropped.count("\n")
        if newlines:
            self.lines_before += newlines
            self.line_start_before = self.chars_before + dropped.rfind("\n") + 1
        self.chars_before += kept_from
        self.text, self.index = self.text[kept_from:], 0
        self._append(self._read(max(self.chunk_bytes, len(self.text))))

    def peek(self) -> str:
        """The next character that is not whitespace ('' at the end of the file); ``index`` moves to it."""
        while True:
            text = self.text
            index = self.index = _WHITESPACE.match(text, self.index).end()
            if index < len(text) or self.eof:
                return text[index:index + 1]
            self.fill()

    def error(self, message: str, position: int) -> JsonStreamError:
        """A JsonStreamError at ``position`` of the current text, located in the whole file."""
        line = self.lines_before + self.text.count("\n", 0, position) + 1
        last_newline = self.text.rfind("\n", 0, position)
        column = position - last_newline if last_newline >= 0 else \
            self.chars_before + position - self.line_start_before + 1
        return JsonStreamError(f"{message}: line {line} column {column} (char {self.chars_before + position})")

    def scan(self, scan: Callable, limit: int | None = None) -> tuple[object, int, int]:
        """(value, start, end) of ``scan(text, index)`` at ``index`` (which moves to ``end``), reading more
        of the file while the value is cut off by the end of the buffer; ``limit`` caps its length."""
        while True:
            start = self.index
            try:
                value, end = scan(self.text, start)
                if end < len(self.text) or self.eof:
                    self.index = end
                    return value, start, end
                failure = None
            except StopIteration as stop:
                failure = ("Expecting value", stop.value)
            except JSONDecodeError as error:
                failure = (error.msg, error.pos)
            if self.eof:
                raise self.error(*failure)
            if limit is not None and len(self.text) - start > limit:
                raise self.error(f"a value longer than {limit} characters (or invalid JSON)", start)
            self.fill()

    def expect(self, character: str, message: str) -> None:
        if self.peek() != character:
            raise self.error(message, self.index)
        self.index += 1


def _stream_array(buffer: TextBuffer, scan_once, on_element: Callable) -> int:
    """Hand each element of the array at ``buffer.index`` (just past '[') to ``on_element(text, value)``;
    returns the element count."""
    count = 0
    if buffer.peek() == "]":
        buffer.index += 1
        return 0
    while True:
        buffer.peek()
        value, start, end = buffer.scan(scan_once, MAX_ELEMENT_CHARS)
        on_element(buffer.text[start:end], value)
        count += 1
        separator = buffer.peek()
        buffer.index += 1
        if separator == "]":
            return count
        if separator != ",":
            raise buffer.error("Expecting ',' delimiter", buffer.index - 1)


def _read_key(buffer: TextBuffer) -> str:
    if buffer.peek() != '"':
        raise buffer.error("Expecting property name enclosed in double quotes", buffer.index)
    buffer.index += 1
    key, _, _ = buffer.scan(lambda text, index: scanstring(text, index, True))
    buffer.expect(":", "Expecting ':' delimiter")
    return key


def read_object_members(file: BinaryIO, streamed: frozenset | set, on_element: Callable[[str, str, object], None],
                        *, chunk_bytes: int = CHUNK_BYTES, on_read: Callable[[int], None] | None = None,
                        on_member: Callable[[str, object], None] | None = None) -> tuple[list, TextBuffer]:
    """([(key, value), ...] of the top-level object in document order, the buffer (sha256, num_bytes)).

    Members named in ``streamed`` whose value is an array are not kept: each element goes to
    ``on_element(key, source_text, value)`` as it is parsed and the member's value is a
    ``StreamedArray``. A key that appears twice is listed twice. Raises JsonStreamError for invalid
    JSON (including trailing data) and NotAnObject when the top level is valid JSON but not an object.
    ``on_read(num_bytes)`` is called after each read (a progress bar), ``on_member(key, value)`` as soon
    as a member is complete.
    """
    buffer = TextBuffer(file, chunk_bytes, on_read)
    scan_once = json.scanner.make_scanner(json.JSONDecoder())
    first = buffer.peek()
    if first != "{":
        if first == "":
            raise buffer.error("Expecting value", buffer.index)
        if first == "[":   # not parsed: it may be large (and is refused whatever it holds)
            raise NotAnObject("list")
        value, _, _ = buffer.scan(scan_once)
        raise NotAnObject(type(value).__name__)
    buffer.index += 1
    members = []
    if buffer.peek() == "}":
        buffer.index += 1
    else:
        while True:
            key = _read_key(buffer)
            if key in streamed and buffer.peek() == "[":
                buffer.index += 1
                value = StreamedArray(_stream_array(buffer, scan_once,
                                                    lambda text, element, key=key: on_element(key, text, element)))
            else:
                buffer.peek()
                value, _, _ = buffer.scan(scan_once)
            members.append((key, value))
            if on_member is not None:
                on_member(key, value)
            separator = buffer.peek()
            buffer.index += 1
            if separator == "}":
                break
            if separator != ",":
                raise buffer.error("Expecting ',' delimiter", buffer.index - 1)
    if buffer.peek() != "":
        raise buffer.error("Extra data", buffer.index)
    return members, buffer
