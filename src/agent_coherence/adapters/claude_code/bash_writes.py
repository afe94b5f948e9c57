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
"""

from __future__ import annotations

import os
import re

__all__ = ["BashWriteScan", "scan_bash_command"]

MAX_COMMAND_CHARS = 100_000
_MAX_NEST = 12  # nested $(...), backticks, bash -c strings
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
    lexer = _Lexer(command, 0)
    try:
        tokens = lexer.lex()
    except _ParseError as exc:
        return BashWriteScan((), True, (f"could not parse: {exc}"[:_MAX_NOTE],))
    scan = _Scan(base)
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
# Lexing: bash words, operators, redirections, here-documents, substitutions
# --------------------------------------------------------------------------------------------


class _ParseError(Exception):
    pass


class _Word:
    """One shell word. ``text`` has quotes removed; expansions are kept as written."""

    __slots__ = ("text", "expand", "glob", "tilde", "quoted", "subs", "proc", "arith")

    def __init__(self, text: str = "") -> None:
        self.text = text
        self.expand = False  # contains $VAR, ${...}, $(...), `...`, $((...))
        self.glob = False  # unquoted * ? [...] or brace expansion
        self.tilde = False  # starts with an unquoted ~
        self.quoted = False
        self.subs: list[list] = []  # token lists of command/process substitutions
        self.proc = False  # the word is a process substitution <(...) / >(...)
        self.arith = False  # (( ... )) arithmetic command


class _Redir:
    __slots__ = ("fd", "op", "target", "body")

    def __init__(self, fd: str | None, op: str, target: _Word) -> None:
        self.fd = fd
        self.op = op
        self.target = target
        self.body: str | None = None  # here-document body


_META = frozenset(" \t\n;&|()<>")
_CONTROL_OPS = (";;&", "&&", "||", ";;", ";&", "|&", "|", "&", ";")
_REDIR_OPS = ("&>>", "&>", "<<<", "<<-", "<<", "<>", "<&", ">>", ">|", ">&", "<", ">")
_ANSI_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "a": "\a", "b": "\b", "e": "\x1b", "E": "\x1b",
                 "f": "\f", "v": "\v", "\\": "\\", "'": "'", '"': '"', "?": "?"}
_ASSIGN_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\[[^\]]*\])?\+?=")
_FD_VAR_RE = re.compile(r"\{[A-Za-z_][A-Za-z0-9_]*\}")


class _Lexer:
    def __init__(self, src: str, nest: int) -> None:
        self.s = src
        self.n = len(src)
        self.i = 0
        self.nest = nest
        self.heredocs: list[tuple[_Redir, str, bool, bool]] = []
        self.issues: list[str] = []
        self.not_arith_until = -1  # `((` before this index already turned out to be subshells

    # -- the token loop -------------------------------------------------------------------

    def lex(self, until_paren: bool = False) -> list:
        s, n = self.s, self.n
        toks: list = []
        depth = 0
        cases = 0  # open `case ... esac`: a `)` there ends a pattern
        while self.i < n:
            c = s[self.i]
            if c == " " or c == "\t" or c == "\r":
                self.i += 1
            elif c == "\\" and s.startswith("\n", self.i + 1):
                self.i += 2
            elif c == "#":
                j = s.find("\n", self.i)
                self.i = n if j < 0 else j
            elif c == "\n":
                self.i += 1
                toks.append("\n")
                self._read_heredocs()
            elif c == ")":
                self.i += 1
                if depth == 0 and cases > 0:
                    toks.append(";")
                elif depth == 0:
                    if until_paren:
                        return toks
                    self.issues.append("unmatched ')'")
                    toks.append(";")
                else:
                    depth -= 1
                    toks.append(")")
            elif c == "(":
                if s.startswith("((", self.i) and self._arith_command(toks):
                    continue
                depth += 1
                self.i += 1
                toks.append("(")
            elif c in "<>":
                if s.startswith("(", self.i + 1):
                    toks.append(self._read_word())
                else:
                    toks.append(self._read_redirect(None))
            elif c == "&" and s.startswith(">", self.i + 1):
                toks.append(self._read_redirect(None))
            elif c in ";&|":
                for op in _CONTROL_OPS:
                    if s.startswith(op, self.i):
                        break
                self.i += len(op)
                toks.append(op)
            else:
                w = self._read_word()
                if (self.i < n and s[self.i] in "<>" and not s.startswith("(", self.i + 1)
                        and not w.quoted and not w.expand
                        and (w.text.isdigit() or _FD_VAR_RE.fullmatch(w.text))):
                    toks.append(self._read_redirect(w.text))
                else:
                    if not w.quoted and w.text in ("case", "esac"):
                        cases = cases + 1 if w.text == "case" else max(0, cases - 1)
                    toks.append(w)
        if until_paren:
            raise _ParseError("unterminated $( or <(")
        if depth:
            raise _ParseError("unclosed '('")
        return toks

    def _arith_command(self, toks: list) -> bool:
        """``(( expr ))``: one opaque word. Returns False when it looks like nested subshells."""
        if self.i < self.not_arith_until:
            return False
        end = self._skip_balanced(self.i)
        inner = self.s[self.i + 2:end - 2]
        if any(x in inner for x in (";", "\n", "&&", "||", "|")) or not self.s.startswith("))", end - 2):
            self.not_arith_until = end
            return False
        w = _Word(self.s[self.i:end])
        w.arith = True
        toks.append(w)
        self.i = end
        return True

    # -- redirections and here-documents -------------------------------------------------

    def _read_redirect(self, fd: str | None) -> _Redir:
        s = self.s
        for op in _REDIR_OPS:
            if s.startswith(op, self.i):
                break
        self.i += len(op)
        while self.i < self.n and s[self.i] in " \t":
            self.i += 1
        if self.i >= self.n or s[self.i] in "\n;&|()" or (
                s[self.i] in "<>" and not s.startswith("(", self.i + 1)):
            raise _ParseError(f"redirection {op} without a target")
        target = self._read_word()
        r = _Redir(fd, op, target)
        if op in ("<<", "<<-"):
            self.heredocs.append((r, target.text, op == "<<-", target.quoted))
        return r

    def _read_heredocs(self) -> None:
        pending, self.heredocs = self.heredocs, []
        s, n = self.s, self.n
        for redir, delim, strip_tabs, quoted in pending:
            start = self.i
            body_end = -1
            while self.i < n:
                line_start = self.i
                j = s.find("\n", line_start)
                line_end = n if j < 0 else j
                line = s[line_start:line_end]
                check = line.lstrip("\t") if strip_tabs else line
                if check == delim:
                    body_end = line_start
                    self.i = n if j < 0 else j + 1
                    break
                if (self.nest and delim and check.startswith(delim)
                        and check[len(delim):].lstrip(" \t").startswith(")")):
                    # `EOF)` closing a $( ... ) on the delimiter line
                    body_end = line_start
                    self.i = line_start + (len(line) - len(check)) + len(delim)
                    break
                self.i = n if j < 0 else j + 1
            if body_end < 0:
                body_end = n  # bash runs an unterminated here-doc up to the end of input
            redir.body = s[start:body_end]
            if not quoted and ("$(" in redir.body or "`" in redir.body):
                self.issues.append("here-document body runs command substitution: not analysed")

    # -- words -----------------------------------------------------------------------------

    def _read_word(self) -> _Word:
        s, n = self.s, self.n
        start = self.i
        w = _Word()
        if s[start] in "<>" and s.startswith("(", start + 1):
            self.i = start + 2
            w.subs.append(self._nested())
            w.proc = w.expand = True
            w.text = s[start:self.i]
            return w
        parts: list[str] = []
        bracket = False
        brace = 0  # 1: unquoted `{` seen, 2: and then a `,` or `..`
        while self.i < n:
            c = s[self.i]
            if c in _META:
                if c == "(" and self._word_paren(parts, w):
                    continue
                break
            if c == "'":
                j = s.find("'", self.i + 1)
                if j < 0:
                    raise _ParseError("unterminated single quote")
                parts.append(s[self.i + 1:j])
                w.quoted = True
                self.i = j + 1
            elif c == '"':
                self.i += 1
                self._dquote(parts, w)
            elif c == "\\":
                if self.i + 1 >= n:
                    parts.append("\\")
                    self.i += 1
                elif s[self.i + 1] == "\n":
                    self.i += 2
                else:
                    parts.append(s[self.i + 1])
                    w.quoted = True
                    self.i += 2
            elif c == "$":
                self._dollar(parts, w, False)
            elif c == "`":
                self._backtick(parts, w)
            else:
                if c == "*" or c == "?":
                    w.glob = True
                elif c == "[":
                    bracket = True
                elif c == "]" and bracket:
                    w.glob = True
                elif c == "~" and self.i == start:
                    w.tilde = True
                elif c == "{":
                    brace = max(brace, 1)
                elif brace and (c == "," or (c == "." and s.startswith("..", self.i))):
                    brace = 2
                elif c == "}" and brace == 2:
                    w.glob = True  # brace expansion such as {a,b} or {1..3}
                parts.append(c)
                self.i += 1
        w.text = "".join(parts)
        return w

    def _word_paren(self, parts: list[str], w: _Word) -> bool:
        """``(`` inside a word: array assignment ``a=(...)`` or extglob ``@(...)``."""
        so_far = "".join(parts)
        if so_far.endswith("=") and _ASSIGN_RE.fullmatch(so_far):
            pass
        elif so_far and so_far[-1] in "?*+@!":
            w.glob = True
        else:
            return False
        end = self._skip_balanced(self.i)
        parts.append(self.s[self.i:end])
        self.i = end
        return True

    def _dquote(self, parts: list[str], w: _Word) -> None:
        s, n = self.s, self.n
        w.quoted = True
        while self.i < n:
            c = s[self.i]
            if c == '"':
                self.i += 1
                return
            if c == "\\" and self.i + 1 < n:
                nx = s[self.i + 1]
                if nx in '$`"\\':
                    parts.append(nx)
                    self.i += 2
                    continue
                if nx == "\n":
                    self.i += 2
                    continue
                parts.append("\\")
                self.i += 1
            elif c == "$":
                self._dollar(parts, w, True)
            elif c == "`":
                self._backtick(parts, w)
            else:
                parts.append(c)
                self.i += 1
        raise _ParseError("unterminated double quote")

    def _dollar(self, parts: list[str], w: _Word, in_dquote: bool) -> None:
        s, n = self.s, self.n
        start = self.i
        nx = s[start + 1] if start + 1 < n else ""
        if nx == "(":
            if s.startswith("((", start + 1):
                self.i = self._skip_balanced(start + 1)
            else:
                self.i = start + 2
                w.subs.append(self._nested())
            w.expand = True
            parts.append(s[start:self.i])
        elif nx == "{":
            end = self._skip_braces(start + 1)
            inner = s[start + 2:end - 1]
            if "$(" in inner or "`" in inner:
                self.issues.append("command substitution inside ${...}: not analysed")
            w.expand = True
            parts.append(s[start:end])
            self.i = end
        elif nx == "'" and not in_dquote:
            j = start + 2
            buf: list[str] = []
            while j < n and s[j] != "'":
                if s[j] == "\\" and j + 1 < n:
                    buf.append(_ANSI_ESCAPES.get(s[j + 1], "\\" + s[j + 1]))
                    j += 2
                else:
                    buf.append(s[j])
                    j += 1
            if j >= n:
                raise _ParseError("unterminated $'...' quote")
            parts.extend(buf)
            w.quoted = True
            self.i = j + 1
        elif nx == '"' and not in_dquote:
            self.i = start + 2
            self._dquote(parts, w)
        elif nx and (nx.isalpha() or nx == "_") and nx.isascii():
            j = start + 1
            while j < n and (s[j].isalnum() or s[j] == "_") and s[j].isascii():
                j += 1
            w.expand = True
            parts.append(s[start:j])
            self.i = j
        elif nx and (nx.isdigit() or nx in "@*#?$!-"):
            w.expand = True
            parts.append(s[start:start + 2])
            self.i = start + 2
        else:
            parts.append("$")
            self.i = start + 1

    def _backtick(self, parts: list[str], w: _Word) -> None:
        s, n = self.s, self.n
        start = self.i
        j = start + 1
        buf: list[str] = []
        while j < n:
            c = s[j]
            if c == "\\" and j + 1 < n:
                nx = s[j + 1]
                buf.append(nx if nx in "$`\\" else c + nx)
                j += 2
                continue
            if c == "`":
                break
            buf.append(c)
            j += 1
        else:
            raise _ParseError("unterminated backtick")
        self.i = j + 1
        if self.nest >= _MAX_NEST:
            raise _ParseError("substitutions nested too deeply")
        inner = _Lexer("".join(buf), self.nest + 1)
        w.subs.append(inner.lex())
        self.issues.extend(inner.issues)
        w.expand = True
        parts.append(s[start:self.i])

    def _nested(self) -> list:
        if self.nest >= _MAX_NEST:
            raise _ParseError("substitutions nested too deeply")
        self.nest += 1
        try:
            return self.lex(until_paren=True)
        finally:
            self.nest -= 1

    def _skip_balanced(self, i: int) -> int:
        """Index just past the ``)`` matching the ``(`` at ``i`` (quotes respected)."""
        s, n = self.s, self.n
        depth = 0
        j = i
        while j < n:
            c = s[j]
            if c == "\\":
                j += 2
                continue
            if c == "'":
                k = s.find("'", j + 1)
                if k < 0:
                    raise _ParseError("unterminated single quote")
                j = k + 1
                continue
            if c == '"':
                j = self._skip_dquote(j)
                continue
            if c == "(":
                depth += 1
            elif c == ")":
                depth -= 1
                if depth == 0:
                    return j + 1
            j += 1
        raise _ParseError("unbalanced parentheses")

    def _skip_braces(self, i: int) -> int:
        s, n = self.s, self.n
        depth = 0
        j = i
        while j < n:
            c = s[j]
            if c == "\\":
                j += 2
                continue
            if c == "'":
                k = s.find("'", j + 1)
                if k < 0:
                    raise _ParseError("unterminated single quote")
                j = k + 1
                continue
            if c == '"':
                j = self._skip_dquote(j)
                continue
            if c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
                if depth == 0:
                    return j + 1
            j += 1
        raise _ParseError("unterminated ${")

    def _skip_dquote(self, j: int) -> int:
        s, n = self.s, self.n
        k = j + 1
        while k < n and s[k] != '"':
            k += 2 if s[k] == "\\" else 1
        if k >= n:
            raise _ParseError("unterminated double quote")
        return k + 1


# --------------------------------------------------------------------------------------------
# Scanning: walk simple commands, follow cd, and ask each command what it writes
# --------------------------------------------------------------------------------------------

_RESERVED = frozenset({"!", "{", "}", "if", "then", "else", "elif", "fi", "do", "done", "while", "until"})
_STOPWORDS = frozenset({"for", "select", "case", "esac", "in", "function", "[[", "]]", "coproc"})
_IGNORED_TARGETS = frozenset({"/dev/null", "/dev/stdout", "/dev/stderr", "/dev/stdin", "/dev/tty", "/dev/zero"})
_WRITE_REDIRS = frozenset({">", ">>", ">|", "&>", "&>>", "<>"})
_SCRIPT_SUFFIXES = (".sh", ".bash", ".zsh", ".py", ".js", ".mjs", ".cjs", ".ts", ".rb", ".pl", ".php", ".lua")
_PYTHON_RE = re.compile(r"(python|pypy)[0-9.]*(-dbg|m|w)?")
_SAFE_PY_MODULES = frozenset({
    "pytest", "unittest", "doctest", "mypy", "pyflakes", "flake8", "pylint", "pydoc", "timeit",
    "http.server", "platform", "sysconfig", "site", "this", "tabnanny", "pyclbr", "cProfile", "profile",
})
_VERSION_FLAGS = frozenset({"--version", "-V", "-v", "-h", "--help", "-VV", "version", "help"})


def _derive(w: _Word, text: str) -> _Word:
    """A word made from part of another (``--opt=VALUE``, ``of=FILE``)."""
    d = _Word(text)
    d.expand = w.expand and ("$" in text or "`" in text)
    d.glob = w.glob and any(c in text for c in "*?[{")
    d.quoted = w.quoted
    return d


def _join_word(directory: _Word, name: str) -> _Word:
    d = _Word(directory.text.rstrip("/") + "/" + name if directory.text.rstrip("/") else "/" + name)
    d.expand = directory.expand or "$" in name or "`" in name
    d.glob = directory.glob or any(c in name for c in "*?[")
    d.tilde = directory.tilde
    return d


def _basename(w: _Word) -> str:
    return w.text.rstrip("/").rsplit("/", 1)[-1] or w.text


def _getopt(args: list[_Word], short_arg: str = "", long_arg=frozenset(), *, stop_at_operand: bool = False):
    """GNU-style option split. Returns (opts, operands, n_before_dashdash).

    ``opts`` is a list of (name, value-word-or-None); ``n_before_dashdash`` is the number of operands
    that came before a ``--`` (None when there was no ``--``).
    """
    opts: list[tuple[str, _Word | None]] = []
    ops: list[_Word] = []
    before = None
    k = 0
    while k < len(args):
        w = args[k]
        t = w.text
        k += 1
        if t == "--":
            before = len(ops)
            ops.extend(args[k:])
            break
        if t in long_arg:  # also single-dash long options such as -local
            opts.append((t, args[k] if k < len(args) else None))
            k += 1
        elif t.startswith("--"):
            name, eq, _ = t.partition("=")
            if eq:
                opts.append((name, _derive(w, t[len(name) + 1:])))
            else:
                opts.append((name, None))
        elif t.startswith("-") and len(t) > 1:
            j = 1
            while j < len(t):
                ch = t[j]
                if ch in short_arg:
                    if j + 1 < len(t):
                        opts.append(("-" + ch, _derive(w, t[j + 1:])))
                    elif k < len(args):
                        opts.append(("-" + ch, args[k]))
                        k += 1
                    else:
                        opts.append(("-" + ch, None))
                    break
                opts.append(("-" + ch, None))
                j += 1
        else:
            ops.append(w)
            if stop_at_operand:
                ops.extend(args[k:])
                break
    return opts, ops, before


def _opt_names(opts) -> set[str]:
    return {name for name, _ in opts}


def _opt_value(opts, *names: str) -> _Word | None:
    found = None
    for name, value in opts:
        if name in names and value is not None:
            found = value
    return found


class _Scan:
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

    def resolve(self, w: _Word) -> tuple[str, bool] | None:
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

    def target(self, w: _Word | None, note: str) -> None:
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

    def isdir(self, w: _Word) -> bool:
        if w.expand or w.glob:
            return False
        r = self.resolve(w)
        try:
            return r is not None and os.path.isdir(r[0])
        except (OSError, ValueError):
            return False

    def exists(self, w: _Word) -> bool:
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
        words: list[_Word] = []
        redirs: list[_Redir] = []
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
            elif tok.__class__ is _Redir:
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
        lexer = _Lexer(text, self.depth + 1)
        try:
            tokens = lexer.lex()
        except _ParseError as exc:
            self.flag(f"{what}: could not parse inner command ({exc})")
            return
        for issue in lexer.issues:
            self.flag(issue)
        self.sub(tokens)

    def simple(self, words: list[_Word], redirs: list[_Redir]) -> None:
        if not words and not redirs:
            return
        k = 0
        while k < len(words):
            w = words[k]
            if not w.quoted and not w.expand and w.text in _RESERVED:
                k += 1
            elif _ASSIGN_RE.match(w.text) and not w.text.startswith("="):
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

    def redirect(self, r: _Redir) -> None:
        op = r.op
        if op == ">&":
            t = r.target.text
            if t.isdigit() or t == "-" or r.target.expand:
                return  # fd duplication such as 2>&1
        elif op not in _WRITE_REDIRS:
            return
        self.target(r.target, f"redirect {op} to {r.target.text}")

    def dispatch(self, args: list[_Word], redirs: list[_Redir]) -> None:
        saved_cwd = self.cwd
        name = ""
        for _ in range(12):
            w = args[0]
            if w.expand:
                self.flag(f"command name {w.text} is an expansion: not analysed")
                return
            name = w.text.rsplit("/", 1)[-1]
            unwrap = _WRAPPERS.get(name)
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
                handler = _h_python
            elif name in _INTERPRETERS:
                handler = _h_interpreter
        if handler is not None:
            handler(self, name, args[1:], redirs)
        elif args[0].text.startswith(("./", "../")) or (
                "/" in args[0].text and name.endswith(_SCRIPT_SUFFIXES)):
            self.flag(f"runs script {args[0].text}: writes not parsed")
        if name not in ("cd", "pushd", "popd"):
            self.cwd = saved_cwd


# --------------------------------------------------------------------------------------------
# Prefix commands (sudo, env, time, ...): return the wrapped command's words, or None
# --------------------------------------------------------------------------------------------


def _w_simple(short_arg: str, long_arg=frozenset()):
    def unwrap(scan: _Scan, name: str, args: list[_Word]):
        _, ops, _ = _getopt(args, short_arg, long_arg, stop_at_operand=True)
        return ops
    return unwrap


def _w_env(scan: _Scan, name: str, args: list[_Word]):
    k = 0
    while k < len(args):
        t = args[k].text
        if t in ("-u", "--unset"):
            k += 2
        elif t.startswith("--chdir="):
            _chdir(scan, _derive(args[k], t[len("--chdir="):]), "env -C")
            k += 1
        elif t in ("-C", "--chdir") and k + 1 < len(args):
            _chdir(scan, args[k + 1], "env -C")
            k += 2
        elif t in ("-S", "--split-string") or t.startswith("--split-string="):
            if "=" in t:
                text, rest = t.partition("=")[2], args[k + 1:]
            else:
                text, rest = (args[k + 1].text if k + 1 < len(args) else ""), args[k + 2:]
            scan.script(" ".join([text] + [a.text for a in rest]), "env -S")
            return None
        elif t == "--":
            k += 1
            break
        elif t.startswith("-") and len(t) > 1:
            k += 1
        elif _ASSIGN_RE.match(t):
            k += 1
        else:
            break
    return args[k:]


def _w_time(scan: _Scan, name: str, args: list[_Word]):
    opts, ops, _ = _getopt(args, "of", frozenset({"--output", "--format"}), stop_at_operand=True)
    out = _opt_value(opts, "-o", "--output")
    if out is not None:
        scan.target(out, f"time -o writes {out.text}")
    return ops


def _w_nice(scan: _Scan, name: str, args: list[_Word]):
    if args and re.fullmatch(r"-[0-9]+", args[0].text):
        args = args[1:]
    _, ops, _ = _getopt(args, "n", frozenset({"--adjustment"}), stop_at_operand=True)
    return ops


def _w_timeout(scan: _Scan, name: str, args: list[_Word]):
    _, ops, _ = _getopt(args, "sk", frozenset({"--signal", "--kill-after"}), stop_at_operand=True)
    return ops[1:]


def _w_command(scan: _Scan, name: str, args: list[_Word]):
    opts, ops, _ = _getopt(args, "", stop_at_operand=True)
    if _opt_names(opts) & {"-v", "-V"}:
        return None
    return ops


def _w_sudo(scan: _Scan, name: str, args: list[_Word]):
    opts, ops, _ = _getopt(args, "ugCDprtUTh", frozenset({"--user", "--group", "--chdir", "--prompt", "--role",
                                                          "--type", "--other-user", "--host", "--close-from",
                                                          "--command-timeout"}), stop_at_operand=True)
    names = _opt_names(opts)
    if "-e" in names or "--edit" in names:
        for w in ops:
            scan.target(w, f"sudoedit edits {w.text}")
        scan.flag("sudo -e: editor writes not parsed")
        return None
    if not ops and names & {"-s", "-i", "--shell", "--login"}:
        scan.flag("sudo opens a shell reading stdin: writes not parsed")
        return None
    return ops


def _w_flock(scan: _Scan, name: str, args: list[_Word]):
    opts, ops, _ = _getopt(args, "wEc", frozenset({"--timeout", "--conflict-exit-code", "--command"}),
                           stop_at_operand=True)
    cmd = _opt_value(opts, "-c", "--command")
    if cmd is not None:
        scan.script(cmd.text, "flock -c")
        return None
    return ops[1:]


def _w_npx(scan: _Scan, name: str, args: list[_Word]):
    opts, ops, _ = _getopt(args, "pc", frozenset({"--package", "--call"}), stop_at_operand=True)
    cmd = _opt_value(opts, "-c", "--call")
    if cmd is not None:
        scan.script(cmd.text, f"{name} -c")
        return None
    return ops


_UV_RUN_ARGS = frozenset({"--with", "--with-editable", "--with-requirements", "--python", "-p", "--project",
                          "--directory", "--package", "--extra", "--group", "--only-group", "--no-group",
                          "--env-file", "--index", "--default-index", "--index-url", "--extra-index-url",
                          "-i", "--find-links", "-f", "--from", "--spec", "--environment", "-e"})


def _w_runner(scan: _Scan, name: str, args: list[_Word]):
    """``uv run``, ``poetry run``, ``pipx run``, ``uvx`` ... : the command after the options."""
    if name != "uvx":
        if not args or args[0].text != "run":
            return None
        args = args[1:]
    _, ops, _ = _getopt(args, "", _UV_RUN_ARGS, stop_at_operand=True)
    return ops


_WRAPPERS = {
    "sudo": _w_sudo, "doas": _w_simple("uC"), "env": _w_env, "time": _w_time,
    "nohup": _w_simple(""), "nice": _w_nice, "ionice": _w_simple("cnpPu"), "timeout": _w_timeout,
    "stdbuf": _w_simple("ioe"), "command": _w_command, "builtin": _w_simple(""), "exec": _w_simple("a"),
    "chronic": _w_simple(""), "unbuffer": _w_simple(""), "flock": _w_flock, "npx": _w_npx, "bunx": _w_npx,
    "pnpx": _w_npx, "uv": _w_runner, "poetry": _w_runner, "pdm": _w_runner, "pipenv": _w_runner,
    "hatch": _w_runner, "rye": _w_runner, "pipx": _w_runner, "uvx": _w_runner,
}


# --------------------------------------------------------------------------------------------
# Command handlers: handler(scan, name, args, redirs)
# --------------------------------------------------------------------------------------------


def _chdir(scan: _Scan, w: _Word | None, what: str) -> None:
    if w is None:
        scan.cwd = os.path.expanduser("~")
        return
    if w.text == "-":
        scan.flag(f"{what} -: later relative paths are uncertain")
        return
    r = scan.resolve(w)
    if r is None:
        return
    path, unsure = r
    if unsure:
        scan.flag(f"{what} {w.text}: directory not expanded, later relative paths are uncertain")
        return
    scan.cwd = path


def _h_cd(scan: _Scan, name: str, args: list[_Word], redirs) -> None:
    _, ops, _ = _getopt(args, "")
    if name == "pushd":
        if ops and ops[0].text[:1] in "+-" and ops[0].text[1:].isdigit():
            scan.flag("pushd +N: later relative paths are uncertain")
            return
        scan.dirstack.append(scan.cwd)
    elif name == "popd":
        if scan.dirstack:
            scan.cwd = scan.dirstack.pop()
        else:
            scan.flag("popd: directory unknown, later relative paths are uncertain")
        return
    _chdir(scan, ops[0] if ops else None, name)


def _h_remove(scan: _Scan, name: str, args: list[_Word], redirs) -> None:
    _, ops, _ = _getopt(args, "ns" if name == "shred" else "")
    verb = {"rm": "deletes", "unlink": "deletes", "rmdir": "removes", "shred": "overwrites"}[name]
    for w in ops:
        scan.target(w, f"{name} {verb} {w.text}")


def _h_operands(verb: str, short_arg: str = "", long_arg=frozenset()):
    def handler(scan: _Scan, name: str, args: list[_Word], redirs) -> None:
        opts, ops, _ = _getopt(args, short_arg, long_arg)
        v = "appends to" if name == "tee" and _opt_names(opts) & {"-a", "--append"} else verb
        for w in ops:
            if w.text != "-":
                scan.target(w, f"{name} {v} {w.text}")
    return handler


def _copy_like(scan: _Scan, name: str, args: list[_Word], *, move: bool, short_arg: str = "tS",
               long_arg=frozenset({"--target-directory", "--suffix"}), single_operand_here: bool = False) -> None:
    opts, ops, _ = _getopt(args, short_arg, long_arg)
    names = _opt_names(opts)
    tdir = _opt_value(opts, "-t", "--target-directory")
    if tdir is not None:
        srcs, dests = ops, [_join_word(tdir, _basename(s)) for s in ops]
    elif len(ops) >= 2 or (single_operand_here and ops):
        if len(ops) == 1:  # ln TARGET: link created in the current directory
            srcs, dests = ops, [_Word(_basename(ops[0]))]
        else:
            srcs, dest = ops[:-1], ops[-1]
            into_dir = not (names & {"-T", "--no-target-directory"}) and (
                len(srcs) > 1 or dest.text.endswith("/") or scan.isdir(dest))
            dests = [_join_word(dest, _basename(s)) for s in srcs] if into_dir else [dest]
    else:
        return
    if move:
        for s in srcs:
            scan.target(s, f"{name} moves {s.text} away")
    for d in dests:
        scan.target(d, f"{name} writes {d.text}")


def _h_cp(scan: _Scan, name: str, args: list[_Word], redirs) -> None:
    _copy_like(scan, name, args, move=(name == "mv"))


def _h_ln(scan: _Scan, name: str, args: list[_Word], redirs) -> None:
    _copy_like(scan, name, args, move=False, single_operand_here=True)


def _h_install(scan: _Scan, name: str, args: list[_Word], redirs) -> None:
    long_arg = frozenset({"--target-directory", "--suffix", "--mode", "--owner", "--group", "--strip-program"})
    opts, _, _ = _getopt(args, "tSmog", long_arg)
    if _opt_names(opts) & {"-d", "--directory"}:
        return  # creates directories only
    _copy_like(scan, name, args, move=False, short_arg="tSmog", long_arg=long_arg)


def _h_dd(scan: _Scan, name: str, args: list[_Word], redirs) -> None:
    for w in args:
        if w.text.startswith("of="):
            out = _derive(w, w.text[3:])
            scan.target(out, f"dd writes {out.text}")


def _h_sort(scan: _Scan, name: str, args: list[_Word], redirs) -> None:
    opts, _, _ = _getopt(args, "kotST", frozenset({"--key", "--output", "--field-separator", "--buffer-size",
                                                   "--temporary-directory", "--files0-from", "--compress-program",
                                                   "--parallel", "--random-source", "--batch-size"}))
    out = _opt_value(opts, "-o", "--output")
    if out is not None:
        scan.target(out, f"sort -o writes {out.text}")


def _h_uniq(scan: _Scan, name: str, args: list[_Word], redirs) -> None:
    _, ops, _ = _getopt(args, "fsw", frozenset({"--skip-fields", "--skip-chars", "--check-chars"}))
    if len(ops) >= 2 and ops[1].text != "-":
        scan.target(ops[1], f"uniq writes {ops[1].text}")


def _h_split(scan: _Scan, name: str, args: list[_Word], redirs) -> None:
    scan.flag(f"{name} writes pieces named after a prefix: not parsed")


_SED_W_RE = re.compile(r"(?:^|[;\n{}/]|[0-9$])\s*[wW]\s+\S")


def _h_sed(scan: _Scan, name: str, args: list[_Word], redirs) -> None:
    inplace = False
    suffix = ""
    scripts: list[str] = []
    script_given = False
    ops: list[_Word] = []
    sandbox = False
    k = 0
    while k < len(args):
        w = args[k]
        t = w.text
        k += 1
        if t == "--":
            ops.extend(args[k:])
            break
        if t.startswith("--"):
            opt, eq, val = t.partition("=")
            if opt == "--in-place":
                inplace, suffix = True, val
            elif opt in ("--expression", "--file"):
                script_given = True
                if not eq and k < len(args):
                    val = args[k].text
                    k += 1
                if opt == "--file":
                    scan.flag(f"sed -f {val}: script file not read")
                else:
                    scripts.append(val)
            elif opt == "--line-length" and not eq:
                k += 1
            elif opt == "--sandbox":
                sandbox = True
        elif t.startswith("-") and len(t) > 1:
            j = 1
            while j < len(t):
                ch = t[j]
                if ch == "i":
                    inplace, suffix = True, t[j + 1:]
                    if not suffix and k < len(args) and args[k].text == "" and args[k].quoted:
                        k += 1  # BSD form: sed -i '' ...
                    break
                if ch in "efl":
                    val = t[j + 1:]
                    if not val and k < len(args):
                        val = args[k].text
                        k += 1
                    if ch == "e":
                        script_given = True
                        scripts.append(val)
                    elif ch == "f":
                        script_given = True
                        scan.flag(f"sed -f {val}: script file not read")
                    break
                j += 1
        else:
            ops.append(w)
    if not script_given and ops:
        scripts.append(ops[0].text)
        ops = ops[1:]
    if not sandbox and any(_SED_W_RE.search(s) for s in scripts):
        scan.flag("sed script may write files (w command)")
    if not inplace:
        return
    for w in ops:
        if w.text == "-":
            continue
        scan.target(w, f"sed -i edits {w.text}")
        if suffix:
            _backup_target(scan, w, suffix, "sed -i")


def _backup_target(scan: _Scan, w: _Word, suffix: str, what: str) -> None:
    if "*" in suffix:
        base = _basename(w)
        name = suffix.replace("*", base)
        head = w.text.rstrip("/").rpartition("/")[0]
        text = name if name.startswith("/") or not head else head + "/" + name
    else:
        text = w.text + suffix
    b = _derive(w, text)
    b.expand, b.glob, b.tilde = w.expand, w.glob, w.tilde
    scan.target(b, f"{what} backup {text}")


_PERL_RISKY_RE = re.compile(
    r"\b(open|sysopen|system|exec|fork|unlink|rename|truncate|mkdir|rmdir|link|symlink|utime|chmod|chown|"
    r"eval|do|require|use|qx|dbmopen|tie|copy|move|syscall)\b|`|\$\^I")


def _h_perl(scan: _Scan, name: str, args: list[_Word], redirs) -> None:
    inplace = False
    suffix = ""
    code: list[str] = []
    modules = False
    ops: list[_Word] = []
    k = 0
    while k < len(args):
        w = args[k]
        t = w.text
        k += 1
        if t == "--":
            ops.extend(args[k:])
            break
        if t.startswith("-") and len(t) > 1 and not t.startswith("--"):
            j = 1
            while j < len(t):
                ch = t[j]
                if ch == "i":
                    inplace, suffix = True, t[j + 1:]
                    break
                if ch in "eE":
                    val = t[j + 1:]
                    if not val and k < len(args):
                        val = args[k].text
                        k += 1
                    code.append(val)
                    break
                if ch in "IMm":
                    modules = modules or ch in "Mm"
                    if j + 1 == len(t):
                        k += 1
                    break
                if ch in "lF0CxdD":
                    break
                j += 1
        elif t.startswith("--"):
            continue
        else:
            ops.append(w)
            if not code:  # the script file; the rest are its arguments
                ops.extend(args[k:])
                break
    if not code:
        script = ops[0].text if ops else "stdin"
        scan.flag(f"perl runs {script}: writes not parsed")
        return
    if modules or any(_PERL_RISKY_RE.search(c) for c in code):
        scan.flag("perl -e code may write files: not parsed")
    if inplace:
        for w in ops:
            scan.target(w, f"perl -i edits {w.text}")
            if suffix:
                _backup_target(scan, w, suffix, "perl -i")


_AWK_RISKY_RE = re.compile(r"\bprintf?\b[^;{}\n]*(?:>|\|)|\bsystem\s*\(|\|\s*getline|\|&")


def _h_awk(scan: _Scan, name: str, args: list[_Word], redirs) -> None:
    opts, ops, _ = _getopt(args, "fvFielE", frozenset({"--file", "--assign", "--field-separator", "--include",
                                                       "--source", "--load", "--exec"}))
    inplace = False
    program_given = False
    for opt, val in opts:
        if opt in ("-i", "--include") and val is not None and val.text in ("inplace", "inplace.awk"):
            inplace = True
        elif opt in ("-f", "--file", "-E", "--exec"):
            program_given = True
            scan.flag(f"{name} -f {val.text if val else ''}: program file not read")
        elif opt in ("-e", "--source"):
            program_given = True
            if val is not None and _AWK_RISKY_RE.search(val.text):
                scan.flag(f"{name} program may write files or run commands: not parsed")
    if not program_given and ops:
        if _AWK_RISKY_RE.search(ops[0].text):
            scan.flag(f"{name} program may write files or run commands: not parsed")
        ops = ops[1:]
    if inplace:
        for w in ops:
            if not _ASSIGN_RE.match(w.text) and w.text != "-":
                scan.target(w, f"{name} -i inplace edits {w.text}")


def _h_python(scan: _Scan, name: str, args: list[_Word], redirs) -> None:
    k = 0
    while k < len(args):
        t = args[k].text
        k += 1
        if t in ("--version", "--help", "-h", "-V", "-VV"):
            return
        if t == "--check-hash-based-pycs":
            k += 1
            continue
        if t.startswith("-") and len(t) > 1 and not t.startswith("--"):
            for j in range(1, len(t)):
                ch = t[j]
                if ch in "cm":
                    val = t[j + 1:] or (args[k].text if k < len(args) else "")
                    if ch == "c":
                        scan.flag(f"{name} -c: writes not parsed")
                    elif val not in _SAFE_PY_MODULES:
                        scan.flag(f"{name} -m {val}: writes not parsed")
                    return
                if ch in "WX":
                    if j + 1 == len(t):
                        k += 1
                    break
            continue
        if t.startswith("--"):
            continue
        if t == "-":
            break
        scan.flag(f"{name} runs {t}: writes not parsed")
        return
    scan.flag(f"{name} reads a program from stdin: writes not parsed")


_INTERPRETERS = frozenset({"node", "nodejs", "deno", "bun", "ruby", "irb", "php", "Rscript", "R", "lua", "luajit",
                           "julia", "tclsh", "wish", "osascript", "pwsh", "powershell", "groovy", "ts-node", "tsx",
                           "jshell", "scala", "kotlin", "elixir", "erl", "escript", "racket", "guile", "sbcl",
                           "swift", "dotnet"})
_EVAL_FLAGS = frozenset({"-e", "--eval", "-c", "-p", "--print", "-r", "-Command", "-command", "-x"})


def _h_interpreter(scan: _Scan, name: str, args: list[_Word], redirs) -> None:
    if args and all(a.text in _VERSION_FLAGS for a in args):
        return
    for a in args:
        if a.text in _EVAL_FLAGS:
            scan.flag(f"{name} {a.text}: writes not parsed")
            return
    ops = [a for a in args if not a.text.startswith("-")]
    if ops:
        scan.flag(f"{name} runs {ops[0].text}: writes not parsed")
    else:
        scan.flag(f"{name} reads a program from stdin: writes not parsed")


def _h_shell(scan: _Scan, name: str, args: list[_Word], redirs) -> None:
    opts, ops, _ = _getopt([a for a in args if not a.text.startswith("+")], "oO",
                           frozenset({"--rcfile", "--init-file"}))
    names = _opt_names(opts)
    if "-c" in names or "--command" in names:
        if not ops:
            scan.flag(f"{name} -c without a command")
        elif ops[0].expand:
            scan.flag(f"{name} -c {ops[0].text}: command not expanded, writes not parsed")
        else:
            scan.script(ops[0].text, f"{name} -c")
        return
    if ops and not (names & {"-s"}):
        scan.flag(f"{name} runs {ops[0].text}: writes not parsed")
        return
    for r in redirs:
        if r.body is not None and not r.target.quoted and ("$" in r.body or "`" in r.body):
            scan.flag(f"{name} reads a here-document with expansions: writes not parsed")
            return
        if r.body is not None:
            scan.script(r.body, f"{name} here-document")
            return
    scan.flag(f"{name} reads commands from stdin: writes not parsed")


def _h_eval(scan: _Scan, name: str, args: list[_Word], redirs) -> None:
    if any(a.expand for a in args):
        scan.flag("eval of expanded text: writes not parsed")
        return
    scan.script(" ".join(a.text for a in args), "eval")


def _h_trap(scan: _Scan, name: str, args: list[_Word], redirs) -> None:
    _, ops, _ = _getopt(args, "")
    if len(ops) >= 2 and ops[0].text not in ("", "-"):
        scan.script(ops[0].text, "trap handler")


def _h_source(scan: _Scan, name: str, args: list[_Word], redirs) -> None:
    scan.flag(f"{name} runs {args[0].text if args else 'a script'}: writes not parsed")


def _h_xargs(scan: _Scan, name: str, args: list[_Word], redirs) -> None:
    _, ops, _ = _getopt(args, "IaEdLnPs", frozenset({"--arg-file", "--delimiter", "--max-args", "--max-procs",
                                                     "--max-chars", "--process-slot-var"}), stop_at_operand=True)
    if ops and ops[0].text != "echo":
        scan.flag(f"{name} runs {ops[0].text} on arguments from stdin: writes not parsed")


def _h_runs_commands(scan: _Scan, name: str, args: list[_Word], redirs) -> None:
    scan.flag(f"{name} runs other commands: writes not parsed")


def _h_find(scan: _Scan, name: str, args: list[_Word], redirs) -> None:
    k = 0
    while k < len(args):
        t = args[k].text
        if t == "-delete":
            roots = [a.text for a in args[:k] if not a.text.startswith(("-", "(", ")", "!"))][:1]
            scan.flag(f"find -delete removes files under {roots[0] if roots else '.'}: not listed")
        elif t in ("-exec", "-execdir", "-ok", "-okdir"):
            cmd = args[k + 1].text if k + 1 < len(args) else ""
            scan.flag(f"find {t} runs {cmd}: writes not parsed")
        elif t in ("-fprint", "-fprint0", "-fls", "-fprintf") and k + 1 < len(args):
            scan.target(args[k + 1], f"find {t} writes {args[k + 1].text}")
            k += 1
        k += 1


def _h_patch(scan: _Scan, name: str, args: list[_Word], redirs) -> None:
    opts, ops, _ = _getopt(args, "pioDdrFVzBYg", frozenset({"--strip", "--input", "--output", "--directory",
                                                             "--reject-file", "--ifdef", "--fuzz",
                                                             "--version-control", "--suffix", "--prefix",
                                                             "--basename-prefix", "--get", "--quoting-style"}))
    names = _opt_names(opts)
    if names & {"--dry-run", "-C", "--check", "--help", "-v", "--version"}:
        return
    saved = scan.cwd
    d = _opt_value(opts, "-d", "--directory")
    if d is not None:
        _chdir(scan, d, "patch -d")
    out = _opt_value(opts, "-o", "--output")
    if out is not None and out.text != "-":
        scan.target(out, f"patch writes {out.text}")
    elif ops:
        scan.target(ops[0], f"patch edits {ops[0].text}")
    else:
        scan.flag("patch edits the files named in the diff: not parsed")
    scan.cwd = saved


def _h_unzip(scan: _Scan, name: str, args: list[_Word], redirs) -> None:
    opts, ops, _ = _getopt(args, "dxP")
    names = _opt_names(opts)
    if names & {"-l", "-t", "-v", "-Z", "-p", "-c", "-z", "-h", "--help"}:
        return
    archive = ops[0].text if ops else "an archive"
    d = _opt_value(opts, "-d")
    scan.flag(f"{name} extracts {archive}{' into ' + d.text if d else ''}: files not known")


def _h_7z(scan: _Scan, name: str, args: list[_Word], redirs) -> None:
    _, ops, _ = _getopt(args, "")
    sub = ops[0].text if ops else ""
    if sub in ("x", "e"):
        scan.flag(f"{name} {sub} extracts {ops[1].text if len(ops) > 1 else 'an archive'}: files not known")
    elif sub in ("a", "u", "d", "rn") and len(ops) > 1:
        scan.target(ops[1], f"{name} {sub} writes {ops[1].text}")


_TAR_ARG_LETTERS = "fCTXbgKNVLFHI"
_TAR_LONG_ARGS = frozenset({"--file", "--directory", "--files-from", "--exclude", "--exclude-from", "--transform",
                            "--xform", "--use-compress-program", "--owner", "--group", "--mode", "--mtime",
                            "--newer", "--after-date", "--label", "--blocking-factor", "--record-size",
                            "--tape-length", "--info-script", "--new-volume-script", "--index-file",
                            "--rmt-command", "--rsh-command", "--volno-file", "--checkpoint-action", "--format",
                            "--listed-incremental", "--suffix", "--strip-components", "--sort", "--warning"})
_TAR_MODES = {"c": "c", "x": "x", "t": "t", "r": "r", "u": "u", "A": "r", "--create": "c", "--extract": "x",
              "--get": "x", "--list": "t", "--append": "r", "--update": "u", "--catenate": "r",
              "--concatenate": "r", "--delete": "r", "--diff": "t", "--compare": "t", "d": "t"}


def _h_tar(scan: _Scan, name: str, args: list[_Word], redirs) -> None:
    args = list(args)
    if args and not args[0].text.startswith("-"):  # old style: tar xzf file
        first = args.pop(0)
        args = [_derive(first, "-" + first.text)] + args
    opts, _, _ = _getopt(args, _TAR_ARG_LETTERS, _TAR_LONG_ARGS)
    mode = None
    to_stdout = False
    for opt, _ in opts:
        letter = opt[1:] if len(opt) == 2 else opt
        if letter in _TAR_MODES:
            mode = _TAR_MODES[letter]
        elif opt in ("-O", "--to-stdout", "--to-command"):
            to_stdout = True
    archive = _opt_value(opts, "-f", "--file")
    if mode in ("c", "r", "u"):
        if archive is not None and archive.text != "-":
            scan.target(archive, f"tar writes {archive.text}")
    elif mode == "x" and not to_stdout:
        d = _opt_value(opts, "-C", "--directory")
        what = archive.text if archive is not None else "stdin"
        scan.flag(f"tar extracts {what}{' into ' + d.text if d else ''}: files not known")


_COMPRESSORS = {"gzip": (".gz", False), "gunzip": (".gz", True), "bzip2": (".bz2", False),
                "bunzip2": (".bz2", True), "xz": (".xz", False), "unxz": (".xz", True), "lzma": (".lzma", False),
                "unlzma": (".lzma", True), "zstd": (".zst", False), "unzstd": (".zst", True)}


def _h_compress(scan: _Scan, name: str, args: list[_Word], redirs) -> None:
    suffix, decompress = _COMPRESSORS[name]
    opts, ops, _ = _getopt(args, "SoT", frozenset({"--suffix", "--output"}))
    names = _opt_names(opts)
    if names & {"-c", "--stdout", "--to-stdout", "-l", "--list", "-t", "--test", "-h", "--help", "-V",
                "--version"}:
        return
    decompress = decompress or bool(names & {"-d", "--decompress", "--uncompress"})
    keep = bool(names & {"-k", "--keep"}) or (name in ("zstd", "unzstd") and "--rm" not in names)
    custom_suffix = _opt_value(opts, "-S", "--suffix")
    if custom_suffix is not None and custom_suffix.text:
        suffix = custom_suffix.text
    out_opt = _opt_value(opts, "-o", "--output") if name in ("zstd", "unzstd") else None
    for w in ops:
        if w.text == "-":
            continue
        if out_opt is not None:
            out = out_opt
        elif decompress:
            text = w.text[:-len(suffix)] if w.text.endswith(suffix) else (
                w.text[:-4] + ".tar" if w.text.endswith(".tgz") else w.text + ".out")
            out = _derive(w, text)
        else:
            out = _derive(w, w.text + suffix)
        out.expand, out.glob, out.tilde = w.expand or out.expand, w.glob, w.tilde
        scan.target(out, f"{name} writes {out.text}")
        if not keep:
            scan.target(w, f"{name} removes {w.text}")


_CURL_SHORT_ARGS = "AbcCdDeEFHKmoPQrtTuUwxXyYz"
_CURL_LONG_ARGS = frozenset({
    "--output", "--dump-header", "--cookie-jar", "--output-dir", "--trace", "--trace-ascii", "--stderr",
    "--etag-save", "--data", "--data-raw", "--data-binary", "--data-urlencode", "--data-ascii", "--json",
    "--header", "--user", "--url", "--request", "--user-agent", "--referer", "--cookie", "--form",
    "--form-string", "--max-time", "--connect-timeout", "--retry", "--retry-delay", "--retry-max-time",
    "--proxy", "--cacert", "--capath", "--cert", "--key", "--config", "--upload-file", "--write-out", "--range",
    "--limit-rate", "--resolve", "--interface", "--max-filesize", "--oauth2-bearer", "--unix-socket",
    "--variable", "--aws-sigv4", "--netrc-file", "--proxy-user", "--noproxy", "--connect-to", "--hsts",
    "--alt-svc", "--etag-compare", "--continue-at", "--time-cond", "--quote", "--expect100-timeout"})


def _h_curl(scan: _Scan, name: str, args: list[_Word], redirs) -> None:
    opts, _, _ = _getopt(args, _CURL_SHORT_ARGS, _CURL_LONG_ARGS)
    outdir = _opt_value(opts, "--output-dir")
    for opt, val in opts:
        if opt in ("-o", "--output") and val is not None and val.text != "-":
            if outdir is not None and not val.text.startswith("/"):
                val = _join_word(outdir, val.text)
            scan.target(val, f"curl writes {val.text}")
        elif opt in ("-D", "--dump-header", "-c", "--cookie-jar", "--trace", "--trace-ascii", "--stderr",
                     "--etag-save") and val is not None and val.text not in ("-", "%"):
            scan.target(val, f"curl {opt} writes {val.text}")
        elif opt in ("-O", "--remote-name", "--remote-name-all", "-J", "--remote-header-name"):
            scan.flag("curl -O writes a file named after the URL: not resolved")


def _h_wget(scan: _Scan, name: str, args: list[_Word], redirs) -> None:
    opts, ops, _ = _getopt(args, "OoaPAReiBtTwQUYlDIX", frozenset({
        "--output-document", "--output-file", "--append-output", "--directory-prefix", "--input-file",
        "--tries", "--timeout", "--wait", "--user-agent", "--header", "--post-data", "--post-file", "--user",
        "--password", "--level", "--accept", "--reject", "--domains", "--execute", "--base"}))
    names = _opt_names(opts)
    if names & {"--spider", "--help", "-h", "-V", "--version"}:
        return
    doc = _opt_value(opts, "-O", "--output-document")
    for opt, val in opts:
        if opt in ("-o", "--output-file", "-a", "--append-output") and val is not None:
            scan.target(val, f"wget log {val.text}")
    if doc is not None:
        if doc.text != "-":
            scan.target(doc, f"wget writes {doc.text}")
    elif ops or names & {"-i", "--input-file"}:
        scan.flag("wget writes files named after the URL: not resolved")


_RSYNC_LONG_ARGS = frozenset({"--rsh", "--exclude", "--include", "--filter", "--files-from", "--backup-dir",
                              "--suffix", "--log-file", "--password-file", "--timeout", "--chmod", "--link-dest",
                              "--compare-dest", "--copy-dest", "--partial-dir", "--temp-dir", "--max-size",
                              "--min-size", "--bwlimit", "--port", "--out-format", "--exclude-from",
                              "--include-from", "--info", "--debug", "--rsync-path"})


def _h_remote_copy(scan: _Scan, name: str, args: list[_Word], redirs) -> None:
    if name == "rsync":
        opts, ops, _ = _getopt(args, "efTBM", _RSYNC_LONG_ARGS)
    else:
        opts, ops, _ = _getopt(args, "cFiJlPoSDX")
    if len(ops) < 2:
        return
    dest = ops[-1]
    head = dest.text.split("/", 1)[0]
    if ":" in head and not dest.text.startswith((".", "/")):
        return  # remote destination
    names = _opt_names(opts)
    if name == "rsync" and (names & {"-n", "--dry-run", "--list-only"}):
        return
    scan.target(dest, f"{name} writes into {dest.text}")


def _h_editor(scan: _Scan, name: str, args: list[_Word], redirs) -> None:
    _, ops, _ = _getopt([a for a in args if not a.text.startswith("+")], "cSsuUiwWTtqp",
                        frozenset({"--cmd", "--startuptime"}))
    for w in ops:
        if w.text != "-":
            scan.target(w, f"{name} may edit {w.text}")
    scan.flag(f"{name} runs editor commands: writes not parsed")


# Formatters: name -> (writes by default?, write flags, no-write flags, short options with args, long ones)
_FORMATTERS = {
    "black": (True, (), {"--check", "--diff", "-c", "--code", "--version", "-h", "--help"}, "cltW",
              frozenset({"--line-length", "--target-version", "--include", "--exclude", "--extend-exclude",
                         "--force-exclude", "--stdin-filename", "--workers", "--config", "--required-version",
                         "--python-cell-magics", "--code"})),
    "prettier": (False, ("--write", "-w"), set(), "",
                 frozenset({"--config", "--ignore-path", "--parser", "--plugin", "--print-width", "--tab-width",
                            "--trailing-comma", "--end-of-line", "--stdin-filepath", "--cache-location",
                            "--log-level"})),
    "eslint": (False, ("--fix",), set(), "cfo",
               frozenset({"--config", "--ext", "--rule", "--plugin", "--parser", "--parser-options", "--env",
                          "--global", "--format", "--output-file", "--ignore-path", "--ignore-pattern",
                          "--rulesdir", "--max-warnings", "--cache-location", "--stdin-filename"})),
    "gofmt": (False, ("-w",), set(), "r", frozenset()),
    "goimports": (False, ("-w",), set(), "", frozenset({"-local", "-srcdir"})),
    "clang-format": (False, ("-i",), set(), "", frozenset()),
    "rustfmt": (True, (), {"--check", "--help", "-h", "--version", "-V", "--print-config"}, "",
                frozenset({"--edition", "--config-path", "--config", "--emit", "--color", "--style-edition"})),
    "autopep8": (False, ("-i", "--in-place"), set(), "j",
                 frozenset({"--select", "--ignore", "--max-line-length", "--indent-size", "--exclude",
                            "--line-range", "--range", "--global-config", "--jobs"})),
    "yapf": (False, ("-i", "--in-place"), set(), "le", frozenset({"--lines", "--style", "--exclude"})),
    "autoflake": (False, ("-i", "--in-place"), set(), "", frozenset({"--imports", "--exclude", "--config"})),
    "shfmt": (False, ("-w", "--write"), set(), "i", frozenset({"-ln", "--language-dialect", "--indent"})),
}
_RUFF_LONG_ARGS = frozenset({"--config", "--select", "--ignore", "--extend-select", "--extend-ignore",
                             "--line-length", "--target-version", "--output-format", "--exclude",
                             "--extend-exclude", "--stdin-filename", "--cache-dir", "--per-file-ignores",
                             "--fixable", "--unfixable", "--range", "--output-file"})


def _h_formatter(scan: _Scan, name: str, args: list[_Word], redirs) -> None:
    default, write_flags, nowrite, short_arg, long_arg = _FORMATTERS[name]
    opts, ops, _ = _getopt(args, short_arg, long_arg)
    _formatter_targets(scan, name, opts, ops, default, write_flags, nowrite, default_cwd=False)


def _formatter_targets(scan, what, opts, ops, default, write_flags, nowrite, *, default_cwd) -> None:
    names = _opt_names(opts)
    for opt, val in opts:
        if opt in ("-o", "--output-file") and val is not None:
            scan.target(val, f"{what} writes report {val.text}")
    writes = (default and not (names & nowrite)) or bool(names & set(write_flags))
    if not writes:
        return
    if not ops and default_cwd:
        ops = [_Word(".")]
    for w in ops:
        if w.text != "-":
            scan.target(w, f"{what} rewrites {w.text}")


def _h_ruff(scan: _Scan, name: str, args: list[_Word], redirs) -> None:
    opts, ops, _ = _getopt(args, "o", _RUFF_LONG_ARGS)
    sub = ops[0].text if ops else ""
    if sub == "format":
        _formatter_targets(scan, "ruff format", opts, ops[1:], True, (), {"--check", "--diff"}, default_cwd=True)
    elif sub == "check":
        _formatter_targets(scan, "ruff check --fix", opts, ops[1:], False, ("--fix", "--fix-only"),
                           set(), default_cwd=True)
    elif sub not in ("rule", "config", "linter", "clean", "version", "help", "server", "analyze",
                     "generate-shell-completion"):  # old style: `ruff --fix path`
        _formatter_targets(scan, "ruff --fix", opts, ops, False, ("--fix", "--fix-only"), set(), default_cwd=True)


def _h_build_tool(scan: _Scan, name: str, args: list[_Word], redirs) -> None:
    _, ops, _ = _getopt(args, "")
    sub = ops[0].text if ops else ""
    names = {a.text for a in args}
    if name == "cargo" and sub in ("fmt", "fix") and "--check" not in names:
        scan.flag(f"cargo {sub} rewrites the crate's sources: not listed")
    elif name == "cargo" and sub == "clippy" and "--fix" in names:
        scan.flag("cargo clippy --fix rewrites the crate's sources: not listed")
    elif name == "go" and sub in ("fmt", "generate", "fix"):
        scan.flag(f"go {sub} rewrites package sources: not listed")


# -- git ----------------------------------------------------------------------------------------

def _git_checkout(scan: _Scan, args: list[_Word]) -> None:
    opts, ops, before = _getopt(args, "bB", frozenset({"--orphan", "--conflict", "--pathspec-from-file"}))
    names = _opt_names(opts)
    if "--pathspec-from-file" in names:
        scan.flag("git checkout --pathspec-from-file: paths not read")
    if before is not None:
        if before > 1 or (before == 1 and names & {"-b", "-B", "--orphan"}):
            scan.flag("git checkout with several refs: not understood")
        for p in ops[before:]:
            scan.target(p, f"git checkout overwrites {p.text}")
        return
    if names & {"-b", "-B", "--orphan"}:
        if ops:
            scan.flag(f"git checkout -b from {ops[0].text} rewrites the working tree")
        return
    if not ops:
        return
    if len(ops) == 1:
        if scan.exists(ops[0]):
            scan.target(ops[0], f"git checkout overwrites {ops[0].text}")
            scan.flag(f"git checkout {ops[0].text} without --: may also switch branch")
        else:
            scan.flag(f"git checkout {ops[0].text} switches branch: rewrites the working tree")
        return
    for p in ops[1:]:
        scan.target(p, f"git checkout overwrites {p.text}")


def _git_restore(scan: _Scan, args: list[_Word]) -> None:
    opts, ops, _ = _getopt(args, "s", frozenset({"--source", "--pathspec-from-file", "--conflict"}))
    names = _opt_names(opts)
    if names & {"-S", "--staged"} and not names & {"-W", "--worktree"}:
        return  # index only
    if "--pathspec-from-file" in names:
        scan.flag("git restore --pathspec-from-file: paths not read")
    for p in ops:
        scan.target(p, f"git restore overwrites {p.text}")


def _git_switch(scan: _Scan, args: list[_Word]) -> None:
    opts, ops, _ = _getopt(args, "cC", frozenset({"--create", "--force-create", "--orphan", "--conflict"}))
    if _opt_names(opts) & {"-c", "-C", "--create", "--force-create"} and not ops:
        return  # new branch at HEAD: the working tree stays as it is
    scan.flag("git switch rewrites the working tree")


def _git_reset(scan: _Scan, args: list[_Word]) -> None:
    names = {a.text for a in args}
    for mode in ("--hard", "--merge", "--keep"):
        if mode in names:
            scan.flag(f"git reset {mode} rewrites the working tree")
            return


def _git_stash(scan: _Scan, args: list[_Word]) -> None:
    sub = args[0].text if args and not args[0].text.startswith("-") else "push"
    rest = args[1:] if args and not args[0].text.startswith("-") else args
    if sub in ("list", "show", "drop", "clear", "create", "store"):
        return
    if sub == "push":
        _, ops, _ = _getopt(rest, "m", frozenset({"--message", "--pathspec-from-file"}))
        if ops:
            for p in ops:
                scan.target(p, f"git stash reverts {p.text}")
            return
    scan.flag(f"git stash {sub} rewrites the working tree")


def _git_clean(scan: _Scan, args: list[_Word]) -> None:
    opts, ops, _ = _getopt(args, "e", frozenset({"--exclude"}))
    names = _opt_names(opts)
    if names & {"-n", "--dry-run"} or not names & {"-f", "--force", "-i", "--interactive"}:
        return
    for p in ops:
        scan.target(p, f"git clean deletes untracked files in {p.text}")
    if not ops:
        scan.flag("git clean deletes untracked files: not listed")


def _git_rm(scan: _Scan, args: list[_Word]) -> None:
    opts, ops, _ = _getopt(args, "", frozenset({"--pathspec-from-file"}))
    if _opt_names(opts) & {"--cached", "-n", "--dry-run"}:
        return
    for p in ops:
        scan.target(p, f"git rm deletes {p.text}")


def _git_mv(scan: _Scan, args: list[_Word]) -> None:
    if {a.text for a in args} & {"-n", "--dry-run"}:
        return
    _copy_like(scan, "git mv", args, move=True, short_arg="", long_arg=frozenset())


def _git_apply(scan: _Scan, args: list[_Word]) -> None:
    names = {a.text for a in args}
    if names & {"--check", "--stat", "--numstat", "--summary"} or ("--cached" in names and "--index" not in names):
        return
    scan.flag("git apply patches the files named in the diff: not parsed")


def _git_output(scan: _Scan, args: list[_Word], sub: str) -> None:
    opts, _, _ = _getopt(args, "o" if sub in ("archive", "format-patch") else "", frozenset({"--output"}))
    out = _opt_value(opts, "--output", "-o")
    if sub == "format-patch":
        if "--stdout" in _opt_names(opts):
            return
        if out is None:
            scan.flag("git format-patch writes patch files in the current directory: not listed")
        else:
            scan.target(out, f"git format-patch writes into {out.text}")
    elif out is not None:
        scan.target(out, f"git {sub} writes {out.text}")


_GIT_TREE_REWRITERS = frozenset({"merge", "pull", "rebase", "cherry-pick", "revert", "am", "bisect",
                                 "checkout-index", "read-tree", "submodule", "sparse-checkout", "filter-branch",
                                 "filter-repo", "lfs"})
_GIT_HARMLESS_SUBS = {"bisect": {"", "log", "view", "visualize", "terms"},
                      "submodule": {"", "status", "summary"}, "lfs": {"", "ls-files", "status", "env", "version",
                                                                      "track", "untrack", "locks"}}


def _h_git(scan: _Scan, name: str, args: list[_Word], redirs) -> None:
    k = 0
    while k < len(args):
        t = args[k].text
        if t == "-C" and k + 1 < len(args):
            _chdir(scan, args[k + 1], "git -C")
            k += 2
        elif t in ("-c", "--git-dir", "--work-tree", "--namespace", "--config-env", "--exec-path",
                   "--super-prefix"):
            k += 2
        elif t.startswith("-"):
            k += 1
        else:
            break
    if k >= len(args):
        return
    sub, rest = args[k].text, args[k + 1:]
    if sub == "checkout":
        _git_checkout(scan, rest)
    elif sub == "restore":
        _git_restore(scan, rest)
    elif sub == "switch":
        _git_switch(scan, rest)
    elif sub == "reset":
        _git_reset(scan, rest)
    elif sub == "stash":
        _git_stash(scan, rest)
    elif sub == "clean":
        _git_clean(scan, rest)
    elif sub == "rm":
        _git_rm(scan, rest)
    elif sub == "mv":
        _git_mv(scan, rest)
    elif sub == "apply":
        _git_apply(scan, rest)
    elif sub in ("diff", "log", "show", "archive", "format-patch"):
        _git_output(scan, rest, sub)
    elif sub in _GIT_TREE_REWRITERS:
        first = rest[0].text if rest and not rest[0].text.startswith("-") else ""
        if first in _GIT_HARMLESS_SUBS.get(sub, ()) or any(a.text == "--show-current-patch" for a in rest):
            return
        scan.flag(f"git {sub} may rewrite the working tree: files not listed")


_HANDLERS = {
    "cd": _h_cd, "pushd": _h_cd, "popd": _h_cd,
    "rm": _h_remove, "unlink": _h_remove, "rmdir": _h_remove, "shred": _h_remove,
    "mv": _h_cp, "cp": _h_cp, "ln": _h_ln, "install": _h_install,
    "tee": _h_operands("writes", "", frozenset()), "sponge": _h_operands("writes"),
    "touch": _h_operands("creates or updates", "dtr", frozenset({"--date", "--reference"})),
    "truncate": _h_operands("resizes", "sr", frozenset({"--size", "--reference"})),
    "dd": _h_dd, "sort": _h_sort, "uniq": _h_uniq, "split": _h_split, "csplit": _h_split,
    "sed": _h_sed, "gsed": _h_sed, "perl": _h_perl,
    "awk": _h_awk, "gawk": _h_awk, "mawk": _h_awk, "nawk": _h_awk,
    "sh": _h_shell, "bash": _h_shell, "dash": _h_shell, "zsh": _h_shell, "ksh": _h_shell, "mksh": _h_shell,
    "ash": _h_shell, "fish": _h_shell,
    "eval": _h_eval, "trap": _h_trap, "source": _h_source, ".": _h_source,
    "xargs": _h_xargs, "parallel": _h_runs_commands, "watch": _h_runs_commands, "su": _h_runs_commands,
    "script": _h_runs_commands, "find": _h_find,
    "patch": _h_patch, "unzip": _h_unzip, "7z": _h_7z, "7za": _h_7z, "tar": _h_tar, "bsdtar": _h_tar,
    "curl": _h_curl, "wget": _h_wget, "rsync": _h_remote_copy, "scp": _h_remote_copy,
    "ed": _h_editor, "ex": _h_editor, "vi": _h_editor, "vim": _h_editor, "nvim": _h_editor,
    "ruff": _h_ruff, "cargo": _h_build_tool, "go": _h_build_tool, "git": _h_git,
}
_HANDLERS.update({name: _h_compress for name in _COMPRESSORS})
_HANDLERS.update({name: _h_formatter for name in _FORMATTERS})
