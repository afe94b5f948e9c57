"""A file's stamp in its two spellings: format 2 (binary, within ``IN_INODE_BUDGET`` bytes, what a
write with the usual fields writes) and format 1 (JSON, what earlier releases wrote and unusual
fields still get). Whatever ``encode_fields`` is given, ``decode`` reads back a stamp that proves
exactly those fields and nothing else it was asked about; format 1 bytes are the JSON encoder's;
anything else decodes to None without raising."""

from __future__ import annotations

import hashlib
from typing import Any

from hypothesis import given, settings, strategies as st

from agent_coherence import stamps


class Name(str):
    pass


texts = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=()))
strings = texts | texts.map(Name)
integers = st.integers(min_value=-(2**70), max_value=2**70) | st.booleans()
hexes = st.binary(min_size=32, max_size=32).map(bytes.hex)
intent_ids = st.binary(min_size=8, max_size=8).map(bytes.hex)
counts = st.integers(min_value=0, max_value=2**63 - 1) | st.integers(min_value=0, max_value=300)


@settings(max_examples=300, deadline=None)
@given(strings, strings, strings, integers, integers, strings, st.none() | strings)
def test_any_fields_give_a_stamp_that_decodes_or_the_encoders_json(
    intent_id: Any, key: Any, holder: Any, fence: Any, version: Any, sha: Any, base: Any,
) -> None:
    spelled = stamps.encode_fields(intent_id, key, holder, fence, version, sha, base)
    if spelled[:1] == b"[":
        assert spelled == stamps.encoded_by_json(intent_id, key, holder, fence, version, sha, base)
    else:
        stamp = stamps.decode(spelled)
        assert stamp is not None and stamp.proves(key, sha, version, base)


@settings(max_examples=400, deadline=None)
@given(intent_ids, texts, texts, counts, counts, hexes, st.none() | hexes)
def test_the_usual_fields_round_trip_through_format_2_within_the_budget(
    intent_id: str, key: str, holder: str, fence: int, version: int, sha: str, base: str | None,
) -> None:
    raw = stamps.encode_fields(intent_id, key, holder, fence, version, sha, base)
    assert raw[:1] != b"["
    stamp = stamps.decode(raw)
    assert stamp is not None
    assert (stamp.intent_id, stamp.fence, stamp.version) == (intent_id, fence, version)
    assert stamp.holder in (holder, None)
    if version < 128 and fence < 128:  # the usual write: one byte each
        assert len(raw) <= stamps.IN_INODE_BUDGET
    if stamp.holder is None:
        assert len(raw) + len(holder) > stamps.IN_INODE_BUDGET or not holder.isascii()
    assert stamp.proves(key, sha, version, base)
    # ... and nothing it was not asked about
    other = hashlib.sha256(sha.encode()).hexdigest()
    assert not stamp.proves(key + "x", sha, version, base)
    assert not stamp.proves(key, other, version, base)
    assert not stamp.proves(key, sha, version + 1, base)
    assert not stamp.proves(key, sha, version, other if base is not None else sha)
    assert not stamp.proves(key, sha, version, None if base is not None else sha)
    assert not stamp.proves(key, None, version, base)


@settings(max_examples=200, deadline=None)
@given(st.text(), texts, texts, counts, counts, hexes, st.none() | hexes)
def test_format_1_still_decodes_and_proves_its_fields(
    intent_id: str, key: str, holder: str, fence: int, version: int, sha: str, base: str | None,
) -> None:
    stamp = stamps.decode(stamps.encoded_by_json(intent_id, key, holder, fence, version, sha, base))
    assert stamp is not None
    assert (stamp.intent_id, stamp.holder, stamp.fence, stamp.version) == (intent_id, holder, fence, version)
    assert stamp.proves(key, sha, version, base)
    assert not stamp.proves(key + "x", sha, version, base)
    assert not stamp.proves(key, sha[:-1] + ("0" if sha[-1] != "0" else "1"), version, base)  # format 1: every digit


def test_a_stamp_written_by_an_earlier_release_decodes() -> None:
    sha = "ab" * 32
    raw = f'[1,"86de60eede312bdb","a/b.md","agent-1",1,1,"{sha}",null]'.encode()
    stamp = stamps.decode(raw)
    assert stamp is not None and (stamp.intent_id, stamp.holder, stamp.fence, stamp.version) == (
        "86de60eede312bdb", "agent-1", 1, 1)
    assert stamp.proves("a/b.md", sha, 1, None) and not stamp.proves("a/b.md", sha, 1, sha)


