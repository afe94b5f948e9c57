"""Keys are confined to the workspace root: traversal, absolute paths elsewhere, escaping symlinks,
NUL bytes, odd unicode, over-long names and the state directory never write outside the root.

The property test throws generated keys at write / delete / read / adopt and compares a snapshot of
a sibling "outside" tree (and, on refusal, of the root) before and after each call.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent_coherence import Coordinator, DurabilityError, NotARegularFile, PathOutsideRoot
from agent_coherence.paths import STATE_DIR, normalize_key, resolve_file_key

from conftest import tree_snapshot


def build_workspace(base: Path) -> tuple[Path, Path]:
    """A root with symlinks that point outside, inside, at the state dir and at the root itself."""
    root, outside, evil = base / "root", base / "outside", base / "root-evil"
    for directory in (root / "sub", outside / "dir", evil):
        directory.mkdir(parents=True)
    (root / "a.txt").write_bytes(b"a")
    (root / "sub" / "b.txt").write_bytes(b"b")
    (outside / "secret.txt").write_bytes(b"secret")
    (outside / "dir" / "x.txt").write_bytes(b"x")
    (evil / "x").write_bytes(b"evil")
    links = {
        "out_dir": outside, "out_file": outside / "secret.txt", "dangling_out": outside / "nothere.txt",
        "in_link": root / "sub", "in_file_link": root / "a.txt", "state_link": root / STATE_DIR,
        "self_link": root, "rel_up": Path(".."), "rel_out": Path("../outside/secret.txt"),
    }
    for name, target in links.items():
        os.symlink(target, root / name)
    os.symlink(outside / "dir", root / "sub" / "deep_out")
    return root, outside


@pytest.fixture
def workspace(tmp_path):
    root, outside = build_workspace(tmp_path)
    with Coordinator.open(root) as coord:
        yield coord, root, outside, tmp_path


def outside_trees(base: Path, root: Path) -> dict[str, object]:
    snapshot = {}
    for entry in base.iterdir():
        if entry != root:
            snapshot.update(tree_snapshot(entry))
            snapshot[str(entry)] = ("top", os.lstat(entry).st_mode)
    return snapshot


# -- named cases ----------------------------------------------------------------------------

REFUSED = {
    "../x": "resolves outside the root",
    "../outside/secret.txt": "resolves outside the root",
    "../root-evil/x": "resolves outside the root",  # shares the root's name as a prefix
    "sub/../../x": "resolves outside the root",
    "/etc/passwd": "resolves outside the root",
    "out_file": "a symlink on the path resolves outside the root",
    "out_dir/new.txt": "a symlink on the path resolves outside the root",
    "dangling_out": "a symlink on the path resolves outside the root",
    "sub/deep_out/x.txt": "a symlink on the path resolves outside the root",
    "rel_up/outside/secret.txt": "a symlink on the path resolves outside the root",
    "rel_out": "a symlink on the path resolves outside the root",
    "in_link/../../outside/new.txt": "resolves outside the root",
    # ".." after a symlink leaves the link's target, as the kernel resolves it (a tool handed this
    # path would write outside the root)
    "out_dir/../x": "a symlink on the path resolves outside the root",
    "sub/deep_out/../../x": "a symlink on the path resolves outside the root",
    "rel_up/../x": "a symlink on the path resolves outside the root",
    "a\x00b": "contains a NUL byte",
    "": "empty key",
    "   ": "empty key",
    "x" * 256: "a path component is longer than 255 bytes",
    "é" * 128: "a path component is longer than 255 bytes",  # 256 bytes in UTF-8
    "a/" * 2100 + "a": "longer than 4096 bytes",
    ".": "names the root directory itself",
    "self_link": "names the root directory itself",
    "sub": "names a directory, not a file",
    f"{STATE_DIR}/state.db": f"inside the state directory {STATE_DIR}/",
    STATE_DIR: f"inside the state directory {STATE_DIR}/",
    f"./{STATE_DIR}//x": f"inside the state directory {STATE_DIR}/",
    "state_link/state.db": f"inside the state directory {STATE_DIR}/",
    "\udc80.txt": "contains unencodable characters (lone surrogates)",
}


@pytest.mark.parametrize("key", list(REFUSED), ids=[repr(k)[:40] for k in REFUSED])
def test_refused_keys_write_nothing(workspace, key):
    coord, root, outside, base = workspace
    before_out, before_root = outside_trees(base, root), tree_snapshot(root, skip=STATE_DIR)
    entries = coord.journal.count()
    with pytest.raises(PathOutsideRoot) as caught:
        coord.write(key, b"payload", holder="h")
    assert caught.value.reason == REFUSED[key]
    assert caught.value.key == key and caught.value.root == str(root)
    with pytest.raises(PathOutsideRoot):
        coord.delete(key, holder="h")
    with pytest.raises(PathOutsideRoot):
        coord.read(key)
    with pytest.raises(PathOutsideRoot):
        coord.acquire(key, "h")
    assert outside_trees(base, root) == before_out
    assert tree_snapshot(root, skip=STATE_DIR) == before_root
    assert coord.journal.count() == entries


@pytest.mark.parametrize("key,canonical", [
    ("plans/plan.md", "plans/plan.md"),
    ("./plans//plan.md", "plans/plan.md"),
    ("sub/../a.txt", "a.txt"),
    ("in_link/b.txt", "sub/b.txt"),  # a symlink inside the root names its target
    ("in_link/../a.txt", "a.txt"),
    ("sub/./b.txt", "sub/b.txt"),
    ("in_file_link", "a.txt"),
    ("données/été.md", "données/été.md"),
    ("x" * 255, "x" * 255),
    ("é" * 127, "é" * 127),
    (f"{STATE_DIR}-not/x", f"{STATE_DIR}-not/x"),
    (f"{STATE_DIR}/../x", "x"),
    ("dir with spaces/ünï cödé ✓.txt", "dir with spaces/ünï cödé ✓.txt"),
])
def test_accepted_keys_are_normalised_inside_the_root(workspace, key, canonical):
    coord, root, outside, base = workspace
    before_out = outside_trees(base, root)
    receipt = coord.write(key, b"payload", holder="h")
    assert receipt.key == canonical and receipt.path == str(root / canonical)
    assert (root / canonical).read_bytes() == b"payload"
    assert coord.key(key) == canonical
    assert coord.write(str(root / canonical), b"again", holder="h").version == 2  # absolute, inside
    assert outside_trees(base, root) == before_out


def test_key_types(workspace):
    coord, root, _, _ = workspace
    assert coord.key(b"sub/b.txt") == "sub/b.txt"
    assert coord.key(Path("sub") / "b.txt") == "sub/b.txt"
    assert coord.key("langgraph:thread/42") == "langgraph:thread/42"  # namespaced, not a file
    for bad in (b"\xff\xfe", 42, None):
        with pytest.raises(PathOutsideRoot):
            coord.key(bad)


@pytest.mark.parametrize("key", ["langgraph:thread/a\x00b", "langgraph:thread/" + "x" * 5000, "a\x00b.md"])
def test_a_malformed_key_is_told_what_a_key_must_be(workspace, key):
    # Its hint said to stay inside the workspace root: no help for a LangGraph thread id with a NUL.
    coord = workspace[0]
    with pytest.raises(PathOutsideRoot) as refused:
        coord.acquire(key, "h")
    assert "without NUL bytes, at most 4096 bytes" in refused.value.recover
    assert coord.leases() == []


def test_resolve_file_key_is_pure(tmp_path):
    root, _ = build_workspace(tmp_path)
    before = tree_snapshot(tmp_path)
    assert resolve_file_key(str(root), "new/dir/file.txt").path == str(root / "new/dir/file.txt")
    assert normalize_key(str(root), "store:ns/k") == "store:ns/k"
    assert tree_snapshot(tmp_path) == before


# -- generated keys -------------------------------------------------------------------------

COMPONENTS = st.one_of(
    st.sampled_from([
        "..", ".", "", "a.txt", "sub", "b.txt", "out_dir", "out_file", "dangling_out", "in_link",
        "in_file_link", "state_link", "self_link", "rel_up", "rel_out", "deep_out", STATE_DIR,
        "state.db", "outside", "secret.txt", "root-evil", "root", "x", "new", "~", "\\", "..\\..",
        "x\x00y", "\x00", "…", "．．", "\u202e", "\u0000", "ä", "e\u0301", "l1", "l2",
    ]),
    st.text(min_size=1, max_size=12),
    st.text(alphabet="xé", min_size=200, max_size=300),
)


@st.composite
def keys(draw) -> str:
    """Paths built from awkward components; ``<root>`` etc. are filled in per workspace."""
    parts = draw(st.lists(COMPONENTS, min_size=1, max_size=6))
    prefix = draw(st.sampled_from(["", "", "", "/", "<root>/", "<base>/", "<outside>/", "/tmp/", "/etc/"]))
    return prefix + "/".join(parts)


def resolve_placeholders(key: str, base: Path) -> str:
    return (key.replace("<root>", str(base / "root")).replace("<base>", str(base))
            .replace("<outside>", str(base / "outside")))


LINK_TARGETS = ["<outside>", "<outside>/secret.txt", "<outside>/dir", "<outside>/missing", "<base>", "..",
                "../..", "../outside", "../root-evil", "/etc", "/", "<root>/.agent-coherence", "sub", "a.txt",
                "<root>", "."]


@pytest.mark.slow
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.one_of(keys(), st.text(max_size=40)), operation=st.sampled_from(["write", "delete", "read", "adopt"]),
       link=st.none() | st.tuples(st.sampled_from(["l1", "sub/l2"]), st.sampled_from(LINK_TARGETS)))
def test_generated_keys_never_touch_anything_outside_the_root(workspace, raw, operation, link):
    coord, root, outside, base = workspace
    if link is not None:  # (re)point a symlink made in the workspace
        name, target = root / link[0], resolve_placeholders(link[1], base)
        if os.path.islink(name):
            os.unlink(name)
        if not os.path.lexists(name):
            os.symlink(target, name)
    key = resolve_placeholders(raw, base)
    before_out, before_root = outside_trees(base, root), tree_snapshot(root, skip=STATE_DIR)
    entries = coord.journal.count()
    try:
        if operation == "write":
            result_path = coord.write(key, b"payload", holder="h").path
        elif operation == "delete":
            result_path = coord.delete(key, holder="h").path
        elif operation == "read":
            result_path = coord.read(key).path
        else:
            coord.adopt(key)
            result_path = resolve_file_key(str(root), key).path
    except PathOutsideRoot:
        assert tree_snapshot(root, skip=STATE_DIR) == before_root, "a refused key changed the root"
        assert coord.journal.count() == entries
    except DurabilityError as error:
        # a key under an existing *file* ("a.txt/x") cannot be created; nothing else may fail
        assert error.errno == errno.ENOTDIR, error
        assert tree_snapshot(root, skip=STATE_DIR) == before_root
    else:
        real = os.path.realpath(result_path)
        assert real.startswith(str(root) + os.sep), result_path
        # the file named is the one the kernel would open for that path (what a tool would touch)
        assert real == os.path.realpath(key if os.path.isabs(key) else os.path.join(root, key))
        assert not real.startswith(str(root / STATE_DIR) + os.sep) and real != str(root / STATE_DIR)
        if operation == "write":
            assert Path(result_path).read_bytes() == b"payload"
    assert outside_trees(base, root) == before_out, f"{operation} {key!r} changed a file outside the root"
    assert os.path.isdir(root / STATE_DIR) and (root / STATE_DIR / "state.db").is_file()


def test_a_key_under_an_existing_file_fails_cleanly(workspace):
    """``a.txt/x`` cannot exist while ``a.txt`` is a file: the write fails typed and the key is not
    left blocked by a half-begun write."""
    coord, root, _, _ = workspace
    assert not coord.read("a.txt/x").exists
    with pytest.raises(DurabilityError) as caught:
        coord.write("a.txt/x", b"payload", holder="h")
    assert caught.value.errno == errno.ENOTDIR
    assert coord.backend.list_intents() == [] and coord.backend.get_lease("a.txt/x") is None
    assert coord.delete("a.txt/x", holder="h").version == 1  # deleting what is not there is a no-op version
    assert coord.write("a.txt", b"still writable", holder="h").version == 1
    assert coord.backend.list_intents() == []


def test_delete_under_a_missing_directory_creates_nothing(workspace):
    coord, root, _, _ = workspace
    before = tree_snapshot(root, skip=STATE_DIR)
    receipt = coord.delete("no/such/dir/file.txt", holder="h")
    assert receipt.version == 1 and receipt.size == 0
    assert tree_snapshot(root, skip=STATE_DIR) == before
    assert coord.backend.list_intents() == []


def test_a_name_at_the_length_limit_gets_a_temp_name_that_fits(workspace):
    coord, root, _, _ = workspace
    for name in ("y" * 255, "é" * 127 + "z"):
        assert coord.write(name, b"1", holder="h").version == 1
        assert coord.write(name, b"2", holder="h").version == 2
        assert (root / name).read_bytes() == b"2"
    assert coord.backend.list_intents() == []


def test_a_directory_at_the_key_is_both_a_refused_key_and_not_a_regular_file(coord, root):
    # the docs name NotARegularFile (kind "directory") in some places and PathOutsideRoot in
    # others for it: either except clause catches it
    (root / "sub").mkdir()
    (root / "sub" / "keep.txt").write_bytes(b"kept")
    for call in (lambda: coord.read("sub"), lambda: coord.write("sub", b"x", holder="h"),
                 lambda: coord.delete("sub", holder="h"), lambda: coord.acquire("sub", "h"),
                 lambda: coord.update("sub", lambda old: b"x", holder="h"), lambda: coord.adopt("sub")):
        with pytest.raises(NotARegularFile) as caught:
            call()
        assert isinstance(caught.value, PathOutsideRoot)
        assert caught.value.kind == "directory" and caught.value.path == str(root / "sub")
        assert caught.value.reason == "names a directory, not a file" and "directory" in caught.value.recover
    assert (root / "sub" / "keep.txt").read_bytes() == b"kept" and coord.journal.count() == 0


@pytest.mark.parametrize("key", ["loop1", "loop1/x.md", "sub/loop2/x.md"])
def test_a_symlink_loop_is_refused_as_a_loop_not_as_a_race(coord, root, key):
    # realpath leaves a loop unresolved; the walk from the root then met the link and called it
    # "a symlink appeared on the path after the key was checked", sending the user after a race
    (root / "sub").mkdir(exist_ok=True)
    os.symlink("loop2", root / "loop1")
    os.symlink("loop1", root / "loop2")
    os.symlink("../loop1", root / "sub" / "loop2")
    for call in (lambda: coord.read(key), lambda: coord.write(key, b"x", holder="h"), lambda: coord.key(key)):
        with pytest.raises(PathOutsideRoot) as caught:
            call()
        assert caught.value.reason.startswith("a symlink loop on the path")
    assert coord.journal.count() == 0
