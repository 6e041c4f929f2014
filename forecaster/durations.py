"""Human durations (CLI, config, API parameters): `90s`, `5m`, `2h`, `1d`, `1h30m`, or plain seconds."""

from __future__ import annotations

import re

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")


def parse_duration_s(text: str, *, what: str = "duration") -> float:
    t = text.strip().lower()
    try:
        value = float(t)
    except ValueError:
        pass
    else:
        if value <= 0:
            raise ValueError(f"{what} {text!r} must be positive")
        return value
    pos, total = 0, 0.0
    for m in _PART.finditer(t):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(t) or not t or total <= 0:
        raise ValueError(f"{what} {text!r} is not a duration; expected e.g. 90s, 5m, 2h, 1d or 1h30m")
    return total
