"""HuJSON (JSON with comments and trailing commas): a parser that keeps every value's byte span.

Stdlib only. `parse` gives a tree of `Node`s whose `start`/`end` point into the text, so a caller
can insert text next to a bracket and leave every other byte (comments, formatting) untouched;
`loads` gives plain Python values. Duplicate object keys are refused, as Tailscale's parser does.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

# Strings, comments, punctuation, bare words (numbers, true/false/null); a lone `"` or `/` is bad.
_TOKEN = re.compile(
    r'"(?:[^"\\\n]|\\.)*"|//[^\n]*|/\*[\s\S]*?\*/|[{}\[\]:,]|[^\s{}\[\]:,"/]+|(["/])'
)
_COMMENT_OR_STRING = re.compile(r'"(?:[^"\\\n]|\\.)*"|//[^\n]*|/\*[\s\S]*?\*/')
_WORD = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?|true|false|null")
BOM = "\ufeff"  # an editor's byte-order mark: allowed before the document, like whitespace
_LITERALS: dict[str, Any] = {"true": True, "false": False, "null": None}


class HuJSONError(ValueError):
    """The text is not valid HuJSON; the message names the line and column."""


@dataclass
class Node:
    """One value with its span: `text[start:end]` is the value, brackets included."""

    start: int
    end: int
    value: Any
    members: list[tuple[str, Node]] = field(default_factory=list)  # objects, in order
    items: list[Node] = field(default_factory=list)  # arrays

    def member(self, key: str) -> Node | None:
        """The value of `key` (an exact match first, else a case-insensitive one)."""
        folded = None
        for name, node in self.members:
            if name == key:
                return node
            if folded is None and name.lower() == key.lower():
                folded = node
        return folded


def position(text: str, offset: int) -> str:
    """'line L, column C' of an offset, for error messages."""
    line = text.count("\n", 0, offset) + 1
    column = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return f"line {line}, column {column}"


def comments(text: str) -> Iterator[re.Match[str]]:
    """Every comment of the text (strings are skipped, so `//` inside one is not a comment)."""
    for match in _COMMENT_OR_STRING.finditer(text):
        if not match.group().startswith('"'):
            yield match


class _Parser:
    """Recursive descent over the significant tokens (comments dropped)."""

    def __init__(self, text: str) -> None:
        self.text = text
        tokens = _TOKEN.finditer(text, 1 if text.startswith(BOM) else 0)
        self.tokens = [m for m in tokens if not m.group().startswith(("//", "/*"))]
        self.at = 0
        bad = next((m for m in self.tokens if m.group(1)), None)
        if bad is not None:
            what = "a string that never ends" if bad.group() == '"' else "a stray '/'"
            raise self.fail(bad.start(), f"{what} (or a comment that never ends)")

    def fail(self, offset: int, what: str) -> HuJSONError:
        return HuJSONError(f"{position(self.text, offset)}: {what}")

    def next(self) -> re.Match[str]:
        if self.at >= len(self.tokens):
            raise self.fail(len(self.text), "unexpected end of the document")
        token = self.tokens[self.at]
        self.at += 1
        return token

    def value(self) -> Node:
        token = self.next()
        lexeme = token.group()
        if lexeme == "{":
            return self.container(token.start(), "}")
        if lexeme == "[":
            return self.container(token.start(), "]")
        if lexeme.startswith('"'):
            return Node(token.start(), token.end(), self.string(token))
        if _WORD.fullmatch(lexeme):
            literal = _LITERALS[lexeme] if lexeme in _LITERALS else json.loads(lexeme)
            return Node(token.start(), token.end(), literal)
        raise self.fail(token.start(), f"unexpected {lexeme[:20]!r}")

    def string(self, token: re.Match[str]) -> str:
        try:
            decoded: str = json.loads(token.group())
        except ValueError as error:
            raise self.fail(token.start(), f"bad string ({error})") from None
        return decoded

    def container(self, start: int, close: str) -> Node:
        node = Node(start, start, {} if close == "}" else [])
        while True:
            token = self.next()
            if token.group() == close:
                node.end = token.end()
                return node
            self.at -= 1
            if close == "}":
                self.member(node)
            else:
                item = self.value()
                node.items.append(item)
                node.value.append(item.value)
            token = self.next()
            if token.group() == close:
                node.end = token.end()
                return node
            if token.group() != ",":
                raise self.fail(token.start(), f"expected ',' or {close!r}")

    def member(self, node: Node) -> None:
        token = self.next()
        if not token.group().startswith('"'):
            raise self.fail(token.start(), "expected a quoted key")
        key = self.string(token)
        if key in node.value:
            raise self.fail(token.start(), f"duplicate key {key!r}")
        if self.next().group() != ":":
            raise self.fail(token.end(), f"expected ':' after {key!r}")
        value = self.value()
        node.members.append((key, value))
        node.value[key] = value.value


def parse(text: str) -> Node:
    """The document's tree with spans; HuJSONError when it is not HuJSON."""
    parser = _Parser(text)
    root = parser.value()
    if parser.at < len(parser.tokens):
        raise parser.fail(parser.tokens[parser.at].start(), "text after the document's end")
    return root


def loads(text: str) -> Any:
    """The document as plain Python values (dict, list, str, int, float, bool, None)."""
    # Fast path: blank the comments and trailing commas in place, then the C JSON parser.
    try:
        standard = _STANDARD.sub(_standardize, text.removeprefix(BOM))
        return json.loads(standard, object_pairs_hook=_unique, parse_constant=_refuse)
    except ValueError:
        pass
    return parse(text).value  # the slow parser explains what is wrong, where


# Strings (kept), comments (blanked) and commas followed only by comments, blanks and a bracket.
_STANDARD = re.compile(
    r'"(?:[^"\\\n]|\\.)*"|//[^\n]*|/\*[\s\S]*?\*/'
    r"|,(?=(?:\s|//[^\n]*|/\*[\s\S]*?\*/)*[}\]])"
)


def _standardize(match: re.Match[str]) -> str:
    lexeme = match.group()
    if lexeme.startswith('"'):
        return lexeme
    return re.sub(r"[^\n]", " ", lexeme)


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ValueError("duplicate key")
    return out


def _refuse(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")
