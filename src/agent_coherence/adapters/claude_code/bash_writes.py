"""Best-effort static detection of the files a Bash command may write.

Claude Code's Write/Edit hooks don't see writes made through the Bash tool (``tee``, ``sed -i``,
``>``, ``rm``, ``mv`` ...). This module reads a command string the way bash would tokenise it and
reports which paths the command may write, create, delete, truncate or move, so the hook can check
those paths as well. ``scan_bash_command(command, cwd)`` never raises and never runs anything. It
uses only the standard library and imports nothing heavy, because it runs on every tool call.

How to read a result:

* ``targets`` are absolute paths, resolved against ``cwd`` and any ``cd`` earlier in the command.
  A directory target (``rm -rf build``, ``git checkout -- .``) covers everything beneath it. A target
  with an unexpanded ``$VAR``, command substitution or glob is kept as written (joined to the cwd
  when relative) and ``uncertain`` is set.
* ``uncertain`` means the command may write in ways this scan can't see: unparsable input, ``eval``,
  ``bash -c``, interpreters (``python -c``, ``node script.js``), ``xargs``, ``find -exec/-delete``,
  archive extraction, branch switches, variables or globs where a path should be.
* ``notes`` say why, in a few words each.

Command substitutions ``$(...)`` and backticks, subshells ``( ... )`` and process substitutions are
parsed and scanned like the rest of the command: ``git commit -m "$(cat <<'EOF' ... EOF)"`` is not
uncertain, while ``rm $(cat list)`` is (its target is unknown). ``bash -c '...'`` strings are scanned
too, but remain uncertain. Unknown programs (``make``, ``npm test``, ``pytest``) count as not writing.
This is a best effort meant to catch the common ways an agent writes files through Bash; a
determined program can always write where no static scan sees it.

This module holds the public API and the walker (``Scan``); the lexer is in :mod:`bash_lexer` and
the per-command handlers in :mod:`bash_commands`, :mod:`bash_tools` and :mod:`bash_git`.
"""

from __future__ import annotations

import os
import re

from .bash_commands import COMMAND_HANDLERS
from .bash_commands import WRAPPERS
from .bash_lexer import ASSIGN_RE, Lexer, ParseError, Redir, Word
from .bash_tools import TOOL_HANDLERS
from .bash_tools import INTERPRETERS, handle_interpreter, handle_python

__all__ = ["BashWriteScan", "scan_bash_command"]

MAX_COMMAND_CHARS = 100_000
_MAX_SCRIPT_DEPTH = 6  # nested bash -c / eval strings
_MAX_NOTE = 200  # characters per note


class BashWriteScan:
    """The result of :func:`scan_bash_command`: a frozen value object (like a frozen slots dataclass).

    It is hand-written rather than a ``@dataclass`` because importing :mod:`dataclasses` costs about
    10 ms per process (it imports :mod:`inspect`), and this runs on every tool call.
    """

    __slots__ = ("targets", "uncertain", "notes")
    __match_args__ = ("targets", "uncertain", "notes")

    targets: tuple[str, ...]
    uncertain: bool
    notes: tuple[str, ...]

    def __init__(self, targets: tuple[str, ...] = (), uncertain: bool = False, notes: tuple[str, ...] = ()):
        object.__setattr__(self, "targets", tuple(targets))
        object.__setattr__(self, "uncertain", bool(uncertain))
        object.__setattr__(self, "notes", tuple(notes))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"cannot assign to field {name!r}: BashWriteScan is frozen")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r}: BashWriteScan is frozen")

    def _key(self) -> tuple:
        return (self.targets, self.uncertain, self.notes)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is self.__class__:
            return self._key() == other._key()  # type: ignore[attr-defined]
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return f"BashWriteScan(targets={self.targets!r}, uncertain={self.uncertain!r}, notes={self.notes!r})"

    def __reduce__(self):
        return (self.__class__, self._key())


def scan_bash_command(command: str, cwd: str) -> BashWriteScan:
    """Return the paths ``command`` may write when run by bash in ``cwd``. Never raises."""
    try:
        return _scan(command, cwd)
    except Exception as exc:  # a bug here must never break the hook
        return BashWriteScan((), True, (f"scanner error ({type(exc).__name__}): not analysed",))


