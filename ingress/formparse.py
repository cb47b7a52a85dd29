"""Decoding an event body: PHP-style bracket forms (what Bitrix24 sends) and JSON.

Bitrix24 posts `application/x-www-form-urlencoded` bodies built by PHP's
`http_build_query`: nested values as bracket keys (`data[FIELDS][ID]=5`, brackets
percent-encoded on the wire), lists as `a[]=x&a[]=y` or `a[0]=x`. The decoder follows
PHP's own rules (`php_register_variable_ex`) so that what PHP would see is what we see:

- a key is percent-decoded (`+` is a space) before its brackets are read;
- in the base name (before the first `[`) spaces and dots become `_`; an empty base
  name drops the pair; a `[` without a closing `]` becomes `_` and ends the brackets;
- text after a `]` that does not open another `[` is ignored;
- `[]` appends at the next integer index; canonical integer strings are integer keys;
- a later pair wins over an earlier one, a scalar being replaced by an array and back.

The result is what PHP's `json_encode` of that array would give: an array whose keys are
exactly 0..n-1 in order is a list, every other array an object with string keys; every
leaf is a string. JSON bodies decode to the same shapes.

Bounds (pair count, nesting depth) are enforced here; the body size is the caller's (it
has the body before we do). Any malformed input raises `FormError`, and nothing else:
the property tests hold the parser to that.
"""

from __future__ import annotations

import codecs
import functools
import re
from collections.abc import Sequence
from email.message import EmailMessage
from email.parser import HeaderParser
from email.policy import HTTP
from typing import Any
from urllib.parse import unquote_to_bytes

import orjson

from shared.errors import B24PipeError

try:  # yarl (an aiohttp dependency) has a C unquoter, 10x faster than urllib's
    from yarl._quoting import _Unquoter

    _fast_unquote: _Unquoter | None = _Unquoter(plus=True)
except (ImportError, TypeError):  # pragma: no cover - an older or changed yarl
    _fast_unquote = None

FORM = "application/x-www-form-urlencoded"
JSON = "application/json"

_BAD_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")
_INT_KEY = re.compile(r"-?[1-9][0-9]*|0")
_INT_MAX = 2**63 - 1


class FormError(B24PipeError, ValueError):
    """The body cannot be decoded. `code` is the contract's error code, `detail` says why
    in one line that never repeats the body (it may carry secrets)."""

    def __init__(self, detail: str, code: str = "invalid_request") -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


def _int_key(key: str) -> int | None:
    """The integer PHP makes of a key ("5" -> 5, "05" stays a string), or None."""
    if key and (key[0].isdigit() or key[0] == "-") and len(key) <= 20 and _INT_KEY.fullmatch(key):
        value = int(key)
        if -_INT_MAX - 1 <= value <= _INT_MAX:
            return value
    return None


class _Tree:
    """PHP arrays under construction, as plain dicts with string keys.

    PHP appends (`a[]`) at one past the largest integer key the array ever had; that
    index is computed when an array first sees an append and kept up to date after."""

    __slots__ = ("containers", "next_index", "root")

    def __init__(self) -> None:
        self.root: dict[str, Any] = {}
        self.containers = [self.root]  # keeps ids in next_index unique while we build
        self.next_index: dict[int, int] = {}

    def key(self, node: dict[str, Any], key: str | None) -> str:
        """The key an index names in `node` (the next free integer for an append)."""
        tracked = self.next_index.get(id(node))
        if key is None:
            if tracked is None:
                tracked = max((n + 1 for n in map(_int_key, node) if n is not None), default=0)
            self.next_index[id(node)] = tracked + 1
            return str(tracked)
        if tracked is not None:
            number = _int_key(key)
            if number is not None and number >= tracked:
                self.next_index[id(node)] = number + 1
        return key

    def child(self, node: dict[str, Any], key: str) -> dict[str, Any]:
        found = node.get(key)
        if type(found) is dict:
            return found
        fresh: dict[str, Any] = {}
        node[key] = fresh
        self.containers.append(fresh)
        return fresh


def _export(node: dict[str, Any]) -> dict[str, Any] | list[Any]:
    """Lists where PHP's json_encode would make them: keys exactly 0..n-1 in order."""
    for key, value in node.items():
        if type(value) is dict:
            node[key] = _export(value)
    if "0" in node and all(key == str(position) for position, key in enumerate(node)):
        return list(node.values())
    return node


