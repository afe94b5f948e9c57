"""The ``git`` handler for :mod:`bash_writes`: which git subcommands rewrite the working tree,
and which files they name.

``checkout``/``restore`` of paths, ``stash push`` of paths, ``clean``, ``rm`` and ``mv`` record
the files they overwrite or delete; a hard reset, a ``stash`` of everything and a ``clean`` without
paths target the whole directory (they discard every edit in progress) and are uncertain too;
``diff``/``log``/``show``/``archive``/``format-patch`` record an ``--output``/``-o`` file; a branch
switch, ``merge``, ``rebase`` and the other tree rewriters flag the command as uncertain (which files change depends on the repository, which
no static scan sees). Read-only subcommands record nothing. Called as ``handle_git(scan, name,
args, redirs)`` like every handler of :mod:`bash_tools`; it never runs anything. Standard library
only.
"""

from __future__ import annotations

from .bash_commands import change_dir, copy_like, option_names, option_value, parse_options
from .bash_lexer import Word

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable

    from .bash_writes import Scan


def _git_checkout(scan: Scan, args: list[Word]) -> None:
    opts, ops, before = parse_options(args, "bB", frozenset({"--orphan", "--conflict", "--pathspec-from-file"}))
    names = option_names(opts)
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


def _git_restore(scan: Scan, args: list[Word]) -> None:
    opts, ops, _ = parse_options(args, "s", frozenset({"--source", "--pathspec-from-file", "--conflict"}))
    names = option_names(opts)
    if names & {"-S", "--staged"} and not names & {"-W", "--worktree"}:
        return  # index only
    if "--pathspec-from-file" in names:
        scan.flag("git restore --pathspec-from-file: paths not read")
    for p in ops:
        scan.target(p, f"git restore overwrites {p.text}")


def _git_switch(scan: Scan, args: list[Word]) -> None:
    opts, ops, _ = parse_options(args, "cC", frozenset({"--create", "--force-create", "--orphan", "--conflict"}))
    if option_names(opts) & {"-c", "-C", "--create", "--force-create"} and not ops:
        return  # new branch at HEAD: the working tree stays as it is
    scan.flag("git switch rewrites the working tree")


def _whole_tree(scan: Scan, what: str) -> None:
    """A subcommand that throws away the uncommitted changes of every file in the working tree (other
    sessions' edits in progress included): a target of the whole directory, so it is refused while
    another holder leases a file beneath it, and uncertain, as the files it touches are not listed."""
    scan.target(Word("."), what)
    scan.flag(what)


def _git_reset(scan: Scan, args: list[Word]) -> None:
    names = {a.text for a in args}
    if "--hard" in names:
        _whole_tree(scan, "git reset --hard discards the changes to every tracked file")
        return
    for mode in ("--merge", "--keep"):  # these keep local changes (or stop): no edit in progress is lost
        if mode in names:
            scan.flag(f"git reset {mode} rewrites the working tree")
            return


def _git_stash(scan: Scan, args: list[Word]) -> None:
    sub = args[0].text if args and not args[0].text.startswith("-") else "push"
    rest = args[1:] if args and not args[0].text.startswith("-") else args
    if sub in ("list", "show", "drop", "clear", "create", "store"):
        return
    if sub in ("push", "save"):
        _, ops, _ = parse_options(rest, "m", frozenset({"--message", "--pathspec-from-file"}))
        if ops and sub == "push":
            for p in ops:
                scan.target(p, f"git stash reverts {p.text}")
            return
        _whole_tree(scan, f"git stash {sub} reverts the changes to every tracked file")
        return
    scan.flag(f"git stash {sub} rewrites the working tree")


def _git_clean(scan: Scan, args: list[Word]) -> None:
    opts, ops, _ = parse_options(args, "e", frozenset({"--exclude"}))
    names = option_names(opts)
    if names & {"-n", "--dry-run"} or not names & {"-f", "--force", "-i", "--interactive"}:
        return
    for p in ops:
        scan.target(p, f"git clean deletes untracked files in {p.text}")
    if not ops:  # another session's new files are untracked until committed
        _whole_tree(scan, "git clean deletes the untracked files of the whole tree")


def _git_rm(scan: Scan, args: list[Word]) -> None:
    opts, ops, _ = parse_options(args, "", frozenset({"--pathspec-from-file"}))
    if option_names(opts) & {"--cached", "-n", "--dry-run"}:
        return
    for p in ops:
        scan.target(p, f"git rm deletes {p.text}")


def _git_mv(scan: Scan, args: list[Word]) -> None:
    if {a.text for a in args} & {"-n", "--dry-run"}:
        return
    copy_like(scan, "git mv", args, move=True, short_arg="", long_arg=frozenset())


def _git_apply(scan: Scan, args: list[Word]) -> None:
    names = {a.text for a in args}
    if names & {"--check", "--stat", "--numstat", "--summary"} or ("--cached" in names and "--index" not in names):
        return
    scan.flag("git apply patches the files named in the diff: not parsed")


def _git_output(scan: Scan, args: list[Word], sub: str) -> None:
    opts, _, _ = parse_options(args, "o" if sub in ("archive", "format-patch") else "", frozenset({"--output"}))
    out = option_value(opts, "--output", "-o")
    if sub == "format-patch":
        if "--stdout" in option_names(opts):
            return
        if out is None:
            scan.flag("git format-patch writes patch files in the current directory: not listed")
        else:
            scan.target(out, f"git format-patch writes into {out.text}")
    elif out is not None:
        scan.target(out, f"git {sub} writes {out.text}")


# The subcommands that write named paths, each with the handler that reads its arguments.
_GIT_SUBCOMMANDS: "dict[str, Callable[[Scan, list[Word]], None]]" = {
    "checkout": _git_checkout, "restore": _git_restore, "switch": _git_switch, "reset": _git_reset,
    "stash": _git_stash, "clean": _git_clean, "rm": _git_rm, "mv": _git_mv, "apply": _git_apply,
}
_GIT_TREE_REWRITERS = frozenset({"merge", "pull", "rebase", "cherry-pick", "revert", "am", "bisect",
                                 "checkout-index", "read-tree", "submodule", "sparse-checkout", "filter-branch",
                                 "filter-repo", "lfs"})
_GIT_HARMLESS_SUBS = {"bisect": {"", "log", "view", "visualize", "terms"},
                      "submodule": {"", "status", "summary"}, "lfs": {"", "ls-files", "status", "env", "version",
                                                                      "track", "untrack", "locks"}}


def handle_git(scan: Scan, name: str, args: list[Word], redirs) -> None:
    k = 0
    while k < len(args):
        t = args[k].text
        if t == "-C" and k + 1 < len(args):
            change_dir(scan, args[k + 1], "git -C")
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
    handler = _GIT_SUBCOMMANDS.get(sub)
    if handler is not None:
        handler(scan, rest)
    elif sub in ("diff", "log", "show", "archive", "format-patch"):
        _git_output(scan, rest, sub)
    elif sub in _GIT_TREE_REWRITERS:
        first = rest[0].text if rest and not rest[0].text.startswith("-") else ""
        if first in _GIT_HARMLESS_SUBS.get(sub, ()) or any(a.text == "--show-current-patch" for a in rest):
            return
        scan.flag(f"git {sub} may rewrite the working tree: files not listed")
