"""UUIDs made on the request path without `uuid.UUID.__init__`.

That constructor first works through the checks of its six ways of being called (hex text with
or without braces, bytes, little-endian bytes, fields, an int), a few thousand instructions,
for every id a quote request carries or is given. Here the caller already holds the int, or
text it has checked to be the canonical form, and the UUID gets what `__init__` would set.
"""

from __future__ import annotations

import uuid

_new, _set = object.__new__, object.__setattr__
_SAFE_UNKNOWN = uuid.SafeUUID.unknown


def uuid_from_int(bits: int) -> uuid.UUID:
    """`uuid.UUID(int=bits)` for 0 <= bits < 2**128 (the caller's to hold)."""
    made = _new(uuid.UUID)
    _set(made, "int", bits)
    _set(made, "is_safe", _SAFE_UNKNOWN)
    return made


def uuid_from_canonical(text: str) -> uuid.UUID:
    """`uuid.UUID(text)` for text already held to the 8-4-4-4-12 hex form."""
    return uuid_from_int(int(text.replace("-", ""), 16))
