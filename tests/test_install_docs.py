"""The docs install pilog the ways that work today: a wheel built from the source, or git."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = [
    ROOT / "README.md",
    *sorted((ROOT / "docs").rglob("*.md")),
    *sorted((ROOT / "pilog").rglob("README.md")),
]
# Up to the end of the inline code, the line, or a shell comment.
PIP_INSTALL = re.compile(r"pip install ([^`\n#]*)")


def pilog_requirements() -> list[tuple[str, str]]:
    """Each (page, argument) of a `pip install` in the docs that names pilog itself."""
    found = []
    for page in PAGES:
        for args in PIP_INSTALL.findall(page.read_text(encoding="utf-8")):
            try:
                words = shlex.split(args)
            except ValueError:  # an apostrophe in the prose after the command
                words = args.split()
            for word in words:
                if re.match(r"pilog\b", word):
                    found.append((str(page.relative_to(ROOT)), word))
    return found


def test_no_page_installs_pilog_by_a_name_pip_would_look_up_on_pypi() -> None:
    # No release is published: "pilog" or "pilog[mqtt]" alone would ask PyPI for it.
    by_name = [(page, word) for page, word in pilog_requirements() if "@" not in word]
    assert by_name == []


def test_the_install_page_shows_the_wheel_and_the_git_url() -> None:
    page = (ROOT / "docs" / "install.md").read_text(encoding="utf-8")
    assert "python3 -m pip wheel --no-deps -w dist ." in page
    assert "'pilog @ git+<repository-url>'" in page
    assert "this project's repository URL" in page
    assert ("docs/install.md", "pilog[mqtt] @ git+<repository-url>") in pilog_requirements()
