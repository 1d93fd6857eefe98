"""Write docs/config.md from the config types (pilog/config_reference.py).

.venv/bin/python tools/gen_config_reference.py
"""

from __future__ import annotations

from pathlib import Path

from pilog.config_reference import render

if __name__ == "__main__":
    target = Path(__file__).resolve().parent.parent / "docs" / "config.md"
    target.write_text(render())
    print(f"wrote {target}")