def _scan(command: object, cwd: object) -> BashWriteScan:
    if isinstance(command, (bytes, bytearray)):
        command = bytes(command).decode("utf-8", "replace")
    if not isinstance(command, str):
        return BashWriteScan((), True, ("command is not a string: not analysed",))
    if len(command) > MAX_COMMAND_CHARS:
        return BashWriteScan((), True, (f"command longer than {MAX_COMMAND_CHARS} characters: not analysed",))
    base = _base_dir(cwd)
    lexer = Lexer(command, 0)
    try:
        tokens = lexer.lex()
    except ParseError as exc:
        return BashWriteScan((), True, (f"could not parse: {exc}"[:_MAX_NOTE],))
    scan = Scan(base)
    for issue in lexer.issues:
        scan.flag(issue)
    scan.run(tokens)
    return BashWriteScan(tuple(scan.targets), scan.uncertain, tuple(scan.notes))


def _base_dir(cwd: object) -> str:
    if isinstance(cwd, str) and cwd.startswith("/") and "\0" not in cwd:
        return os.path.normpath(cwd)
    try:
        return os.path.abspath(cwd if isinstance(cwd, str) and cwd and "\0" not in cwd else ".")
    except Exception:
        return "/"


# --------------------------------------------------------------------------------------------
# Scanning: walk simple commands, follow cd, and ask each command what it writes
# --------------------------------------------------------------------------------------------

_RESERVED = frozenset({"!", "{", "}", "if", "then", "else", "elif", "fi", "do", "done", "while", "until"})
_STOPWORDS = frozenset({"for", "select", "case", "esac", "in", "function", "[[", "]]", "coproc"})
_IGNORED_TARGETS = frozenset({"/dev/null", "/dev/stdout", "/dev/stderr", "/dev/stdin", "/dev/tty", "/dev/zero"})
_WRITE_REDIRS = frozenset({">", ">>", ">|", "&>", "&>>", "<>"})
_SCRIPT_SUFFIXES = (".sh", ".bash", ".zsh", ".py", ".js", ".mjs", ".cjs", ".ts", ".rb", ".pl", ".php", ".lua")
_PYTHON_RE = re.compile(r"(python|pypy)[0-9.]*(-dbg|m|w)?")

_HANDLERS = {**COMMAND_HANDLERS, **TOOL_HANDLERS}


