"""Names of the view collection sets in MongoDB, shared by the projector (writes) and the query
service (reads). A *set* is one complete copy of the views with its own tracking: `orders`,
`customers`, `products`, `processed` and a watermark document in `projector_state`.

The set named "" is the original one (unsuffixed collections, watermark document
`watermark`), so a database written before rebuilds existed needs no migration. A rebuild
creates the set `r<N>` (`orders_r3`, ..., watermark document `watermark_r3`). The pointer
document `projector_state/views` names the live set; without it the live set is "".
"""

from __future__ import annotations

import re

STATE = "projector_state"
POINTER_ID = "views"
VIEW_COLLECTIONS = ("orders", "customers", "products")
SET_COLLECTIONS = (*VIEW_COLLECTIONS, "processed")
# how long a process may use a pointer it read; writers (the rebuild) wait PROPAGATION_S after
# changing the pointer before they rely on every process having seen the change
POINTER_TTL_S = 0.5
PROPAGATION_S = 4 * POINTER_TTL_S
# a rebuild renews its heartbeat every few seconds; a building set whose heartbeat is older
# belongs to a rebuild that died: projectors stop writing it, the next rebuild drops it
BUILD_LEASE_S = 30.0

_SET_NAME = re.compile(r"^r[1-9][0-9]{0,8}$")
_SUFFIXED = re.compile(r"^(orders|customers|products|processed)_(r[1-9][0-9]{0,8})$")


def is_set_name(name: str) -> bool:
    return name == "" or bool(_SET_NAME.match(name))


def collection(base: str, view_set: str) -> str:
    """`collection("orders", "r2") == "orders_r2"`; the original set keeps plain names."""
    if base not in SET_COLLECTIONS or not is_set_name(view_set):
        raise ValueError(f"bad collection {base!r} of set {view_set!r}")
    return base if view_set == "" else f"{base}_{view_set}"


def watermark_id(view_set: str) -> str:
    if not is_set_name(view_set):
        raise ValueError(f"bad set name {view_set!r}")
    return "watermark" if view_set == "" else f"watermark_{view_set}"


def set_of_collection(name: str) -> str | None:
    """The set a collection belongs to, or None when it is not a set collection."""
    if name in SET_COLLECTIONS:
        return ""
    m = _SUFFIXED.match(name)
    return m.group(2) if m else None


def live_set(pointer: dict | None) -> str:
    """The live set named by a pointer document (None: no rebuild ever ran)."""
    if not pointer:
        return ""
    name = pointer.get("live", "")
    return name if isinstance(name, str) and is_set_name(name) else ""
