"""Option parsing, prefix commands and file/text command handlers for :mod:`bash_writes`.

``parse_options`` splits GNU-style options; the ``_w_*`` wrappers (``sudo``, ``env``, ``timeout`` ...)
return the words of the command they run (``WRAPPERS``); the ``_h_*`` handlers report what
``cd``, ``rm``, ``cp``/``mv``, ``ln``, ``install``, ``tee``, ``touch``, ``dd``, ``sort``, ``sed -i``,
``perl -i``, ``awk -i`` ... write (``COMMAND_HANDLERS``). A handler is called as
``handler(scan, name, args, redirs)`` and records targets and doubts on ``scan`` (a
``bash_writes.Scan``); it never runs anything. Standard library only.
"""

from __future__ import annotations

import os
import re

from .bash_lexer import ASSIGN_RE, Word

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .bash_writes import Scan


# --------------------------------------------------------------------------------------------
# Words and options
# --------------------------------------------------------------------------------------------


def derive(w: Word, text: str) -> Word:
    """A word made from part of another (``--opt=VALUE``, ``of=FILE``)."""
    d = Word(text)
    d.expand = w.expand and ("$" in text or "`" in text)
    d.glob = w.glob and any(c in text for c in "*?[{")
    d.quoted = w.quoted
    return d


def join_word(directory: Word, name: str) -> Word:
    d = Word(directory.text.rstrip("/") + "/" + name if directory.text.rstrip("/") else "/" + name)
    d.expand = directory.expand or "$" in name or "`" in name
    d.glob = directory.glob or any(c in name for c in "*?[")
    d.tilde = directory.tilde
    return d


def _basename(w: Word) -> str:
    return w.text.rstrip("/").rsplit("/", 1)[-1] or w.text


def parse_options(args: list[Word], short_arg: str = "", long_arg=frozenset(), *, stop_at_operand: bool = False):
    """GNU-style option split. Returns (opts, operands, n_before_dashdash).

    ``opts`` is a list of (name, value-word-or-None); ``n_before_dashdash`` is the number of operands
    that came before a ``--`` (None when there was no ``--``).
    """
    opts: list[tuple[str, Word | None]] = []
    ops: list[Word] = []
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
                opts.append((name, derive(w, t[len(name) + 1:])))
            else:
                opts.append((name, None))
        elif t.startswith("-") and len(t) > 1:
            j = 1
            while j < len(t):
                ch = t[j]
                if ch in short_arg:
                    if j + 1 < len(t):
                        opts.append(("-" + ch, derive(w, t[j + 1:])))
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


def option_names(opts) -> set[str]:
    return {name for name, _ in opts}


def option_value(opts, *names: str) -> Word | None:
    found = None
    for name, value in opts:
        if name in names and value is not None:
            found = value
    return found


# --------------------------------------------------------------------------------------------
# Prefix commands (sudo, env, time, ...): return the wrapped command's words, or None
# --------------------------------------------------------------------------------------------


def _w_simple(short_arg: str, long_arg=frozenset()):
    def unwrap(scan: Scan, name: str, args: list[Word]):
        _, ops, _ = parse_options(args, short_arg, long_arg, stop_at_operand=True)
        return ops
    return unwrap


def _w_env(scan: Scan, name: str, args: list[Word]):
    k = 0
    while k < len(args):
        t = args[k].text
        if t in ("-u", "--unset"):
            k += 2
        elif t.startswith("--chdir="):
            change_dir(scan, derive(args[k], t[len("--chdir="):]), "env -C")
            k += 1
        elif t in ("-C", "--chdir") and k + 1 < len(args):
            change_dir(scan, args[k + 1], "env -C")
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
        elif ASSIGN_RE.match(t):
            k += 1
        else:
            break
    return args[k:]


def _w_time(scan: Scan, name: str, args: list[Word]):
    opts, ops, _ = parse_options(args, "of", frozenset({"--output", "--format"}), stop_at_operand=True)
    out = option_value(opts, "-o", "--output")
    if out is not None:
        scan.target(out, f"time -o writes {out.text}")
    return ops


def _w_nice(scan: Scan, name: str, args: list[Word]):
    if args and re.fullmatch(r"-[0-9]+", args[0].text):
        args = args[1:]
    _, ops, _ = parse_options(args, "n", frozenset({"--adjustment"}), stop_at_operand=True)
    return ops


def _w_timeout(scan: Scan, name: str, args: list[Word]):
    _, ops, _ = parse_options(args, "sk", frozenset({"--signal", "--kill-after"}), stop_at_operand=True)
    return ops[1:]