def test_unusual_fields_fall_back_to_format_1() -> None:
    sha = "ab" * 32
    for fields in (("not-hex-at-all!!", 1, 1), ("86DE60EEDE312BDB", 1, 1), ("86de60eede312bd", 1, 1),
                   ("86de60eede312bdb", 2**63, 1), ("86de60eede312bdb", 1, -1)):
        intent_id, version, fence = fields
        raw = stamps.encode_fields(intent_id, "k", "h", fence, version, sha, None)
        assert raw == stamps.encoded_by_json(intent_id, "k", "h", fence, version, sha, None), fields
        stamp = stamps.decode(raw)
        assert stamp is not None and stamp.proves("k", sha, version, None) and stamp.intent_id == intent_id


def _holder(key: str, holder: str, version: int, sha: str, base: str | None) -> str | None:
    stamp = stamps.decode(stamps.encode_fields("86de60eede312bdb", key, holder, 1, version, sha, base))
    assert stamp is not None
    return stamp.holder


def test_the_holder_is_kept_while_it_fits_and_left_out_after() -> None:
    sha, base = "ab" * 32, "cd" * 32
    first = stamps.encode_fields("86de60eede312bdb", "a/b.md", "agent-1", 1, 1, sha, None)
    later = stamps.encode_fields("86de60eede312bdb", "a/b.md", "agent-1", 1, 2, sha, base)
    assert (len(first), len(later)) == (42, 43)
    assert _holder("a/b.md", "agent-1", 1, sha, None) == "agent-1"
    assert _holder("a/b.md", "agent-1", 2, sha, base) is None
    assert _holder("a/b.md", "w", 2, sha, base) == "w"
    assert _holder("a", "é", 1, sha, None) is None  # not ASCII


def _valid() -> list[bytes]:
    sha, base = "ab" * 32, "cd" * 32
    return [stamps.encode_fields("86de60eede312bdb", "a/b.md", holder, 300, version, sha, b)
            for holder in ("", "agent-1") for version, b in ((1, None), (2**40, base))]


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=120) | st.sampled_from(_valid()).flatmap(
    lambda raw: st.tuples(st.integers(0, len(raw) - 1), st.integers(0, 255)).map(
        lambda edit: raw[:edit[0]] + bytes((edit[1],)) + raw[edit[0] + 1:])))
def test_decode_never_raises(raw: bytes) -> None:
    stamps.decode(raw)


def test_garbage_is_rejected() -> None:
    for raw in _valid():
        for cut in range(36):  # every cut before the end of the key digest (a cut into the holder shortens it)
            assert stamps.decode(raw[:cut]) is None, (raw, cut)
        assert stamps.decode(bytes((raw[0] | 0x40,)) + raw[1:]) is None  # an unknown flag
    no_holder = stamps.encode_fields("86de60eede312bdb", "k", "a-long-holder-name", 1, 1, "ab" * 32, "cd" * 32)
    assert stamps.decode(no_holder + b"x") is None  # trailing bytes without the holder flag
    with_holder = stamps.encode_fields("86de60eede312bdb", "k", "w", 1, 1, "ab" * 32, None)
    assert stamps.decode(with_holder[:-1] + b"\xe9") is None  # a holder that is not ASCII
    assert stamps.decode(with_holder[:1] + b"\x81\x00" + with_holder[2:]) is None  # a varint with a needless byte
    assert stamps.decode(with_holder[:1] + b"\xff" * 10 + b"\x01" + with_holder[2:]) is None  # out of range
    for text in (b"", b"probe", b"[" * 100_000, b"[]", b"[1]", b'{"a":1}', b"[1,2,3,4,5,6,7,8]", b"null",
                 b'[1,"i","k","h",1,1,"' + b"AB" * 32 + b'",null]',  # format 1 with a hash no file has
                 b'[1,"i","k","h",true,1,"' + b"ab" * 32 + b'",null]',
                 b'[2,"i","k","h",1,1,"' + b"ab" * 32 + b'",null]'):
        assert stamps.decode(text) is None, text
