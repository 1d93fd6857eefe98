"""The docs' examples run as written.

Every pilog.toml example in the README and docs/ is a config pilog accepts, and every `pilog`
command they show (shell blocks and inline code) is a command pilog has, with flags it takes.
"""

from __future__ import annotations

import functools
import re
import shlex
import tomllib
from pathlib import Path

import pytest
from helpers import Running, pilog, wait_until

from pilog.config import parse_config

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def examples() -> list[tuple[str, str]]:
    found = []
    for page in PAGES:
        blocks = re.findall(r"```toml\n(.*?)```", page.read_text(encoding="utf-8"), re.S)
        for i, block in enumerate(blocks):
            if re.search(r"^\s*\[project[].]", block, re.M):
                continue  # a package's pyproject.toml, not a pilog config
            found.append((f"{page.relative_to(ROOT)}#{i}", block))
    return found


@pytest.mark.parametrize(("where", "block"), examples(), ids=[w for w, _ in examples()])
def test_the_example_is_a_valid_config(where: str, block: str) -> None:
    parse_config(tomllib.loads(block), where, {})


def test_the_docs_have_examples() -> None:
    assert len(examples()) >= 5


# -- pilog commands in the docs ---------------------------------------------------------------

# Placeholders and what a shell line may hold besides the command: a line ends at a comment or
# at the next command (`|`, `&&`, `;`, a redirect).
_SHELL_LANGS = {"sh", "bash", "shell", "console"}
_COMMAND_END = {"|", "||", "&&", ";", ">", ">>", "2>&1", "<"}
_FLAG = re.compile(r"^--?[a-zA-Z][\w-]*")


def _tokens(text: str) -> list[str]:
    """`text` split as the shell would, with the docs' `[optional]` brackets and `\\|` undone."""
    text = text.replace("\\|", "|").replace("[", " ").replace("]", " ")
    try:
        return shlex.split(text, comments=True)
    except ValueError:  # an unbalanced quote in prose
        return text.split()


def _invocations(tokens: list[str]) -> list[list[str]]:
    """The arguments after each `pilog` program in `tokens` (not `-u pilog`, `--name pilog`)."""
    found = []
    for i, tok in enumerate(tokens[:-1]):
        is_program = tok == "pilog" or tok.endswith("/bin/pilog")
        after_flag = i > 0 and tokens[i - 1].startswith("-") and tokens[i - 1] != "--"
        if is_program and not after_flag and re.fullmatch(r"[a-z][a-z-]*|--\w+", tokens[i + 1]):
            if tokens[i + 1] == "pilog":
                continue  # `docker exec pilog pilog status`: the container, then the program
            args = []
            for arg in tokens[i + 1 :]:
                if arg in _COMMAND_END:
                    break
                args.append(arg)
            found.append(args)
    return found


def command_examples() -> list[tuple[str, list[str]]]:
    """Every `pilog ...` in the docs' shell blocks and inline code, with where it is."""
    found = []
    for page in [*PAGES, *sorted((ROOT / "pilog" / "drivers").glob("*/README.md"))]:
        text = page.read_text(encoding="utf-8")
        where = str(page.relative_to(ROOT))
        for lang, block in re.findall(r"```(\w*)[^\n]*\n(.*?)```", text, re.S):
            if lang in _SHELL_LANGS:
                for line in block.splitlines():
                    found += [(where, args) for args in _invocations(_tokens(line))]
        prose = re.sub(r"```.*?```", "", text, flags=re.S)
        for span in re.findall(r"`([^`\n]+)`", prose):
            if span.startswith("pilog "):
                found += [(where, args) for args in _invocations(_tokens(span))]
    return found


@functools.cache
def help_text(*command: str) -> str:
    """`pilog COMMAND --help`, wide enough that no flag is cut; "" if there is no such command."""
    result = pilog(*command, "--help", env={"COLUMNS": "250"})
    return result.stdout if result.returncode == 0 else ""


def command_path(args: list[str]) -> list[str]:
    """The (sub)command that `args` runs: `["show", "rollup"]` for `show rollup --sensor x`."""
    path = [args[0]]
    if "Commands" in help_text(*path) and len(args) > 1 and not args[1].startswith("-"):
        path.append(args[1])
    return path


@pytest.mark.parametrize(
    ("where", "args"),
    command_examples(),
    ids=[f"{w}:{' '.join(a)}" for w, a in command_examples()],
)
def test_the_docs_pilog_command_exists_with_those_flags(where: str, args: list[str]) -> None:
    if args[0].startswith("-"):  # `pilog --version`
        path: list[str] = []
        flags = [args[0]]
    else:
        path = command_path(args)
        flags = [a for a in args[len(path) :] if _FLAG.match(a)]
    text = help_text(*path)
    assert text, f"{where}: `pilog {' '.join(path)}` is no pilog command"
    offered = set(_FLAG.findall(text)) | set(re.findall(r"(?<![\w-])--?[a-zA-Z][\w-]*", text))
    for flag in flags:
        name = _FLAG.match(flag)
        assert name, flag
        assert name.group(0) in offered, f"{where}: `pilog {' '.join(args)}`: no {name.group(0)}"


def test_the_docs_name_every_command() -> None:
    named = {a[0] for _, a in command_examples()}
    commands = re.findall(r"│ (\w[\w-]*) ", help_text())
    assert commands, "pilog --help lists its commands"
    assert not set(commands) - named, f"undocumented commands: {set(commands) - named}"


def readme_quick_start() -> list[list[str]]:
    """The README's commands to try "while it runs", minus those that follow or need a name."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = next(b for b in re.findall(r"```sh\n(.*?)```", text, re.S) if "pilog status" in b)
    commands = [args for line in block.splitlines() for args in _invocations(_tokens(line))]
    # `-f` never ends; NAME is the reader's own sink.
    return [a for a in commands if "-f" not in a and not any(x.isupper() for x in a)]


def test_the_readme_quick_start_commands_run_as_written(tmp_path: Path) -> None:
    commands = readme_quick_start()
    assert len(commands) >= 8, commands
    # `scripts/run` is `pilog run` on the embedded default, in the current directory.
    with Running("run", cwd=tmp_path) as run:
        run.stderr.wait_for(lambda line: "pilog running" in line, "pilog to start")
        wait_until(
            lambda: '"reading"' in pilog("tail", "--json", "--from", "0", cwd=tmp_path).stdout,
            "a first reading",
        )
        for args in commands:
            result = pilog(*args, cwd=tmp_path)
            assert result.returncode == 0, f"pilog {' '.join(args)}: {result.stderr}"
            assert "Traceback" not in result.stderr
        assert run.stop() == 0


@pytest.mark.parametrize("page", ["docs/drivers.md", "docs/config.md"])
def test_the_pages_on_sensors_tell_how_to_see_a_drivers_options(page: str) -> None:
    text = " ".join((ROOT / page).read_text(encoding="utf-8").split())
    assert "`pilog drivers NAME`" in text
    assert "`pilog drivers NAME --json`" in text