def _w_command(scan: Scan, name: str, args: list[Word]):
    opts, ops, _ = parse_options(args, "", stop_at_operand=True)
    if option_names(opts) & {"-v", "-V"}:
        return None
    return ops


def _w_sudo(scan: Scan, name: str, args: list[Word]):
    opts, ops, _ = parse_options(args, "ugCDprtUTh", frozenset({"--user", "--group", "--chdir", "--prompt", "--role",
                                                          "--type", "--other-user", "--host", "--close-from",
                                                          "--command-timeout"}), stop_at_operand=True)
    names = option_names(opts)
    if "-e" in names or "--edit" in names:
        for w in ops:
            scan.target(w, f"sudoedit edits {w.text}")
        scan.flag("sudo -e: editor writes not parsed")
        return None
    if not ops and names & {"-s", "-i", "--shell", "--login"}:
        scan.flag("sudo opens a shell reading stdin: writes not parsed")
        return None
    return ops


def _w_flock(scan: Scan, name: str, args: list[Word]):
    opts, ops, _ = parse_options(args, "wEc", frozenset({"--timeout", "--conflict-exit-code", "--command"}),
                           stop_at_operand=True)
    cmd = option_value(opts, "-c", "--command")
    if cmd is not None:
        scan.script(cmd.text, "flock -c")
        return None
    return ops[1:]


def _w_npx(scan: Scan, name: str, args: list[Word]):
    opts, ops, _ = parse_options(args, "pc", frozenset({"--package", "--call"}), stop_at_operand=True)
    cmd = option_value(opts, "-c", "--call")
    if cmd is not None:
        scan.script(cmd.text, f"{name} -c")
        return None
    return ops


_UV_RUN_ARGS = frozenset({"--with", "--with-editable", "--with-requirements", "--python", "-p", "--project",
                          "--directory", "--package", "--extra", "--group", "--only-group", "--no-group",
                          "--env-file", "--index", "--default-index", "--index-url", "--extra-index-url",
                          "-i", "--find-links", "-f", "--from", "--spec", "--environment", "-e"})


def _w_runner(scan: Scan, name: str, args: list[Word]):
    """``uv run``, ``poetry run``, ``pipx run``, ``uvx`` ... : the command after the options."""
    if name != "uvx":
        if not args or args[0].text != "run":
            return None
        args = args[1:]
    _, ops, _ = parse_options(args, "", _UV_RUN_ARGS, stop_at_operand=True)
    return ops


