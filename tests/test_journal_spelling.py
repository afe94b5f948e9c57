"""The journal's data and hash material are spelled without ``json.dumps`` on the common path
(a flat dict of scalars; an entry's fields as strings), and that spelling must be exactly the
text ``json.dumps`` gives: the stored data and every chain hash depend on it, and journals
written before the shortcut must still verify. Each property compares the two for any input,
including the ones the shortcut hands back to ``json.dumps`` (nested values, other key types,
subclasses, non-finite floats, lone surrogates)."""

from __future__ import annotations

import enum
import json
import math
from typing import Any

from hypothesis import given, settings, strategies as st

from agent_coherence.hashing import sha256_hex
from agent_coherence.journal import FORMAT, chain_hash, encode_data


def reference_data(data: object) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)


def reference_hash(prev: Any, seq: Any, ts: Any, kind: Any, key: Any, holder: Any, data_text: Any) -> str:
    material = json.dumps([FORMAT, prev, int(seq), float(ts), kind, key, holder, data_text],
                          separators=(",", ":"), ensure_ascii=True)
    return sha256_hex(material.encode("ascii"))


class Colour(enum.IntEnum):
    RED = 1


class Name(str):
    pass


texts = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=()))
floats = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([0.0, -0.0, 1e308, 5e-324, 1e16, 0.1])
scalars = (st.none() | st.booleans() | st.integers() | st.integers(min_value=-(10 ** 40), max_value=10 ** 40)
           | floats | texts)
odd_values = st.sampled_from([Colour.RED, Name("x"), b"bytes", (1, 2), [1, "a"], {"n": {"m": 1}}, 1 + 2j])
keys = texts | st.sampled_from(["fence", "ttl", "held_by", "expired_holder", "waited", "é", "\ud800"])


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(keys, scalars, max_size=6))
def test_flat_data_is_spelled_as_json_dumps_spells_it(data):
    assert encode_data(data) == reference_data(data)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(keys | st.integers() | st.sampled_from([None, True, 1.5]), scalars | odd_values, max_size=5))
def test_any_data_is_spelled_as_json_dumps_spells_it(data):
    try:
        expected = reference_data(data)
    except (TypeError, ValueError) as error:  # keys json.dumps cannot sort: the same refusal
        try:
            encode_data(data)
        except type(error):
            return
        raise AssertionError(f"encode_data accepted {data!r}, json.dumps refused it ({error})")
    assert encode_data(data) == expected


def test_data_that_is_not_a_dict_is_spelled_by_json_dumps():
    for data in ([1, 2], "text", None, 3.5, {"a": [1, {"b": math.inf}]}):
        assert encode_data(data) == reference_data(data)  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(st.text(), st.integers(min_value=0, max_value=2 ** 63), floats, texts, st.none() | texts,
       st.none() | texts, texts)
def test_the_chain_hash_is_the_hash_of_the_json_dumps_material(prev, seq, ts, kind, key, holder, data_text):
    assert chain_hash(prev, seq, ts, kind, key, holder, data_text) == \
        reference_hash(prev, seq, ts, kind, key, holder, data_text)


def test_fields_of_other_types_from_an_edited_row_hash_as_json_dumps_hashes_them():
    # SQLite keeps whatever type a tampering UPDATE stores: the hash must not depend on the path.
    for fields in (("p", 1, 2.0, 7, None, None, "{}"), ("p", "3", 1, "k", 5, None, "{}"),
                   ("p", True, 0, "k", "key", 2.5, "{}"), (Name("p"), 1, 0.0, Name("k"), Name("x"), None, "{}")):
        assert chain_hash(*fields) == reference_hash(*fields)  # type: ignore[arg-type]
