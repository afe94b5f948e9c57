"""Handlers for programs that run code or rewrite trees, for :mod:`bash_writes`.

Interpreters and shells (``python``, ``node``, ``bash -c``, ``eval``, ``source``), ``xargs`` and
``find``, ``patch``, archives and compressors, ``curl``/``wget``, ``rsync``/``scp``, editors,
formatters (``black``, ``ruff format`` ...) and ``cargo``/``go`` (``git`` has a module of its own,
:mod:`bash_git`). Each handler is called as ``handler(scan, name, args, redirs)`` and records
targets and doubts on ``scan`` (a ``bash_writes.Scan``); it never runs anything. Most of these can
write where no static scan sees, so they mostly flag the command as uncertain. Standard library
only.
"""

from __future__ import annotations

from .bash_commands import change_dir, derive, join_word, option_names, option_value, parse_options
from .bash_git import handle_git
from .bash_lexer import Word

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .bash_writes import Scan

_SAFE_PY_MODULES = frozenset({
    "pytest", "unittest", "doctest", "mypy", "pyflakes", "flake8", "pylint", "pydoc", "timeit",
    "http.server", "platform", "sysconfig", "site", "this", "tabnanny", "pyclbr", "cProfile", "profile",
})
_VERSION_FLAGS = frozenset({"--version", "-V", "-v", "-h", "--help", "-VV", "version", "help"})


def handle_python(scan: Scan, name: str, args: list[Word], redirs) -> None:
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


INTERPRETERS = frozenset({"node", "nodejs", "deno", "bun", "ruby", "irb", "php", "Rscript", "R", "lua", "luajit",
                           "julia", "tclsh", "wish", "osascript", "pwsh", "powershell", "groovy", "ts-node", "tsx",
                           "jshell", "scala", "kotlin", "elixir", "erl", "escript", "racket", "guile", "sbcl",
                           "swift", "dotnet"})
_EVAL_FLAGS = frozenset({"-e", "--eval", "-c", "-p", "--print", "-r", "-Command", "-command", "-x"})


def handle_interpreter(scan: Scan, name: str, args: list[Word], redirs) -> None:
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


def _h_shell(scan: Scan, name: str, args: list[Word], redirs) -> None:
    opts, ops, _ = parse_options([a for a in args if not a.text.startswith("+")], "oO",
                           frozenset({"--rcfile", "--init-file"}))
    names = option_names(opts)
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


def _h_eval(scan: Scan, name: str, args: list[Word], redirs) -> None:
    if any(a.expand for a in args):
        scan.flag("eval of expanded text: writes not parsed")
        return
    scan.script(" ".join(a.text for a in args), "eval")


def _h_trap(scan: Scan, name: str, args: list[Word], redirs) -> None:
    _, ops, _ = parse_options(args, "")
    if len(ops) >= 2 and ops[0].text not in ("", "-"):
        scan.script(ops[0].text, "trap handler")


def _h_source(scan: Scan, name: str, args: list[Word], redirs) -> None:
    scan.flag(f"{name} runs {args[0].text if args else 'a script'}: writes not parsed")


def _h_xargs(scan: Scan, name: str, args: list[Word], redirs) -> None:
    _, ops, _ = parse_options(args, "IaEdLnPs", frozenset({"--arg-file", "--delimiter", "--max-args", "--max-procs",
                                                     "--max-chars", "--process-slot-var"}), stop_at_operand=True)
    if ops and ops[0].text != "echo":
        scan.flag(f"{name} runs {ops[0].text} on arguments from stdin: writes not parsed")


def _h_runs_commands(scan: Scan, name: str, args: list[Word], redirs) -> None:
    scan.flag(f"{name} runs other commands: writes not parsed")


def _h_find(scan: Scan, name: str, args: list[Word], redirs) -> None:
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


def _h_patch(scan: Scan, name: str, args: list[Word], redirs) -> None:
    opts, ops, _ = parse_options(args, "pioDdrFVzBYg", frozenset({"--strip", "--input", "--output", "--directory",
                                                             "--reject-file", "--ifdef", "--fuzz",
                                                             "--version-control", "--suffix", "--prefix",
                                                             "--basename-prefix", "--get", "--quoting-style"}))
    names = option_names(opts)
    if names & {"--dry-run", "-C", "--check", "--help", "-v", "--version"}:
        return
    saved = scan.cwd
    d = option_value(opts, "-d", "--directory")
    if d is not None:
        change_dir(scan, d, "patch -d")
    out = option_value(opts, "-o", "--output")
    if out is not None and out.text != "-":
        scan.target(out, f"patch writes {out.text}")
    elif ops:
        scan.target(ops[0], f"patch edits {ops[0].text}")
    else:
        scan.flag("patch edits the files named in the diff: not parsed")
    scan.cwd = saved


