"""The one rule that turns a device's key or topic level into a field name.

A field name becomes a series name upstream (an InfluxDB field key, the `<measurement>_<field>`
of VictoriaMetrics and Prometheus, an MQTT topic level), so it is kept to what all of them take
unquoted: `[a-z_][a-z0-9_]*`. The rule, documented in docs/drivers.md ("Field names"):

1. letters with accents lose them (Unicode NFKD, combining marks dropped: `Küche` → `kuche`,
   as Home Assistant makes entity ids); a few letters without a decomposition are spelled out
   (`ß` → `ss`, `æ` → `ae`, `ø` → `o`, `µ` → `u`, …);
2. everything is lowercased (`Temperature` from Tasmota and `temperature` from zigbee2mqtt are
   one series; Prometheus and InfluxQL compare names case-sensitively);
3. every run of other characters (dots, spaces, dashes, `°`, `/`, underscores) becomes one `_`,
   and `_` at either end is dropped (`PM2.5` → `pm2_5`, `Temp °C` → `temp_c`);
4. a name starting with a digit gets a leading `_` (`1st floor` → `_1st_floor`).

The rule is idempotent; a key with no letter or digit has no name.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Container

FIELD_NAME_RE = re.compile(r"[a-z_][a-z0-9_]*")
_OTHERS = re.compile(r"[^a-z0-9]+")
# Letters NFKD does not decompose; spelled as Home Assistant's slugify (text-unidecode) does.
_SPELLED = str.maketrans(
    {
        "ß": "ss",
        "ẞ": "ss",
        "æ": "ae",
        "Æ": "ae",
        "œ": "oe",
        "Œ": "oe",
        "ø": "o",
        "Ø": "o",
        "ł": "l",
        "Ł": "l",
        "đ": "d",
        "Đ": "d",
        "ð": "d",
        "Ð": "d",
        "þ": "th",
        "Þ": "th",
        "µ": "u",
        "μ": "u",
    }
)


def field_name(raw: str) -> str:
    """`raw` (a key, a path, topic levels) as a field name by the rule above; "" if none."""
    plain = unicodedata.normalize("NFKD", raw.translate(_SPELLED))
    plain = "".join(c for c in plain if not unicodedata.combining(c)).lower()
    name = _OTHERS.sub("_", plain).strip("_")
    return "_" + name if name[:1].isdigit() else name


def check_field_name(name: str, key: str) -> None:
    """ValueError unless `name`, configured under `key`, already follows the rule."""
    if field_name(name) != name or not name:
        better = field_name(name)
        fix = f"write {better!r}" if better else "use letters, digits and _"
        raise ValueError(
            f"{key}: field name {name!r} is not of the form [a-z_][a-z0-9_]*: {fix} "
            "(see 'Field names' in docs/drivers.md)"
        )


def device_field_name(key: str, taken: Container[str], drop: Callable[[str], None]) -> str | None:
    """The field name for a device's `key`, or None when it makes none or one already `taken`.

    None comes with the reason passed to `drop` (the driver counts it and logs it once): the
    value is left out, the rest of the reading kept.
    """
    name = field_name(key)
    if not name or name in taken:
        drop(f"key {key!r} makes no field name or one already taken: left out")
        return None
    return name
