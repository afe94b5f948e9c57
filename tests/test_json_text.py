"""``json_text`` must give exactly what the ``json`` package gives: the hook's answers, the stored
journal data (hashed as stored) and the state rows are written by one and read by the other. Each
property compares the two for any input: the same text out of ``dumps`` (or the same error), the
same value out of ``loads`` (or the same error type and message) for valid, damaged and arbitrary
text. ``is_namespaced`` (spelled without ``re`` for the same reason) is held to the regular
expression it replaced."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from typing import Any, Callable

from hypothesis import given, settings, strategies as st

from agent_coherence import json_text
from agent_coherence.paths import is_namespaced

texts = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=()))
scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | texts
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.tuples(inner, inner)
                      | st.dictionaries(texts, inner, max_size=4)
                      | st.dictionaries(st.integers() | st.floats() | st.booleans() | st.none(), inner, max_size=3),
                      max_leaves=20)
options = st.fixed_dictionaries({}, optional={
    "sort_keys": st.booleans(),
    "separators": st.sampled_from([(",", ":"), (", ", ": "), (",", ": ")]),
    "default": st.just(str),
})


def outcome(call: Callable[[], Any]) -> tuple[str, Any]:
    try:
        return "value", call()
    except (ValueError, TypeError, RecursionError) as error:
        return type(error).__name__, str(error)


def same(a: tuple[str, Any], b: tuple[str, Any]) -> bool:
    """Equal outcomes, NaN equal to NaN (a decoded NaN is a float that is not equal to itself)."""
    return json.dumps(a) == json.dumps(b) if a[0] == "value" else a == b


@settings(max_examples=300, deadline=None)
@given(values | st.builds(object) | st.lists(st.builds(object), max_size=2), options)
def test_dumps_is_json_dumps(value: Any, kwargs: dict[str, Any]) -> None:
    assert outcome(lambda: json_text.dumps(value, **kwargs)) == outcome(lambda: json.dumps(value, **kwargs))


def test_dumps_refuses_a_circular_value_and_a_later_call_still_works() -> None:
    loop: list[Any] = []
    loop.append(loop)
    assert outcome(lambda: json_text.dumps(loop)) == outcome(lambda: json.dumps(loop)) == \
        ("ValueError", "Circular reference detected")
    shared = [1]
    assert json_text.dumps([shared, shared, {"a": object()}], default=str).startswith("[[1], [1], {")


whitespace = st.text(alphabet=" \t\n\r", max_size=3)


@settings(max_examples=300, deadline=None)
@given(values, whitespace, whitespace, st.sampled_from(["", "x", ",", "]", "}", "\ufeff", "\x00", " 1"]),
       st.integers(min_value=0, max_value=10**6))
def test_loads_is_json_loads(value: Any, before: str, after: str, damage: str, cut: int) -> None:
    document = json.dumps(value)
    for text in (before + document + after, damage + document, document + damage,
                 document[: cut % (len(document) + 1)]):
        assert same(outcome(lambda: json_text.loads(text)), outcome(lambda: json.loads(text))), text


@settings(max_examples=300, deadline=None)
@given(texts | st.text(alphabet='{}[]",:0123456789.eE+-truefalsnNaIiy \\u\t\n', max_size=30))
def test_loads_of_any_text_is_json_loads(text: str) -> None:
    assert same(outcome(lambda: json_text.loads(text)), outcome(lambda: json.loads(text)))


def test_loads_of_bytes_and_deep_nesting_are_json_loads() -> None:
    for raw in (b'{"a": 1}', '{"b": [2]}'.encode("utf-16")):
        assert json_text.loads(raw) == json.loads(raw)  # type: ignore[arg-type]
    deep = "[" * 100_000 + "]" * 100_000
    assert outcome(lambda: json_text.loads(deep))[0] == outcome(lambda: json.loads(deep))[0] == "RecursionError"
    assert math.isnan(json_text.loads("NaN")) and json_text.loads("-Infinity") == -math.inf


def test_the_module_does_not_import_the_json_package() -> None:
    probe = ("import sys\nfrom agent_coherence import json_text\n"
             "json_text.loads(json_text.dumps({'a': [1, 2.5, None]}))\n"
             "print([m for m in ('json', 're', 'enum') if m in sys.modules])")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "[]", result.stderr


def test_without_the_accelerator_the_json_package_answers() -> None:
    probe = ("import sys\nsys.modules['_json'] = None\nfrom agent_coherence import json_text\n"
             "assert 'json' in sys.modules  # the fallback imported the package\n"
             "value = {'b': [1, 2.5, None, 'é'], 'a': float('inf')}\n"
             "text = json_text.dumps(value, sort_keys=True, separators=(',', ':'), default=str)\n"
             "assert json_text.loads(text) == value and json_text.quote('é') == '\"\\\\u00e9\"'\n"
             "print(text)")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == '{"a":Infinity,"b":[1,2.5,null,"\\u00e9"]}', result.stderr


NAMESPACED = re.compile(r"^[a-z][a-z0-9_.-]*:[^/\\]")


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet="az09_.-:/\\\nA ", max_size=8) | texts)
def test_is_namespaced_is_the_regular_expression(key: str) -> None:
    assert is_namespaced(key) == (bool(NAMESPACED.match(key)) and not key.startswith(("/", ".")))


def test_malformed_text_raises_json_decode_error_in_a_fresh_interpreter() -> None:
    """Before Python 3.12 the accelerator can build its error only once ``json.decoder`` is
    imported; the hook's interpreter has not imported it, and must still get json's own error."""
    probe = (
        "import sys\n"
        "from agent_coherence import json_text\n"
        "assert 'json' not in sys.modules\n"
        "for text in ['{\"a\": \"unterminated', '{\"a\" 1}', '[\"bad \\\\q escape\"]', '{\"a\": 1,}']:\n"
        "    try:\n"
        "        json_text.loads(text)\n"
        "    except ValueError as error:\n"
        "        import json\n"
        "        assert isinstance(error, json.JSONDecodeError), (text, repr(error))\n"
        "        del sys.modules['json'], sys.modules['json.decoder']\n"
        "    else:\n"
        "        raise AssertionError(text)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
