"""The HuJSON parser: comments, trailing commas, spans, and errors that name line and column."""

from __future__ import annotations

import json

import pytest

from acl.hujson import HuJSONError, comments, loads, parse
from acl.merge import format_value, strip_generated
from provisioner.errors import InvalidInput

DOCUMENT = """// a policy
{
  /* block
     comment */ "groups": {"group:a": ["a@example.com",],}, // trailing commas
  "url": "http://example.com/*not a comment*/", // a string that looks like comments
  "n": [1, -2.5e3, true, false, null,],
  "escaped": "quote \\" slash // inside",
}
"""


def test_comments_and_trailing_commas_are_accepted() -> None:
    assert loads(DOCUMENT) == {
        "groups": {"group:a": ["a@example.com"]},
        "url": "http://example.com/*not a comment*/",
        "n": [1, -2500.0, True, False, None],
        "escaped": 'quote " slash // inside',
    }


def test_plain_json_parses_as_json_does() -> None:
    text = json.dumps({"a": [1, {"b": "ü\n"}], "c": {}, "d": []}, indent=2)
    assert loads(text) == json.loads(text)


def test_spans_point_at_each_value() -> None:
    root = parse(DOCUMENT)
    groups = root.member("groups")
    assert groups is not None
    assert DOCUMENT[groups.start : groups.end] == '{"group:a": ["a@example.com",],}'
    assert root.member("GROUPS") is groups  # legacy capitalised names are found too
    assert root.member("missing") is None
    numbers = root.member("n")
    assert numbers is not None
    assert [DOCUMENT[i.start : i.end] for i in numbers.items] == [
        "1",
        "-2.5e3",
        "true",
        "false",
        "null",
    ]


def test_comments_are_found_outside_strings_only() -> None:
    found = [m.group() for m in comments(DOCUMENT)]
    assert found == [
        "// a policy",
        "/* block\n     comment */",
        "// trailing commas",
        "// a string that looks like comments",
    ]


@pytest.mark.parametrize(
    ("text", "where", "what"),
    [
        ('{"a": 1', "line 1, column 8", "end of the document"),
        ('{\n  "a": 1,\n  "a": 2\n}', "line 3, column 3", "duplicate key 'a'"),
        ('{"a" 1}', "line 1, column 5", "expected ':'"),
        ("{a: 1}", "line 1, column 2", "expected a quoted key"),
        ('{"a": [1 2]}', "line 1, column 10", "expected ','"),
        ('{"a": tru}', "line 1, column 7", "unexpected 'tru'"),
        ('{"a": 01}', "line 1, column 7", "unexpected '01'"),
        ('{"a": "open}', "line 1, column 7", "a string that never ends"),
        ("{} {}", "line 1, column 4", "after the document's end"),
        ('{"a": 1} /* open', "line 1, column 10", "a comment that never ends"),
    ],
)
def test_errors_name_line_and_column(text: str, where: str, what: str) -> None:
    with pytest.raises(HuJSONError) as caught:
        parse(text)
    assert where in str(caught.value)
    assert what in str(caught.value)


def test_format_value_is_one_line_when_short_and_expanded_when_long() -> None:
    assert format_value({"a": [1, 2]}) == '{"a": [1, 2]}'
    long = {"src": ["x" * 60], "dst": ["y" * 60]}
    assert format_value(long, "  ") == (
        '{\n    "src": ["' + "x" * 60 + '"],\n    "dst": ["' + "y" * 60 + '"]\n  }'
    )
    assert loads(format_value(long)) == long


def test_strip_refuses_a_marker_without_its_pair() -> None:
    with pytest.raises(InvalidInput, match="without its provisioner:end"):
        strip_generated('{\n  // provisioner:begin\n  "a": 1,\n}\n')
    with pytest.raises(InvalidInput, match="unbalanced"):
        strip_generated("{\n  // provisioner:end\n  // provisioner:begin\n}\n")
