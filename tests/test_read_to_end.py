"""A file read through ``rooted`` returns the whole file whatever its first read gives: a first
read of exactly the ``fstat`` size ends it, a shorter one (as some FUSE and network filesystems
give) or a longer one (the file grew) is read on to the end."""

from __future__ import annotations

import os

from agent_coherence import rooted


def _pipe_with(data: bytes) -> int:
    """A read end holding ``data`` and then the end (a pipe's read gives what it holds, like a
    short read of a file)."""
    read_end, write_end = os.pipe()
    os.write(write_end, data)
    os.close(write_end)
    return read_end


def test_a_first_read_shorter_than_the_size_is_read_on_to_the_end() -> None:
    fd = _pipe_with(b"abcd")
    try:
        assert rooted._read_to_end(fd, 10) == b"abcd"
    finally:
        os.close(fd)


def test_a_file_that_grew_past_its_size_is_read_whole() -> None:
    fd = _pipe_with(b"abcdefgh" * 1000)  # more than the first read asks for (size + 1)
    try:
        assert rooted._read_to_end(fd, 4) == b"abcdefgh" * 1000
    finally:
        os.close(fd)


def test_exactly_the_size_and_empty(tmp_path: os.PathLike[str]) -> None:
    for data in (b"", b"x" * 1024):
        path = os.path.join(tmp_path, "f")
        with open(path, "wb") as handle:
            handle.write(data)
        fd = os.open(path, os.O_RDONLY)
        try:
            assert rooted._read_to_end(fd, os.fstat(fd).st_size) == data
        finally:
            os.close(fd)
