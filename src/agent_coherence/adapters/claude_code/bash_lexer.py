"""Bash lexer for :mod:`bash_writes`: words, operators, redirections, here-documents, substitutions.

``Lexer(src, nest).lex()`` turns a command string into a flat list of operator strings, ``Word``
and ``Redir`` tokens the way bash would split it (quotes, escapes, ``$'...'``, here-documents,
``case`` patterns, arithmetic), with ``$(...)``, backticks and process substitutions lexed into
each word's ``subs``. It expands nothing: a word only records whether it holds a parameter
expansion, a glob or a tilde. Malformed input raises ``ParseError``, and so does nesting deeper
than ``_MAX_NEST``; parts it lexes but can't follow are listed in ``issues``. Standard library only
(``re``), as it runs on every Bash tool call.
"""

from __future__ import annotations

import re

_MAX_NEST = 12  # nested $(...), backticks, bash -c strings


class ParseError(Exception):
    pass


class Word:
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


class Redir:
    __slots__ = ("fd", "op", "target", "body")

    def __init__(self, fd: str | None, op: str, target: Word) -> None:
        self.fd = fd
        self.op = op
        self.target = target
        self.body: str | None = None  # here-document body


_META = frozenset(" \t\n;&|()<>")
_CONTROL_OPS = (";;&", "&&", "||", ";;", ";&", "|&", "|", "&", ";")
_REDIR_OPS = ("&>>", "&>", "<<<", "<<-", "<<", "<>", "<&", ">>", ">|", ">&", "<", ">")
_ANSI_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "a": "\a", "b": "\b", "e": "\x1b", "E": "\x1b",
                 "f": "\f", "v": "\v", "\\": "\\", "'": "'", '"': '"', "?": "?"}
ASSIGN_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\[[^\]]*\])?\+?=")
_FD_VAR_RE = re.compile(r"\{[A-Za-z_][A-Za-z0-9_]*\}")


class Lexer:
    def __init__(self, src: str, nest: int) -> None:
        self.s = src
        self.n = len(src)
        self.i = 0
        self.nest = nest
        self.heredocs: list[tuple[Redir, str, bool, bool]] = []
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
            raise ParseError("unterminated $( or <(")
        if depth:
            raise ParseError("unclosed '('")
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
        w = Word(self.s[self.i:end])
        w.arith = True
        toks.append(w)
        self.i = end
        return True

    # -- redirections and here-documents -------------------------------------------------

    def _read_redirect(self, fd: str | None) -> Redir:
        s = self.s
        for op in _REDIR_OPS:
            if s.startswith(op, self.i):
                break
        self.i += len(op)
        while self.i < self.n and s[self.i] in " \t":
            self.i += 1
        if self.i >= self.n or s[self.i] in "\n;&|()" or (
                s[self.i] in "<>" and not s.startswith("(", self.i + 1)):
            raise ParseError(f"redirection {op} without a target")
        target = self._read_word()
        r = Redir(fd, op, target)
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

    def _read_word(self) -> Word:
        s, n = self.s, self.n
        start = self.i
        w = Word()
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
                    raise ParseError("unterminated single quote")
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

    def _word_paren(self, parts: list[str], w: Word) -> bool:
        """``(`` inside a word: array assignment ``a=(...)`` or extglob ``@(...)``."""
        so_far = "".join(parts)
        if so_far.endswith("=") and ASSIGN_RE.fullmatch(so_far):
            pass
        elif so_far and so_far[-1] in "?*+@!":
            w.glob = True
        else:
            return False
        end = self._skip_balanced(self.i)
        parts.append(self.s[self.i:end])
        self.i = end
        return True

    def _dquote(self, parts: list[str], w: Word) -> None:
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
        raise ParseError("unterminated double quote")

    def _dollar(self, parts: list[str], w: Word, in_dquote: bool) -> None:
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
                raise ParseError("unterminated $'...' quote")
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

    def _backtick(self, parts: list[str], w: Word) -> None:
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
            raise ParseError("unterminated backtick")
        self.i = j + 1
        if self.nest >= _MAX_NEST:
            raise ParseError("substitutions nested too deeply")
        inner = Lexer("".join(buf), self.nest + 1)
        w.subs.append(inner.lex())
        self.issues.extend(inner.issues)
        w.expand = True
        parts.append(s[start:self.i])

    def _nested(self) -> list:
        if self.nest >= _MAX_NEST:
            raise ParseError("substitutions nested too deeply")
        self.nest += 1
        try:
            return self.lex(until_paren=True)
        finally:
            self.nest -= 1

    def _skip_balanced(self, i: int) -> int:
        """Index just past the ``)`` matching the ``(`` at ``i`` (quotes respected)."""
        return self._skip_pair(i, "(", ")", "unbalanced parentheses")

    def _skip_braces(self, i: int) -> int:
        """Index just past the ``}`` matching the ``{`` at ``i`` (quotes respected)."""
        return self._skip_pair(i, "{", "}", "unterminated ${")

    def _skip_pair(self, i: int, opening: str, closing: str, error: str) -> int:
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
                    raise ParseError("unterminated single quote")
                j = k + 1
                continue
            if c == '"':
                j = self._skip_dquote(j)
                continue
            if c == opening:
                depth += 1
            elif c == closing:
                depth -= 1
                if depth == 0:
                    return j + 1
            j += 1
        raise ParseError(error)

    def _skip_dquote(self, j: int) -> int:
        s, n = self.s, self.n
        k = j + 1
        while k < n and s[k] != '"':
            k += 2 if s[k] == "\\" else 1
        if k >= n:
            raise ParseError("unterminated double quote")
        return k + 1
