"""Static detection of file writes in Bash commands (Claude Code adapter)."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent_coherence.adapters.claude_code.bash_writes import BashWriteScan, scan_bash_command

CWD = "/work/proj"  # does not exist: nothing is a directory, so cp/mv destinations are taken literally


def P(*parts: str) -> str:
    return os.path.normpath(os.path.join(CWD, *parts))


# (command, expected targets, expected uncertain)
WRITES = [
    # redirections
    ("echo hi > out.txt", {P("out.txt")}, False),
    ("echo hi >> log.txt", {P("log.txt")}, False),
    ("echo hi >| forced.txt", {P("forced.txt")}, False),
    ("make &> build.log", {P("build.log")}, False),
    ("make &>> build.log", {P("build.log")}, False),
    ("pytest 2> err.txt", {P("err.txt")}, False),
    ("cmd >out.txt 2>&1", {P("out.txt")}, False),
    ("cmd >& both.txt", {P("both.txt")}, False),
    ("> empty.txt", {P("empty.txt")}, False),
    (": > truncated.txt", {P("truncated.txt")}, False),
    ("echo x > /tmp/abs.txt", {"/tmp/abs.txt"}, False),
    ("echo x > '/tmp/with space.txt'", {"/tmp/with space.txt"}, False),
    ('echo x > "dir name/f.txt"', {P("dir name/f.txt")}, False),
    ("echo x > ../up.txt", {"/work/up.txt"}, False),
    ("exec 3<>lock.file", {P("lock.file")}, False),
    ("{ echo a; echo b; } > grouped.txt", {P("grouped.txt")}, False),
    ("(echo a; echo b) > sub.txt", {P("sub.txt")}, False),
    ("for i in 1 2; do echo $i; done > loop.txt", {P("loop.txt")}, False),
    ("cat <<EOF > notes.md\nhello\nEOF", {P("notes.md")}, False),
    ("cat > config.yml <<'EOF'\nkey: $NOT_EXPANDED\nEOF\necho done", {P("config.yml")}, False),
    ("cat <<-EOF >> a.txt\n\tindented\n\tEOF\nrm b.txt", {P("a.txt"), P("b.txt")}, False),
    ("printf '%s\\n' a b | tee out1 out2", {P("out1"), P("out2")}, False),
    ("echo x | tee -a app.log", {P("app.log")}, False),
    ("echo x | sudo tee /etc/hosts > /dev/null", {"/etc/hosts"}, False),
    # in-place editors
    ("sed -i 's/a/b/' a.txt", {P("a.txt")}, False),
    ("sed -i.bak -e 's/a/b/' a.txt b.txt", {P("a.txt"), P("a.txt.bak"), P("b.txt"), P("b.txt.bak")}, False),
    ("sed --in-place 's/a/b/' src/x.py", {P("src/x.py")}, False),
    ("sed -E -i 's/(a)/\\1/g' one two", {P("one"), P("two")}, False),
    ("sed -i '' 's/a/b/' mac.txt", {P("mac.txt")}, False),
    ("sed -ie 's/a/b/' f", {P("f"), P("fe")}, False),  # GNU: -ie means suffix "e"
    ("perl -pi -e 's/foo/bar/g' lib.pl", {P("lib.pl")}, False),
    ("perl -i.orig -pe 's/a/b/' x.txt", {P("x.txt"), P("x.txt.orig")}, False),
    ("gawk -i inplace '{print $1}' data.txt", {P("data.txt")}, False),
    # file commands
    ("rm file.txt", {P("file.txt")}, False),
    ("rm -rf build dist", {P("build"), P("dist")}, False),
    ("rm -- -weird-name", {P("-weird-name")}, False),
    ("rmdir emptydir", {P("emptydir")}, False),
    ("unlink old.sock", {P("old.sock")}, False),
    ("mv a.txt b.txt", {P("a.txt"), P("b.txt")}, False),
    ("mv a.txt b.txt dest/", {P("a.txt"), P("b.txt"), P("dest/a.txt"), P("dest/b.txt")}, False),
    ("mv -t dest a.txt", {P("a.txt"), P("dest/a.txt")}, False),
    ("cp a.txt b.txt", {P("b.txt")}, False),
    ("cp -r src/ backup/", {P("backup/src")}, False),
    ("cp -t outdir x y", {P("outdir/x"), P("outdir/y")}, False),
    ("cp --target-directory=outdir x", {P("outdir/x")}, False),
    ("cp -T a b", {P("b")}, False),
    ("install -m 755 tool bin/tool", {P("bin/tool")}, False),
    ("ln -sf ../target link", {P("link")}, False),
    ("ln -s /opt/thing", {P("thing")}, False),
    ("truncate -s 0 big.log", {P("big.log")}, False),
    ("touch new.txt other.txt", {P("new.txt"), P("other.txt")}, False),
    ("touch -d yesterday stamp", {P("stamp")}, False),
    ("dd if=/dev/zero of=disk.img bs=1M count=1", {P("disk.img")}, False),
    ("sort -o sorted.txt input.txt", {P("sorted.txt")}, False),
    ("uniq in.txt out.txt", {P("out.txt")}, False),
    ("shred -u secret", {P("secret")}, False),
    ("gzip data.csv", {P("data.csv"), P("data.csv.gz")}, False),
    ("gunzip -k archive.gz", {P("archive")}, False),
    ("tar czf backup.tgz src", {P("backup.tgz")}, False),
    ("tar -cf out.tar -C dir .", {P("out.tar")}, False),
    ("curl -sSLo page.html https://example.com", {P("page.html")}, False),
    ("curl -o /tmp/x.json https://example.com/x.json", {"/tmp/x.json"}, False),
    ("wget -O file.zip https://example.com/f.zip", {P("file.zip")}, False),
    ("rsync -a src/ /backup/", {"/backup"}, False),
    ("find . -name '*.py' -fprint list.txt", {P("list.txt")}, False),
    ("patch orig.c < fix.diff", {P("orig.c")}, False),
    ("patch -o patched.c orig.c fix.diff", {P("patched.c")}, False),
    # git writes to the working tree
    ("git checkout -- f.py", {P("f.py")}, False),
    ("git checkout HEAD~1 -- a.py b.py", {P("a.py"), P("b.py")}, False),
    ("git checkout main -- .", {CWD}, False),
    ("git checkout main src/x.py", {P("src/x.py")}, False),
    ("git restore f.py", {P("f.py")}, False),
    ("git restore --source=HEAD~2 --worktree --staged docs/a.md", {P("docs/a.md")}, False),
    ("git rm old.py", {P("old.py")}, False),
    ("git mv a.py b.py", {P("a.py"), P("b.py")}, False),
    ("git -C sub checkout -- x", {P("sub/x")}, False),
    ("git stash push -- f.py", {P("f.py")}, False),
    ("git clean -f tmp/", {P("tmp")}, False),
    # formatters
    ("ruff format .", {CWD}, False),
    ("ruff check --fix src", {P("src")}, False),
    ("black -l 100 a.py b.py", {P("a.py"), P("b.py")}, False),
    ("prettier --write web/app.js", {P("web/app.js")}, False),
    ("gofmt -w main.go", {P("main.go")}, False),
    ("clang-format -i x.c", {P("x.c")}, False),
    # command lists, pipelines, prefixes and cd
    ("cd sub && echo x > f.txt", {P("sub/f.txt")}, False),
    ("cd /tmp; rm a; cd -P ../var && rm b", {"/tmp/a", "/var/b"}, False),
    ("cd sub\nrm f", {P("sub/f")}, False),
    ("(cd sub && rm a); rm b", {P("sub/a"), P("b")}, False),
    ("pushd sub && rm a && popd && rm b", {P("sub/a"), P("b")}, False),
    ("cd && rm junk", {os.path.join(os.path.expanduser("~"), "junk")}, False),
    ("ls; rm a || rm b && rm c | cat & rm d", {P("a"), P("b"), P("c"), P("d")}, False),
    ("sudo rm -rf /opt/app", {"/opt/app"}, False),
    ("sudo -u www-data cp a /srv/b", {"/srv/b"}, False),
    ("env FOO=1 BAR=2 rm x", {P("x")}, False),
    ("FOO=1 rm x", {P("x")}, False),
    ("time rm x", {P("x")}, False),
    ("nohup rm x &", {P("x")}, False),
    ("timeout 10 nice -n 5 rm x", {P("x")}, False),
    ("command rm x", {P("x")}, False),
    ("/bin/rm x", {P("x")}, False),
    ("\\rm x", {P("x")}, False),
    ("if [ -f x ]; then rm x; fi", {P("x")}, False),
    ("while read l; do echo $l; done < in.txt > out.txt", {P("out.txt")}, False),
    ("echo ~/notes.txt > ~/copy.txt", {os.path.join(os.path.expanduser("~"), "copy.txt")}, False),
    ("uv run black x.py", {P("x.py")}, False),
    ("npx prettier --write a.ts", {P("a.ts")}, False),
    ("case $1 in clean) rm -rf out;; *) echo usage;; esac", {P("out")}, False),
    ("echo $(case $x in a) echo A;; esac) > f", {P("f")}, False),
    # command substitutions are scanned
    ("echo $(date) > stamp.txt", {P("stamp.txt")}, False),
    ("x=$(rm f)", {P("f")}, False),
    ("echo `touch t`", {P("t")}, False),
    ("cat <(sort a) > merged", {P("merged")}, False),
    ("git commit -m \"$(cat <<'EOF'\nmsg with ) paren\nEOF\n)\" && rm done.flag", {P("done.flag")}, False),
]

UNCERTAIN = [
    # (command, expected targets, uncertain is True)
    ("rm -rf $BUILD_DIR", {"$BUILD_DIR"}, True),
    ('echo x > "$OUT"', {"$OUT"}, True),
    ("echo x > logs/$(date +%s).log", {P("logs") + "/$(date +%s).log"}, True),
    ("rm *.pyc", {P("*.pyc")}, True),
    ("rm -f build/{a,b}.o", {P("build/{a,b}.o")}, True),
    ('for f in *.txt; do rm "$f"; done', {"$f"}, True),
    ("eval 'rm x'", {P("x")}, True),
    ("eval \"$CMD\"", set(), True),
    ("bash -c 'echo hi > y.txt'", {P("y.txt")}, True),
    ('sh -c "rm a && rm b"', {P("a"), P("b")}, True),
    ("bash -lc 'cd sub && rm z'", {P("sub/z")}, True),
    ("bash script.sh", set(), True),
    ("bash <<'EOF'\nrm inside\nEOF", {P("inside")}, True),
    ("./deploy.sh", set(), True),
    ("python -c 'open(\"x\", \"w\").write(\"y\")'", set(), True),
    ("python3 scripts/migrate.py", set(), True),
    ("python - <<EOF\nprint(1)\nEOF", set(), True),
    ("node -e 'require(\"fs\").writeFileSync(\"a\", \"b\")'", set(), True),
    ("node build.js", set(), True),
    ("ruby -e 'File.write(\"a\", 1)'", set(), True),
    ("perl -e 'open(F, \">x\")'", set(), True),
    ("perl script.pl", set(), True),
    ("awk '{print > \"out\"}' in", set(), True),
    ("find . -name '*.tmp' -delete", set(), True),
    ("find . -name '*.orig' -exec rm {} +", set(), True),
    ("ls *.log | xargs rm", set(), True),
    ("git ls-files -z | xargs -0 sed -i s/a/b/", set(), True),
    ("unzip bundle.zip", set(), True),
    ("unzip -o bundle.zip -d out", set(), True),
    ("tar xzf release.tgz", set(), True),
    ("tar -xf a.tar -C /opt", set(), True),
    ("git checkout feature-branch", set(), True),
    ("git switch main", set(), True),
    ("git reset --hard HEAD~1", {P()}, True),
    ("git stash", {P()}, True),
    ("git stash pop", set(), True),
    ("git pull --rebase", set(), True),
    ("git merge origin/main", set(), True),
    ("git clean -fdx", {P()}, True),
    ("git apply fix.patch", set(), True),
    ("patch -p1 < fix.diff", set(), True),
    ("curl -O https://example.com/a.tgz", set(), True),
    ("wget https://example.com/a.tgz", set(), True),
    ("$EDITOR notes.txt", set(), True),
    ("cd $DIR && rm x", {P("x")}, True),
    ("source .venv/bin/activate", set(), True),
    ("f() { rm x; }; f", {P("x")}, True),
    ("split -l 100 big.txt part_", set(), True),
    ("cat <<EOF > gen.sh\n$(rm -rf x)\nEOF", {P("gen.sh")}, True),
    ("cargo fmt", set(), True),
    ("vim -c 'wq' a.txt", {P("a.txt")}, True),
]

HARMLESS = [
    "ls -la",
    "cat file.txt",
    "grep -rn TODO src/",
    "git status",
    "git diff HEAD~1 -- src/",
    "git log --oneline -n 5",
    "git add -A && git commit -m 'msg'",
    "git checkout -b new-branch",
    "git switch -c topic",
    "git restore --staged f.py",
    "git rm --cached secret.env",
    "git reset HEAD f.py",
    "git stash list",
    "git clean -n",
    "echo hi",
    "echo 'a > b' \"c >> d\"",
    "echo a\\>b",
    "pytest -q tests/",
    "python -m pytest -x",
    "python3 --version",
    "node --version",
    "uv run pytest",
    "wc -l *.py",
    "cmd 2>/dev/null",
    "cmd > /dev/null 2>&1",
    "cmd 2>&1 | head",
    "cmd &>/dev/null",
    "cmd 1>&2",
    "cmd 2>&-",
    "echo x > /dev/stderr",
    "echo x >/dev/tty",
    "cat < input.txt",
    "wc -l <<< 'some text'",
    "diff <(sort a) <(sort b)",
    "[[ $a > $b ]] && echo bigger",
    "(( count > 3 )) && echo many",
    "echo $((2 > 1))",
    "mkdir -p build/out",
    "chmod +x script.sh",
    "sed -n '1,10p' file.txt",
    "sed 's/a/b/' in.txt",
    "perl -ne 'print if /foo/' log.txt",
    "awk '$3 > 100 {print $1}' data.txt",
    "sort -k2 data.txt",
    "find . -name '*.py' -print",
    "tar tzf release.tgz",
    "tar xzf release.tgz -O",
    "unzip -l bundle.zip",
    "gzip -c data > /dev/null",
    "curl -s https://example.com",
    "curl -o - https://example.com",
    "wget -qO- https://example.com",
    "black --check .",
    "ruff check src",
    "prettier --check web",
    "xargs < args.txt",
    "command -v rm",
    "rm",
    "# rm -rf / in a comment",
    "echo hi # > not-a-file",
    "",
    "   \n\n  ",
    "echo \"$(git rev-parse HEAD)\"",
    "git commit -m \"$(cat <<'EOF'\nFix: 1) a > b\n2) (c)\nEOF\n)\"",
    "cd sub && ls",
    "env",
    "time",
    "npm test",
    "make",
]


@pytest.mark.parametrize(("command", "targets", "uncertain"), WRITES + UNCERTAIN, ids=lambda v: repr(v)[:60])
def test_detected_writes(command: str, targets: set[str], uncertain: bool) -> None:
    scan = scan_bash_command(command, CWD)
    assert isinstance(scan, BashWriteScan)
    assert set(scan.targets) == targets, scan
    assert scan.uncertain is uncertain, scan
    if targets or uncertain:
        assert scan.notes, "every finding comes with a reason"


@pytest.mark.parametrize("command", HARMLESS, ids=lambda v: repr(v)[:60])
def test_harmless_commands(command: str) -> None:
    scan = scan_bash_command(command, CWD)
    assert scan == BashWriteScan((), False, ()), scan


def test_table_size() -> None:
    assert len(WRITES) + len(UNCERTAIN) + len(HARMLESS) >= 45


def test_notes_are_readable() -> None:
    assert scan_bash_command("echo hi > out.txt", CWD).notes == ("redirect > to out.txt",)
    assert scan_bash_command("sed -i 's/x/y/' a.txt", CWD).notes == ("sed -i edits a.txt",)
    assert scan_bash_command("python -c 'print(1)'", CWD).notes == ("python -c: writes not parsed",)
    assert "(not expanded)" in scan_bash_command("rm $X", CWD).notes[0]


def test_targets_keep_first_appearance_order_without_duplicates() -> None:
    scan = scan_bash_command("echo a > b.txt; rm a.txt; echo c >> b.txt", CWD)
    assert scan.targets == (P("b.txt"), P("a.txt"))


def test_malformed_input_is_uncertain_with_no_targets() -> None:
    for command in ("echo 'unterminated > x", 'rm "a', "echo $(rm x", "echo `rm x", "(rm x", "echo >",
                    "cat <", "echo ${x", "rm x; echo 'oops"):
        scan = scan_bash_command(command, CWD)
        assert scan.uncertain and scan.targets == (), (command, scan)
        assert scan.notes[0].startswith("could not parse"), scan


def test_huge_input_is_not_scanned() -> None:
    scan = scan_bash_command("echo x > f; " * 20_000, CWD)
    assert scan.uncertain and scan.targets == ()


def test_deep_nesting_does_not_recurse_forever() -> None:
    scan = scan_bash_command("echo " + "$(" * 500 + "rm x" + ")" * 500, CWD)
    assert scan.uncertain
    scan = scan_bash_command("bash -c " + "'bash -c \"" * 50, CWD)
    assert scan.uncertain


def test_non_string_input_never_raises() -> None:
    assert scan_bash_command(None, CWD).uncertain  # type: ignore[arg-type]
    assert scan_bash_command(b"rm x", CWD).targets == (P("x"),)  # type: ignore[arg-type]
    assert scan_bash_command("rm x", "relative/dir").targets == (os.path.abspath("relative/dir/x"),)


def test_existing_directory_destination(tmp_path) -> None:
    (tmp_path / "dest").mkdir()
    (tmp_path / "tracked.py").write_text("x")
    cwd = str(tmp_path)
    assert scan_bash_command("cp a.txt dest", cwd).targets == (str(tmp_path / "dest" / "a.txt"),)
    assert scan_bash_command("mv a.txt dest", cwd).targets == (str(tmp_path / "a.txt"),
                                                               str(tmp_path / "dest" / "a.txt"))
    assert scan_bash_command("ln -s ../x dest", cwd).targets == (str(tmp_path / "dest" / "x"),)
    # `git checkout X` without `--`: a path if it exists, but it could also be a branch
    scan = scan_bash_command("git checkout tracked.py", cwd)
    assert scan.targets == (str(tmp_path / "tracked.py"),) and scan.uncertain


def test_result_is_a_frozen_value() -> None:
    scan = scan_bash_command("rm x", CWD)
    with pytest.raises(AttributeError):
        scan.targets = ()  # type: ignore[misc]
    assert scan == BashWriteScan((P("x"),), False, ("rm deletes x",))
    assert hash(scan) == hash(BashWriteScan((P("x"),), False, ("rm deletes x",)))
    assert pickle.loads(pickle.dumps(scan)) == scan
    assert "BashWriteScan(targets=" in repr(scan)
    match scan:
        case BashWriteScan(targets, uncertain, notes):
            assert targets == (P("x"),) and not uncertain and notes


def test_import_is_light() -> None:
    code = ("import sys; import agent_coherence.adapters.claude_code.bash_writes; "
            "heavy = {'asyncio', 'email', 'pydantic', 'dataclasses', 'inspect', 'typing', 'subprocess', "
            "'shlex', 'tempfile'}; print(sorted(heavy & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=300))
def test_arbitrary_text_never_raises(command: str) -> None:
    scan = scan_bash_command(command, CWD)
    assert isinstance(scan, BashWriteScan)
    assert all(isinstance(t, str) and t for t in scan.targets)
    assert all(isinstance(n, str) for n in scan.notes)
    assert isinstance(scan.uncertain, bool)


_SHELLISH = st.lists(st.sampled_from([
    "rm", "cp", "mv", "sed", "-i", "tee", "-a", ">", ">>", "2>&1", "<<", "EOF", "\n", "|", "&&", ";", "(", ")",
    "$(", "`", "'", '"', "$X", "*", "{a,b}", "cd", "..", "bash", "-c", "x", "f.txt", "git", "checkout", "--",
    "&>", "<(", "\\", "#", "$((", "))", "[[", "]]", "eval", "xargs", "find", "-exec", "{}", ";;", "case", "esac",
]), max_size=40).map(" ".join)


@settings(max_examples=400, deadline=None)
@given(_SHELLISH)
def test_shell_like_token_soup_never_raises(command: str) -> None:
    scan = scan_bash_command(command, CWD)
    assert isinstance(scan, BashWriteScan)
    assert not scan.targets or all(isinstance(t, str) for t in scan.targets)