def _h_unzip(scan: Scan, name: str, args: list[Word], redirs) -> None:
    opts, ops, _ = parse_options(args, "dxP")
    names = option_names(opts)
    if names & {"-l", "-t", "-v", "-Z", "-p", "-c", "-z", "-h", "--help"}:
        return
    archive = ops[0].text if ops else "an archive"
    d = option_value(opts, "-d")
    scan.flag(f"{name} extracts {archive}{' into ' + d.text if d else ''}: files not known")


def _h_7z(scan: Scan, name: str, args: list[Word], redirs) -> None:
    _, ops, _ = parse_options(args, "")
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


def _h_tar(scan: Scan, name: str, args: list[Word], redirs) -> None:
    args = list(args)
    if args and not args[0].text.startswith("-"):  # old style: tar xzf file
        first = args.pop(0)
        args = [derive(first, "-" + first.text)] + args
    opts, _, _ = parse_options(args, _TAR_ARG_LETTERS, _TAR_LONG_ARGS)
    mode = None
    to_stdout = False
    for opt, _ in opts:
        letter = opt[1:] if len(opt) == 2 else opt
        if letter in _TAR_MODES:
            mode = _TAR_MODES[letter]
        elif opt in ("-O", "--to-stdout", "--to-command"):
            to_stdout = True
    archive = option_value(opts, "-f", "--file")
    if mode in ("c", "r", "u"):
        if archive is not None and archive.text != "-":
            scan.target(archive, f"tar writes {archive.text}")
    elif mode == "x" and not to_stdout:
        d = option_value(opts, "-C", "--directory")
        what = archive.text if archive is not None else "stdin"
        scan.flag(f"tar extracts {what}{' into ' + d.text if d else ''}: files not known")


_COMPRESSORS = {"gzip": (".gz", False), "gunzip": (".gz", True), "bzip2": (".bz2", False),
                "bunzip2": (".bz2", True), "xz": (".xz", False), "unxz": (".xz", True), "lzma": (".lzma", False),
                "unlzma": (".lzma", True), "zstd": (".zst", False), "unzstd": (".zst", True)}


def _h_compress(scan: Scan, name: str, args: list[Word], redirs) -> None:
    suffix, decompress = _COMPRESSORS[name]
    opts, ops, _ = parse_options(args, "SoT", frozenset({"--suffix", "--output"}))
    names = option_names(opts)
    if names & {"-c", "--stdout", "--to-stdout", "-l", "--list", "-t", "--test", "-h", "--help", "-V",
                "--version"}:
        return
    decompress = decompress or bool(names & {"-d", "--decompress", "--uncompress"})
    keep = bool(names & {"-k", "--keep"}) or (name in ("zstd", "unzstd") and "--rm" not in names)
    custom_suffix = option_value(opts, "-S", "--suffix")
    if custom_suffix is not None and custom_suffix.text:
        suffix = custom_suffix.text
    out_opt = option_value(opts, "-o", "--output") if name in ("zstd", "unzstd") else None
    for w in ops:
        if w.text == "-":
            continue
        if out_opt is not None:
            out = out_opt
        elif decompress:
            text = w.text[:-len(suffix)] if w.text.endswith(suffix) else (
                w.text[:-4] + ".tar" if w.text.endswith(".tgz") else w.text + ".out")
            out = derive(w, text)
        else:
            out = derive(w, w.text + suffix)
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


def _h_curl(scan: Scan, name: str, args: list[Word], redirs) -> None:
    opts, _, _ = parse_options(args, _CURL_SHORT_ARGS, _CURL_LONG_ARGS)
    outdir = option_value(opts, "--output-dir")
    for opt, val in opts:
        if opt in ("-o", "--output") and val is not None and val.text != "-":
            if outdir is not None and not val.text.startswith("/"):
                val = join_word(outdir, val.text)
            scan.target(val, f"curl writes {val.text}")
        elif opt in ("-D", "--dump-header", "-c", "--cookie-jar", "--trace", "--trace-ascii", "--stderr",
                     "--etag-save") and val is not None and val.text not in ("-", "%"):
            scan.target(val, f"curl {opt} writes {val.text}")
        elif opt in ("-O", "--remote-name", "--remote-name-all", "-J", "--remote-header-name"):
            scan.flag("curl -O writes a file named after the URL: not resolved")


def _h_wget(scan: Scan, name: str, args: list[Word], redirs) -> None:
    opts, ops, _ = parse_options(args, "OoaPAReiBtTwQUYlDIX", frozenset({
        "--output-document", "--output-file", "--append-output", "--directory-prefix", "--input-file",
        "--tries", "--timeout", "--wait", "--user-agent", "--header", "--post-data", "--post-file", "--user",
        "--password", "--level", "--accept", "--reject", "--domains", "--execute", "--base"}))
    names = option_names(opts)
    if names & {"--spider", "--help", "-h", "-V", "--version"}:
        return
    doc = option_value(opts, "-O", "--output-document")
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


