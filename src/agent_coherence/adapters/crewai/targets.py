"""Which files a tool call writes: the paths named in its arguments.

The default extractor reads the argument names file tools commonly use (``file_path``, ``path``,
``filename``, ...; ``directory`` joined with ``filename`` the way crewai_tools' FileWriterTool joins
them; lists under ``paths`` or ``files``; and, beside a destination, the ``source`` of a move or
copy, since a move removes it). A tool whose arguments name files differently passes its
own function ``args -> paths``, or a fixed list of paths. Relative paths are taken relative to the
tool's base directory (its ``base_dir`` when it has one, else the working directory at call time),
which is where the tool itself will open them.

Limit: a path the tool computes internally (not named in its arguments) is invisible here; declare
it with ``paths=``.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterable, Mapping, Sequence, Union

PathArgs = Union[Callable[[Mapping[str, Any]], Iterable[str]], Sequence[str], None]

DESTINATION_ARGS = ("destination", "target", "dst", "destination_path", "to_path", "new_path")
FILE_ARGS = ("file_path", "filepath", "path", "file", "file_name", "output_file", "output_path",
             "target_file", *DESTINATION_ARGS)
# Leased only beside a destination: alone, "source" is as often a web page or a data source's
# name. A move removes its source; a copy only reads it, and the lease keeps writers off it
# meanwhile.
SOURCE_ARGS = ("source", "src", "source_path", "from_path", "old_path")
NAME_ARGS = ("filename",)
DIRECTORY_ARGS = ("directory", "dir", "folder")
LIST_ARGS = ("paths", "files", "file_paths")


def default_paths(args: Mapping[str, Any]) -> list[str]:
    """The file paths named in ``args`` under the common argument names (see the module doc)."""
    found = _named_strings(args, FILE_ARGS)
    if _named_strings(args, DESTINATION_ARGS):
        found.extend(_named_strings(args, SOURCE_ARGS))
    directory = next(iter(_named_strings(args, DIRECTORY_ARGS)), None)
    for value in _named_strings(args, NAME_ARGS):
        found.append(os.path.join(directory, value) if directory else value)
    for name in LIST_ARGS:
        values = args.get(name)
        if isinstance(values, (list, tuple)):
            found.extend(v for v in values if isinstance(v, str) and v)
    return found


def _named_strings(args: Mapping[str, Any], names: Sequence[str]) -> list[str]:
    """The non-empty string values of ``args`` under ``names``, in that order."""
    return [args[name] for name in names if isinstance(args.get(name), str) and args[name]]


def check_paths(spec: object, name: str = "paths") -> None:
    """Raise TypeError unless ``spec`` is a valid ``paths=``: None, a function, or a list of paths.
    A single string is refused: taken as a list, its letters would be the files leased."""
    if spec is None or callable(spec):
        return
    if isinstance(spec, (str, bytes)) or not isinstance(spec, (list, tuple, set, frozenset)):
        raise TypeError(f"{name}= takes a function of the arguments or a list of paths, not {type(spec).__name__} "
                        f"{spec!r}" + (f": {name}=[{spec!r}]" if isinstance(spec, str) else ""))
    for path in spec:
        if not isinstance(path, str):
            raise TypeError(f"{name}= lists paths (strings), not {type(path).__name__} {path!r}")


def returned_paths(value: Any, name: str = "paths") -> list[Any]:
    """What a ``paths=`` (or ``outputs=``) function returned, as a list of paths.

    A single string is a TypeError, as for a fixed ``paths=``: iterated, its letters would be the
    files leased while the file it names was written with no lease. ``os.PathLike`` items become
    strings, so a relative one is taken from the tool's directory like the string it stands for
    (left as is, it was resolved against the root: another file than the tool writes). Other
    items are kept, for the key check to refuse with its reason."""
    if isinstance(value, (str, bytes, os.PathLike)):
        raise TypeError(f"the {name}= function returned one {type(value).__name__} {value!r}; it returns a list "
                        f"of paths: [{value!r}]")
    return [os.fspath(p) if isinstance(p, os.PathLike) else p for p in value]


def extract_paths(spec: PathArgs, args: Mapping[str, Any]) -> list[str]:
    """The paths a call with ``args`` writes, as ``spec`` says (None: the default extractor).
    Raises TypeError for a function that returns a single path instead of a list."""
    if spec is None:
        return default_paths(args)
    if callable(spec):
        return [p for p in returned_paths(spec(args)) if p]
    return [p for p in spec if p]


def anchored(path: str, base_dir: str | None) -> str:
    """``path`` as the tool will open it, absolute: relative paths joined to ``base_dir``, and a
    relative ``base_dir`` (or none) to the working directory, where the tool opens it (a relative
    result would be taken from the coordinator's root: another file when the two differ). A path
    with a NUL byte or that is not a string is returned as given, for the key check to refuse
    with its reason."""
    if not isinstance(path, str) or "\x00" in path or os.path.isabs(path):
        return path
    return os.path.join(os.getcwd(), base_dir or "", path)


def looks_like_file_write(tool_name: str, args: Mapping[str, Any]) -> bool:
    """Whether a call of ``tool_name`` with ``args`` probably writes a file: a writing verb in the
    tool's name with a path in its arguments, or a path argument beside a content argument."""
    if not default_paths(args):
        return False
    name = tool_name.lower()
    if any(verb in name for verb in WRITE_VERBS):
        return True
    return any(isinstance(args.get(c), str) for c in CONTENT_ARGS)


WRITE_VERBS = ("write", "writer", "save", "edit", "append", "create", "update", "delete", "remove",
               "patch", "replace", "move", "rename", "copy")
CONTENT_ARGS = ("content", "contents", "text", "data", "body", "new_content", "new_string")
