"""docs/install.md holds the install commands tools/arm_check.py runs for arm64 and armhf; the
tool reads pip's output for what it compiled."""

from __future__ import annotations

import functools
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


@functools.cache
def arm_check() -> ModuleType:
    """tools/arm_check.py as a module (tools/ is not a package), loaded once."""
    spec = importlib.util.spec_from_file_location("arm_check", ROOT / "tools" / "arm_check.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["arm_check"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def test_install_doc_has_commands_for_both_arches_that_install_the_wheel() -> None:
    tool = arm_check()
    blocks = tool.command_blocks(tool.INSTALL_DOC.read_text(encoding="utf-8"))
    for target in ("arm64", "armhf", "armhf-pip"):
        script = "\n".join(blocks[target])
        assert tool.WHEEL_PLACEHOLDER in script, target
        assert f"{tool.VENV}/bin/pip install" in script, target
        assert "apt install" in script, target
    assert {tool.debian_arch(t) for t in blocks} == set(tool.QEMU_BINFMT)


def test_each_target_starts_with_its_apt_commands_which_the_check_caches() -> None:
    tool = arm_check()
    blocks = tool.command_blocks(tool.INSTALL_DOC.read_text(encoding="utf-8"))
    for target, scripts in blocks.items():
        apt, rest = tool.split_apt("\n".join(scripts))
        assert "sudo apt install" in apt, target
        assert "apt" not in rest.split(), target
        assert tool.WHEEL_PLACEHOLDER in rest, target


def test_a_marker_without_a_command_block_is_an_error() -> None:
    tool = arm_check()
    page = "<!-- arm-check: arm64 -->\n```toml\nx = 1\n```\n"
    with pytest.raises(ValueError, match="not followed"):
        tool.command_blocks(page)


def test_one_marker_can_name_several_targets() -> None:
    tool = arm_check()
    page = "<!-- arm-check: arm64, armhf -->\n```sh\necho hi\n```\n"
    assert tool.command_blocks(page) == {"arm64": ["echo hi\n"], "armhf": ["echo hi\n"]}


def test_pip_output_gives_each_compile_and_its_time() -> None:
    tool = arm_check()
    lines = [
        (1.0, "Collecting lmdb>=1.4"),
        (2.0, "  Installing build dependencies: started"),
        (80.0, "  Installing build dependencies: finished with status 'done'"),
        (81.0, "  Using cached msgspec-0.23.0-cp311-cp311-linux_armv7l.whl"),
        (82.0, "  Using cached pydantic_core-2.50.5-cp311-cp311-manylinux_2_17_armv7l.whl"),
        (90.0, "  Building wheel for lmdb (pyproject.toml): started"),
        (95.0, "  Building wheel for lmdb (pyproject.toml): still running..."),
        (180.0, "  Building wheel for lmdb (pyproject.toml): finished with status 'done'"),
    ]
    figures = tool.Figures("armhf-pip")
    tool.pip_builds(lines, figures)
    assert figures.builds == {"lmdb's build dependencies": 78.0, "lmdb": 90.0}
    assert figures.cached_builds == ["msgspec"]


def test_apt_lines_of_later_blocks_run_with_the_leading_ones() -> None:
    tool = arm_check()
    script = "sudo apt update\nsudo apt install a\npip install x\nsudo apt install b\npip y\n"
    assert tool.split_apt(script) == (
        "sudo apt update\nsudo apt install a\nsudo apt install b\n",
        "pip install x\npip y\n",
    )
