"""A file's stamp is spelled without the JSON encoder for the usual fields, and that spelling must
be exactly the encoder's bytes: stamps already on disk were written by the encoder, and ``decode``
must read what either path wrote. The property compares the two for any input, including the types
the shortcut hands back to the encoder (a bool for an int, a str subclass, lone surrogates)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings, strategies as st

from agent_coherence import stamps


class Name(str):
    pass


texts = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=()))
strings = texts | texts.map(Name)
integers = st.integers(min_value=-(2**70), max_value=2**70) | st.booleans()


@settings(max_examples=300, deadline=None)
@given(strings, strings, strings, integers, integers, strings, st.none() | strings)
def test_the_stamp_is_spelled_as_the_encoder_spells_it(
    intent_id: Any, key: Any, holder: Any, fence: Any, version: Any, sha: Any, base: Any,
) -> None:
    spelled = stamps.encode_fields(intent_id, key, holder, fence, version, sha, base)
    assert spelled == stamps.encoded_by_json(intent_id, key, holder, fence, version, sha, base)


def test_a_usual_stamp_decodes_to_its_fields() -> None:
    raw = stamps.encode_fields("0123abcd", "dir/é.txt", "agent \"a\"", 7, 12, "ab" * 32, None)
    assert stamps.decode(raw) == stamps.Stamp("0123abcd", "dir/é.txt", "agent \"a\"", 7, 12, "ab" * 32, None)