WRAPPERS = {
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


def change_dir(scan: Scan, w: Word | None, what: str) -> None:
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


def _h_cd(scan: Scan, name: str, args: list[Word], redirs) -> None:
    _, ops, _ = parse_options(args, "")
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
    change_dir(scan, ops[0] if ops else None, name)


def _h_remove(scan: Scan, name: str, args: list[Word], redirs) -> None:
    _, ops, _ = parse_options(args, "ns" if name == "shred" else "")
    verb = {"rm": "deletes", "unlink": "deletes", "rmdir": "removes", "shred": "overwrites"}[name]
    for w in ops:
        scan.target(w, f"{name} {verb} {w.text}")


def _h_operands(verb: str, short_arg: str = "", long_arg=frozenset()):
    def handler(scan: Scan, name: str, args: list[Word], redirs) -> None:
        opts, ops, _ = parse_options(args, short_arg, long_arg)
        v = "appends to" if name == "tee" and option_names(opts) & {"-a", "--append"} else verb
        for w in ops:
            if w.text != "-":
                scan.target(w, f"{name} {v} {w.text}")
    return handler


def copy_like(scan: Scan, name: str, args: list[Word], *, move: bool, short_arg: str = "tS",
               long_arg=frozenset({"--target-directory", "--suffix"}), single_operand_here: bool = False) -> None:
    opts, ops, _ = parse_options(args, short_arg, long_arg)
    names = option_names(opts)
    tdir = option_value(opts, "-t", "--target-directory")
    if tdir is not None:
        srcs, dests = ops, [join_word(tdir, _basename(s)) for s in ops]
    elif len(ops) >= 2 or (single_operand_here and ops):
        if len(ops) == 1:  # ln TARGET: link created in the current directory
            srcs, dests = ops, [Word(_basename(ops[0]))]
        else:
            srcs, dest = ops[:-1], ops[-1]
            into_dir = not (names & {"-T", "--no-target-directory"}) and (
                len(srcs) > 1 or dest.text.endswith("/") or scan.isdir(dest))
            dests = [join_word(dest, _basename(s)) for s in srcs] if into_dir else [dest]
    else:
        return
    if move:
        for s in srcs:
            scan.target(s, f"{name} moves {s.text} away")
    for d in dests:
        scan.target(d, f"{name} writes {d.text}")


def _h_cp(scan: Scan, name: str, args: list[Word], redirs) -> None:
    copy_like(scan, name, args, move=(name == "mv"))


def _h_ln(scan: Scan, name: str, args: list[Word], redirs) -> None:
    copy_like(scan, name, args, move=False, single_operand_here=True)


def _h_install(scan: Scan, name: str, args: list[Word], redirs) -> None:
    long_arg = frozenset({"--target-directory", "--suffix", "--mode", "--owner", "--group", "--strip-program"})
    opts, _, _ = parse_options(args, "tSmog", long_arg)
    if option_names(opts) & {"-d", "--directory"}:
        return  # creates directories only
    copy_like(scan, name, args, move=False, short_arg="tSmog", long_arg=long_arg)


def _h_dd(scan: Scan, name: str, args: list[Word], redirs) -> None:
    for w in args:
        if w.text.startswith("of="):
            out = derive(w, w.text[3:])
            scan.target(out, f"dd writes {out.text}")


def _h_sort(scan: Scan, name: str, args: list[Word], redirs) -> None:
    opts, _, _ = parse_options(args, "kotST", frozenset({"--key", "--output", "--field-separator", "--buffer-size",
                                                   "--temporary-directory", "--files0-from", "--compress-program",
                                                   "--parallel", "--random-source", "--batch-size"}))
    out = option_value(opts, "-o", "--output")
    if out is not None:
        scan.target(out, f"sort -o writes {out.text}")


def _h_uniq(scan: Scan, name: str, args: list[Word], redirs) -> None:
    _, ops, _ = parse_options(args, "fsw", frozenset({"--skip-fields", "--skip-chars", "--check-chars"}))
    if len(ops) >= 2 and ops[1].text != "-":
        scan.target(ops[1], f"uniq writes {ops[1].text}")


def _h_split(scan: Scan, name: str, args: list[Word], redirs) -> None:
    scan.flag(f"{name} writes pieces named after a prefix: not parsed")


_SED_W_RE = re.compile(r"(?:^|[;\n{}/]|[0-9$])\s*[wW]\s+\S")


def _h_sed(scan: Scan, name: str, args: list[Word], redirs) -> None:
    inplace = False
    suffix = ""
    scripts: list[str] = []
    script_given = False
    ops: list[Word] = []
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


def _backup_target(scan: Scan, w: Word, suffix: str, what: str) -> None:
    if "*" in suffix:
        base = _basename(w)
        name = suffix.replace("*", base)
        head = w.text.rstrip("/").rpartition("/")[0]
        text = name if name.startswith("/") or not head else head + "/" + name
    else:
        text = w.text + suffix
    b = derive(w, text)
    b.expand, b.glob, b.tilde = w.expand, w.glob, w.tilde
    scan.target(b, f"{what} backup {text}")


_PERL_RISKY_RE = re.compile(
    r"\b(open|sysopen|system|exec|fork|unlink|rename|truncate|mkdir|rmdir|link|symlink|utime|chmod|chown|"
    r"eval|do|require|use|qx|dbmopen|tie|copy|move|syscall)\b|`|\$\^I")


def _h_perl(scan: Scan, name: str, args: list[Word], redirs) -> None:
    inplace = False
    suffix = ""
    code: list[str] = []
    modules = False
    ops: list[Word] = []
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


def _h_awk(scan: Scan, name: str, args: list[Word], redirs) -> None:
    opts, ops, _ = parse_options(args, "fvFielE", frozenset({"--file", "--assign", "--field-separator", "--include",
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
            if not ASSIGN_RE.match(w.text) and w.text != "-":
                scan.target(w, f"{name} -i inplace edits {w.text}")


# Command name -> handler; bash_writes merges this table with bash_tools.TOOL_HANDLERS.
COMMAND_HANDLERS = {
    "cd": _h_cd, "pushd": _h_cd, "popd": _h_cd,
    "rm": _h_remove, "unlink": _h_remove, "rmdir": _h_remove, "shred": _h_remove,
    "mv": _h_cp, "cp": _h_cp, "ln": _h_ln, "install": _h_install,
    "tee": _h_operands("writes", "", frozenset()), "sponge": _h_operands("writes"),
    "touch": _h_operands("creates or updates", "dtr", frozenset({"--date", "--reference"})),
    "truncate": _h_operands("resizes", "sr", frozenset({"--size", "--reference"})),
    "dd": _h_dd, "sort": _h_sort, "uniq": _h_uniq, "split": _h_split, "csplit": _h_split,
    "sed": _h_sed, "gsed": _h_sed, "perl": _h_perl,
    "awk": _h_awk, "gawk": _h_awk, "mawk": _h_awk, "nawk": _h_awk,
}