_SIMPLE_NAME = re.compile(r"([^\[ .]+)((?:\[[^\[\] ][^\[\]]*\])*)")
_INDEX = re.compile(r"\[([^\]]*)\]")


def _split_name(name: str) -> tuple[str, list[str | None]] | None:
    """PHP's reading of a decoded key: base name and bracket indexes (None = append)."""
    simple = _SIMPLE_NAME.fullmatch(name)
    if simple is not None:  # the common case: word[word][word]
        base, brackets = simple.groups()
        return base, _INDEX.findall(brackets) if brackets else []
    name = name.lstrip(" ")
    open_at = name.find("[")
    base = name if open_at < 0 else name[:open_at]
    base = base.replace(" ", "_").replace(".", "_")
    if not base:
        return None
    if open_at < 0:
        return base, []
    indexes: list[str | None] = []
    pos = open_at
    while True:
        start = pos + 1
        probe = start + 1 if name[start : start + 1] == " " else start
        if name[probe : probe + 1] == "]":
            indexes.append(None)
            close = probe
        else:
            close = name.find("]", probe)
            if close < 0:
                if not indexes:
                    # not an index: the `[` and what follows belong to the base name
                    return f"{base}_{name[start:]}", []
                return base, indexes
            indexes.append(name[start:close])
        if name[close + 1 : close + 2] != "[":
            return base, indexes
        pos = close + 1


def _decode_utf8(part: str) -> str:
    """Percent-decode one name or value of a UTF-8 body (already text)."""
    if "%" not in part and "+" not in part:
        return part
    if _fast_unquote is None:
        return _decode(part.encode(), "utf-8")
    decoded: str = _fast_unquote(part)
    # yarl keeps escapes that are not valid UTF-8 as they were; a `%` in the output that
    # no `%25` explains is one of those
    if "%" in decoded and decoded.count("%") != part.count("%25"):
        raise FormError("form field is not valid utf-8")
    return decoded


def _decode(raw: bytes, charset: str) -> str:
    if b"+" in raw:
        raw = raw.replace(b"+", b" ")
    if b"%" in raw:
        raw = unquote_to_bytes(raw)
    try:
        return raw.decode(charset)
    except UnicodeError:  # a codec may refuse with its own UnicodeError (idna: label too long)
        raise FormError(f"form field is not valid {charset}") from None


_Name = tuple[str, tuple[str | None, ...]] | None  # base name and indexes; None: dropped
_CACHED_NAME_LENGTH = 128  # longer names are decoded each time: the cache's memory is bounded


def _name(decoded: str) -> _Name:
    if "\x00" in decoded:
        raise FormError("form field name contains a NUL byte")
    split = _split_name(decoded)
    return None if split is None else (split[0], tuple(split[1]))


@functools.lru_cache(maxsize=4096)
def _short_name(decoded: str) -> _Name:
    return _name(decoded)


def _cached_name(decoded: str) -> _Name:
    """`_name`, cached for short names: Bitrix24 sends the same few dozen names
    (`auth[member_id]`, ...) in every event. A malformed name raises and is not cached."""
    return _short_name(decoded) if len(decoded) <= _CACHED_NAME_LENGTH else _name(decoded)


def _charset_fields(body: bytes, charset: str, max_keys: int) -> list[tuple[_Name, str]]:
    """The (name, decoded value) pairs of a body in another charset than UTF-8, in order;
    `a` alone is ("a", "")."""
    pairs = [pair.partition(b"=") for pair in body.split(b"&") if pair]
    _count(len(pairs), max_keys)
    return [(_cached_name(_decode(name, charset)), _decode(value, charset)) for name, _, value in pairs]


def _utf8_fields(text: str, decoded: bool, max_keys: int) -> list[tuple[_Name, str]]:
    """`_charset_fields` of a UTF-8 body's text (`_utf8_text`)."""
    parts = _parts(text, max_keys)
    if decoded:
        return [(_cached_name(name), value) for name, _, value in parts]
    return [(_cached_name(_decode_utf8(name)), _decode_utf8(value)) for name, _, value in parts]