class Scan:
    def __init__(self, cwd: str) -> None:
        self.cwd = cwd
        self.dirstack: list[str] = []
        self.targets: dict[str, None] = {}
        self.notes: dict[str, None] = {}
        self.uncertain = False
        self.depth = 0

    # -- bookkeeping --------------------------------------------------------------------

    def note(self, text: str) -> None:
        if len(text) > _MAX_NOTE:
            text = text[:_MAX_NOTE - 3] + "..."
        self.notes.setdefault(text, None)

    def flag(self, text: str) -> None:
        self.uncertain = True
        self.note(text)

    def resolve(self, w: Word) -> tuple[str, bool] | None:
        """(absolute path or as-written text, unsure?) for a word in a path position."""
        t = w.text
        if not t or "\0" in t:
            return None
        if w.tilde:
            t = os.path.expanduser(t)
        if w.expand:
            if t.startswith(("$", "`")):
                return t, True
            return (t if t.startswith("/") else self.cwd.rstrip("/") + "/" + t), True
        return os.path.normpath(os.path.join(self.cwd, t)), w.glob

    def target(self, w: Word | None, note: str) -> None:
        if w is None or w.proc:
            return
        r = self.resolve(w)
        if r is None:
            return
        path, unsure = r
        if path in _IGNORED_TARGETS or path.startswith(("/dev/fd/", "/proc/self/fd/")):
            return
        if unsure:
            self.uncertain = True
            note += " (not expanded)"
        self.targets.setdefault(path, None)
        self.note(note)

    def isdir(self, w: Word) -> bool:
        if w.expand or w.glob:
            return False
        r = self.resolve(w)
        try:
            return r is not None and os.path.isdir(r[0])
        except (OSError, ValueError):
            return False

    def exists(self, w: Word) -> bool:
        if w.expand or w.glob:
            return False
        r = self.resolve(w)
        try:
            return r is not None and os.path.lexists(r[0])
        except (OSError, ValueError):
            return False

    # -- structure ----------------------------------------------------------------------

    def run(self, tokens: list) -> None:
        stack: list[tuple[str, list[str]]] = []
        words: list[Word] = []
        redirs: list[Redir] = []
        for tok in tokens:
            if tok.__class__ is str:
                if tok == "(":
                    if words and words[0].text != "case":
                        self.flag(f"function {words[-1].text}() defined: its body is scanned but runs only when called")
                    else:
                        self.simple(words, redirs)
                    words, redirs = [], []
                    stack.append((self.cwd, list(self.dirstack)))
                    continue
                self.simple(words, redirs)
                words, redirs = [], []
                if tok == ")" and stack:
                    self.cwd, self.dirstack = stack.pop()
            elif tok.__class__ is Redir:
                redirs.append(tok)
            else:
                words.append(tok)
        self.simple(words, redirs)

    def sub(self, tokens: list) -> None:
        """Scan a command/process substitution: a subshell, so cd inside it doesn't leak."""
        saved = (self.cwd, list(self.dirstack))
        self.depth += 1
        try:
            self.run(tokens)
        finally:
            self.depth -= 1
            self.cwd, self.dirstack = saved

    def script(self, text: str, what: str) -> None:
        """Scan a command string run by another shell (``bash -c``, ``eval``). Always uncertain."""
        self.flag(f"{what}: inner command scanned, but may differ at run time")
        if self.depth >= _MAX_SCRIPT_DEPTH:
            self.flag(f"{what}: nested too deeply, not analysed")
            return
        lexer = Lexer(text, self.depth + 1)
        try:
            tokens = lexer.lex()
        except ParseError as exc:
            self.flag(f"{what}: could not parse inner command ({exc})")
            return
        for issue in lexer.issues:
            self.flag(issue)
        self.sub(tokens)

    def simple(self, words: list[Word], redirs: list[Redir]) -> None:
        if not words and not redirs:
            return
        k = 0
        while k < len(words):
            w = words[k]
            if not w.quoted and not w.expand and w.text in _RESERVED:
                k += 1
            elif ASSIGN_RE.match(w.text) and not w.text.startswith("="):
                k += 1
            else:
                break
        for w in words:
            for toks in w.subs:
                self.sub(toks)
        for r in redirs:
            for toks in r.target.subs:
                self.sub(toks)
        head = words[k] if k < len(words) else None
        if head is None or head.text != "[[":
            for r in redirs:
                self.redirect(r)
        if head is None or head.arith or (head.text in _STOPWORDS and not head.quoted):
            return
        self.dispatch(words[k:], redirs)

    def redirect(self, r: Redir) -> None:
        op = r.op
        if op == ">&":
            t = r.target.text
            if t.isdigit() or t == "-" or r.target.expand:
                return  # fd duplication such as 2>&1
        elif op not in _WRITE_REDIRS:
            return
        self.target(r.target, f"redirect {op} to {r.target.text}")

    def dispatch(self, args: list[Word], redirs: list[Redir]) -> None:
        saved_cwd = self.cwd
        name = ""
        for _ in range(12):
            w = args[0]
            if w.expand:
                self.flag(f"command name {w.text} is an expansion: not analysed")
                return
            name = w.text.rsplit("/", 1)[-1]
            unwrap = WRAPPERS.get(name)
            if unwrap is None:
                break
            rest = unwrap(self, name, args[1:])
            if not rest:
                self.cwd = saved_cwd
                return
            args = rest
        else:
            self.flag("too many command prefixes: not analysed")
            return
        handler = _HANDLERS.get(name)
        if handler is None:
            if _PYTHON_RE.fullmatch(name):
                handler = handle_python
            elif name in INTERPRETERS:
                handler = handle_interpreter
        if handler is not None:
            handler(self, name, args[1:], redirs)
        elif args[0].text.startswith(("./", "../")) or (
                "/" in args[0].text and name.endswith(_SCRIPT_SUFFIXES)):
            self.flag(f"runs script {args[0].text}: writes not parsed")
        if name not in ("cd", "pushd", "popd"):
            self.cwd = saved_cwd
