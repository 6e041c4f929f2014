"""A decision record as a patch of an earlier one: the store keeps a steady model's decisions compactly.

A model's decisions differ from tick to tick in a few values (the time, the look-ahead window, the observed
rate and the sentences that quote them) and keep their shape (the same stages, the same inputs). A patch is
the list of `[path, value]` pairs where a record differs from its base, a path being the keys and list
indices down to the value; applying it to the base gives the record back exactly (values are copied, never
recomputed). Records of another shape (a stage more or less, an input added) get no patch.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

Path = list[str | int]
Patch = list[list[Any]]  # [[path, value], ...]


def diff(base: Mapping[str, Any], record: Mapping[str, Any], limit: int) -> Patch | None:
    """The patch that turns `base` into `record`, or None when their shapes differ or it would hold more
    than `limit` values (then the record is worth storing whole)."""
    out: Patch = []
    return out if _diff(base, record, [], out, limit) else None


def _diff(a: Any, b: Any, path: Path, out: Patch, limit: int) -> bool:
    """Append to `out` the values where `b` differs from `a` (which differ); False when it cannot."""
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return False
        pairs: Any = a.items()
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return False
        pairs = enumerate(a)
    else:
        return False  # two records that are not both mappings (below the top, values are compared here)
    for k, v in pairs:
        w = b[k]
        # 1 and 1.0 are equal, and written differently: a changed type is a changed value
        if v == w and type(v) is type(w):
            continue
        if (isinstance(v, dict) and isinstance(w, dict)) or (isinstance(v, list) and isinstance(w, list)):
            if not _diff(v, w, [*path, k], out, limit):  # two containers: only what differs inside
                return False
        else:  # a value (the commonest change: compared here, not in a call of its own per value)
            out.append([[*path, k], w])
            if len(out) > limit:
                return False
    return True


def apply(base: Mapping[str, Any], patch: Patch) -> dict[str, Any]:
    """`base` with every value of `patch` set (the base itself is left as it was)."""
    out = copy.deepcopy(dict(base))
    for path, value in patch:
        node = out
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return out