def _count(pairs: int, max_keys: int) -> None:
    if pairs > max_keys:
        raise FormError(f"form has more than {max_keys} fields")


def _utf8_text(body: bytes) -> tuple[str, bool]:
    """A UTF-8 body as text, and whether that text is percent-decoded already."""
    try:
        text = body.decode()
    except UnicodeDecodeError:
        raise FormError("form body is not valid utf-8") from None
    if "%26" in text or "%3D" in text or "%3d" in text:
        return text, False
    # No escaped `&` or `=`: decoding the body in one pass gives the same pairs as decoding
    # each name and value, for a fraction of the calls.
    return _decode_utf8(text), True


def _parts(text: str, max_keys: int) -> list[tuple[str, str, str]]:
    parts = [pair.partition("=") for pair in text.split("&") if pair]
    _count(len(parts), max_keys)
    return parts


def parse_form(body: bytes, *, max_keys: int, max_depth: int, charset: str = "utf-8") -> dict[str, Any]:
    """Decode a PHP-style form body into nested data (see the module docstring)."""
    if _BAD_ESCAPE.search(body):
        raise FormError("form body has an invalid percent-escape")
    if charset == "utf-8":
        text, decoded = _utf8_text(body)
        if decoded and len(body) <= _PLANNED_BODY:
            return _planned(text, max_keys, max_depth)
        fields = _utf8_fields(text, decoded, max_keys)
    else:
        fields = _charset_fields(body, charset, max_keys)
    names = tuple(split for split, _ in fields)
    values = [value for _, value in fields]
    if len(body) <= _PLANNED_BODY:
        filled: dict[str, Any] = _fill(_plan(names, max_depth), values)
        return filled
    return _build(names, values, max_depth)


# The shape of the result depends on the names alone, in their order; the values only fill
# its leaves. Bitrix24 sends the same few sequences of names, so each one's shape is built
# once (`_plan`, its leaves the positions of the values) and then filled for every body
# that has it. Only small bodies are planned: the cache's memory stays bounded.
_PLANNED_BODY = 8192


@functools.lru_cache(maxsize=512)
def _plan(names: tuple[_Name, ...], max_depth: int) -> dict[str, Any]:
    return _build(names, range(len(names)), max_depth)


# A small body decoded in one pass takes a shorter way still: the body with its values cut
# out (one C call) finds the plan, and the values come out in one more. Only bodies without
# an empty pair (`&&`) are recorded: then a body with the same names cut out and a value for
# each of them is the same pairs.
_VALUE = re.compile(r"=([^&]*)")
_MAX_SHAPES = 512
_shapes: dict[tuple[str, int], tuple[dict[str, Any], int]] = {}  # (names, depth) -> (plan, pairs)


def _planned(text: str, max_keys: int, max_depth: int) -> dict[str, Any]:
    """The nested data of a small, already percent-decoded UTF-8 body."""
    key = (_VALUE.sub("", text), max_depth)
    known = _shapes.get(key)
    if known is not None:
        plan, pairs = known
        values = _VALUE.findall(text)
        if len(values) == pairs:
            _count(pairs, max_keys)
            filled: dict[str, Any] = _fill(plan, values)
            return filled
    parts = _parts(text, max_keys)
    plan = _plan(tuple(_cached_name(name) for name, _, _ in parts), max_depth)
    if len(parts) == text.count("&") + 1:
        if len(_shapes) >= _MAX_SHAPES:
            _shapes.clear()
        _shapes[key] = (plan, len(parts))
    filled = _fill(plan, [value for _, _, value in parts])
    return filled


def _fill(node: Any, values: list[str]) -> Any:
    """A fresh copy of a plan's `node`, each leaf (a position) replaced by the value there."""
    if type(node) is dict:
        return {key: values[leaf] if type(leaf) is int else _fill(leaf, values) for key, leaf in node.items()}
    return [values[leaf] if type(leaf) is int else _fill(leaf, values) for leaf in node]