def _h_remote_copy(scan: Scan, name: str, args: list[Word], redirs) -> None:
    if name == "rsync":
        opts, ops, _ = parse_options(args, "efTBM", _RSYNC_LONG_ARGS)
    else:
        opts, ops, _ = parse_options(args, "cFiJlPoSDX")
    if len(ops) < 2:
        return
    dest = ops[-1]
    head = dest.text.split("/", 1)[0]
    if ":" in head and not dest.text.startswith((".", "/")):
        return  # remote destination
    names = option_names(opts)
    if name == "rsync" and (names & {"-n", "--dry-run", "--list-only"}):
        return
    scan.target(dest, f"{name} writes into {dest.text}")


def _h_editor(scan: Scan, name: str, args: list[Word], redirs) -> None:
    _, ops, _ = parse_options([a for a in args if not a.text.startswith("+")], "cSsuUiwWTtqp",
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


def _h_formatter(scan: Scan, name: str, args: list[Word], redirs) -> None:
    default, write_flags, nowrite, short_arg, long_arg = _FORMATTERS[name]
    opts, ops, _ = parse_options(args, short_arg, long_arg)
    _formatter_targets(scan, name, opts, ops, default, write_flags, nowrite, default_cwd=False)


def _formatter_targets(scan, what, opts, ops, default, write_flags, nowrite, *, default_cwd) -> None:
    names = option_names(opts)
    for opt, val in opts:
        if opt in ("-o", "--output-file") and val is not None:
            scan.target(val, f"{what} writes report {val.text}")
    writes = (default and not (names & nowrite)) or bool(names & set(write_flags))
    if not writes:
        return
    if not ops and default_cwd:
        ops = [Word(".")]
    for w in ops:
        if w.text != "-":
            scan.target(w, f"{what} rewrites {w.text}")


def _h_ruff(scan: Scan, name: str, args: list[Word], redirs) -> None:
    opts, ops, _ = parse_options(args, "o", _RUFF_LONG_ARGS)
    sub = ops[0].text if ops else ""
    if sub == "format":
        _formatter_targets(scan, "ruff format", opts, ops[1:], True, (), {"--check", "--diff"}, default_cwd=True)
    elif sub == "check":
        _formatter_targets(scan, "ruff check --fix", opts, ops[1:], False, ("--fix", "--fix-only"),
                           set(), default_cwd=True)
    elif sub not in ("rule", "config", "linter", "clean", "version", "help", "server", "analyze",
                     "generate-shell-completion"):  # old style: `ruff --fix path`
        _formatter_targets(scan, "ruff --fix", opts, ops, False, ("--fix", "--fix-only"), set(), default_cwd=True)


def _h_build_tool(scan: Scan, name: str, args: list[Word], redirs) -> None:
    _, ops, _ = parse_options(args, "")
    sub = ops[0].text if ops else ""
    names = {a.text for a in args}
    if name == "cargo" and sub in ("fmt", "fix") and "--check" not in names:
        scan.flag(f"cargo {sub} rewrites the crate's sources: not listed")
    elif name == "cargo" and sub == "clippy" and "--fix" in names:
        scan.flag("cargo clippy --fix rewrites the crate's sources: not listed")
    elif name == "go" and sub in ("fmt", "generate", "fix"):
        scan.flag(f"go {sub} rewrites package sources: not listed")


# Command name -> handler; bash_writes merges this table with bash_commands.COMMAND_HANDLERS.
TOOL_HANDLERS = {
    "sh": _h_shell, "bash": _h_shell, "dash": _h_shell, "zsh": _h_shell, "ksh": _h_shell, "mksh": _h_shell,
    "ash": _h_shell, "fish": _h_shell,
    "eval": _h_eval, "trap": _h_trap, "source": _h_source, ".": _h_source,
    "xargs": _h_xargs, "parallel": _h_runs_commands, "watch": _h_runs_commands, "su": _h_runs_commands,
    "script": _h_runs_commands, "find": _h_find,
    "patch": _h_patch, "unzip": _h_unzip, "7z": _h_7z, "7za": _h_7z, "tar": _h_tar, "bsdtar": _h_tar,
    "curl": _h_curl, "wget": _h_wget, "rsync": _h_remote_copy, "scp": _h_remote_copy,
    "ed": _h_editor, "ex": _h_editor, "vi": _h_editor, "vim": _h_editor, "nvim": _h_editor,
    "ruff": _h_ruff, "cargo": _h_build_tool, "go": _h_build_tool, "git": handle_git,
}
TOOL_HANDLERS.update({name: _h_compress for name in _COMPRESSORS})
TOOL_HANDLERS.update({name: _h_formatter for name in _FORMATTERS})