def _build(names: Sequence[_Name], values: Sequence[Any], max_depth: int) -> dict[str, Any]:
    """The nested data of the fields `names` with `values`, PHP's way."""
    tree = _Tree()
    root, tracked = tree.root, tree.next_index
    for split, value in zip(names, values, strict=True):
        if split is None:
            continue
        base, indexes = split
        if len(indexes) >= max_depth:
            raise FormError(f"form nesting is deeper than {max_depth} levels")
        node = root
        key = base
        for index in indexes:
            found = node.get(key)
            node = found if type(found) is dict else tree.child(node, key)
            # until the first append (`[]`) no array tracks a next index: keys are as sent
            key = index if index is not None and not tracked else tree.key(node, index)
        node[key] = value
    out = _export(tree.root)
    return out if isinstance(out, dict) else {str(i): v for i, v in enumerate(out)}


def _check_json(value: Any, max_keys: int, max_depth: int) -> None:
    """Walk a decoded JSON document once, counting leaves and levels."""
    count = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children = node.values()
        elif isinstance(node, list):
            children = node  # type: ignore[assignment]
        else:
            count += 1
            if count > max_keys:
                raise FormError(f"JSON body has more than {max_keys} values")
            continue
        if depth >= max_depth and len(children) > 0:
            raise FormError(f"JSON nesting is deeper than {max_depth} levels")
        stack.extend((child, depth + 1) for child in children)


def parse_json(body: bytes, *, max_keys: int, max_depth: int, charset: str = "utf-8") -> dict[str, Any]:
    """Decode a JSON object body under the same bounds as a form."""
    if charset not in ("utf-8", "utf8"):
        try:
            body = body.decode(charset).encode()
        except UnicodeError:
            raise FormError(f"JSON body is not valid {charset}") from None
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise FormError(f"JSON body is malformed at position {exc.pos}") from None
    if not isinstance(value, dict):
        raise FormError("JSON body must be an object")
    _check_json(value, max_keys, max_depth)
    return value


class _OctetStreamDefault(EmailMessage):
    """A malformed type reads as application/octet-stream (RFC 9110 8.3), as aiohttp reads it,
    not as text/plain (the e-mail rule)."""

    def get_content_type(self) -> str:
        media = self.get("content-type", "").lower().partition(";")[0].strip()
        return media if media.count("/") == 1 else "application/octet-stream"


_HEADER_PARSER = HeaderParser(_OctetStreamDefault, policy=HTTP)


@functools.lru_cache(maxsize=64)
def media_type(header: str | None) -> tuple[str, str | None]:
    """(media type, charset) of a Content-Type header, read the way aiohttp reads it. Cached:
    every Bitrix24 event carries the same header, and parsing it is not free."""
    if header is None:
        return "application/octet-stream", None
    message = _HEADER_PARSER.parsestr(f"Content-Type: {header}")
    charset = message.get_param("charset")
    return message.get_content_type(), charset if isinstance(charset, str) else None


_ASCII_PROBE = '&=%+[]{}":,_-.az09'


@functools.lru_cache(maxsize=64)
def _charset(charset: str | None) -> str:
    """The codec name of a body's charset. Only text codecs that encode ASCII as ASCII
    (utf-8, latin-1, cp1251, ...) qualify: the form syntax (`&`, `=`, `%`) and JSON's are
    ASCII, and a codec that rewrites them (utf-7, utf-16, punycode) or is no text codec at
    all (base64, zlib, rot13) would read the body as something else: 415."""
    if not charset:
        return "utf-8"
    try:
        info = codecs.lookup(charset)
        usable = _ASCII_PROBE.encode(info.name) == _ASCII_PROBE.encode("ascii")
    except (LookupError, UnicodeError, ValueError):  # unknown, or not a text codec
        usable = False
    if not usable:
        raise FormError(f"unsupported charset {charset[:40]!r}", code="unsupported_media_type")
    return "utf-8" if info.name == "utf-8" else info.name


def parse_body(
    body: bytes, content_type: str, charset: str | None, *, max_keys: int, max_depth: int
) -> dict[str, Any]:
    """Decode an event body by its content type; other types raise `unsupported_media_type`."""
    if content_type == FORM:
        return parse_form(body, max_keys=max_keys, max_depth=max_depth, charset=_charset(charset))
    if content_type == JSON:
        return parse_json(body, max_keys=max_keys, max_depth=max_depth, charset=_charset(charset))
    shown = content_type[:60] or "none"
    raise FormError(
        f"content type {shown!r} is not supported; use {FORM} or {JSON}", "unsupported_media_type"
    )
