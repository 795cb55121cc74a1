"""File-system safe, injective keys for video ids, and layer array names.

A video id is whatever the user's dataset calls a video ("video_test_0000004", "a/b", "ünï cödé").
Inside a store every video lives in a directory named ``safe_key(video_id)``:

* unicode letters and digits and the three characters ``- _ .`` are kept as they are;
* every other character (``/``, ``~``, ``%``, spaces, control characters, punctuation, combining
  marks, ...) is written as ``~XX`` per byte of its UTF-8 encoding (lower-case hex);
* a leading ``.``, ``_`` or ``-`` is escaped too, so a key is never ``.``/``..``, never hidden,
  never collides with the store's own ``_tmp``/``_locks`` entries and is never read as a command
  option by a shell glob (``rm *``);
* a key longer than :data:`MAX_KEY_BYTES` once escaped (file systems limit a name to 255 bytes,
  and the store appends suffixes such as ``.lock``) is cut to a prefix and ends in ``~~`` plus
  32 hex digits of the SHA-256 of the whole id.  ``~~`` never occurs in an escaped key, so hashed
  and plain keys cannot collide, and two ids share a hashed key only if they share the hash.

The mapping is injective (``~`` only ever starts an escape or the hash suffix); :func:`unsafe_key`
inverts plain keys (a hashed key's id is read from the video's attrs, where the store records it).
Keys are case-sensitive: on a case-insensitive file system two ids differing only in case share a
directory; publishing the second then fails loudly instead of overwriting the first.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

__all__ = ["MAX_KEY_BYTES", "HASH_MARK", "safe_key", "unsafe_key", "is_hashed_key", "layer_name",
           "parse_layer_name"]

#: Longest key in UTF-8 bytes; leaves room for suffixes within the usual 255-byte name limit.
MAX_KEY_BYTES = 240
#: Separates the prefix of an over-long key from its hash (cannot occur in an escaped key).
HASH_MARK = "~~"
_HASH_HEX = 32

_PLAIN = frozenset("-_.")
_ESCAPE_RE = re.compile(r"(?:~[0-9a-f]{2})+")
_LAYER_RE = re.compile(r"^layer_(\d{2,})$")


def _keep(ch: str) -> bool:
    """True when `ch` may appear verbatim in a key (unicode letter/digit or one of ``-_.``)."""
    if ch in _PLAIN:
        return True
    if ch.isascii():
        return ch.isalnum()
    return unicodedata.category(ch)[0] in "LN"


def _escape(ch: str) -> str:
    return "".join(f"~{b:02x}" for b in ch.encode("utf-8", "surrogatepass"))


def safe_key(video_id: str) -> str:
    """Return the store key of `video_id` (at most MAX_KEY_BYTES bytes); ValueError for an empty
    or non-string id."""
    if not isinstance(video_id, str):
        raise ValueError(f"video id must be a string, got {type(video_id).__name__}: {video_id!r}")
    if not video_id:
        raise ValueError("video id must not be empty")
    parts = []
    for i, ch in enumerate(video_id):
        if _keep(ch) and not (i == 0 and ch in "._-"):
            parts.append(ch)
        else:
            parts.append(_escape(ch))
    if sum(len(p.encode("utf-8")) for p in parts) <= MAX_KEY_BYTES:
        return "".join(parts)
    digest = hashlib.sha256(video_id.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_HEX]
    room = MAX_KEY_BYTES - len(HASH_MARK) - _HASH_HEX
    prefix, used = [], 0
    for p in parts:  # whole characters / escapes only, so the prefix stays a canonical key
        size = len(p.encode("utf-8"))
        if used + size > room:
            break
        prefix.append(p)
        used += size
    return "".join(prefix) + HASH_MARK + digest


def is_hashed_key(key: str) -> bool:
    """True for the key of an over-long id (prefix + ``~~`` + hash), which unsafe_key cannot invert."""
    return HASH_MARK in key


def unsafe_key(key: str) -> str:
    """Inverse of :func:`safe_key`; ValueError if `key` is not a canonical key."""
    if not isinstance(key, str) or not key:
        raise ValueError(f"not a video key: {key!r}")
    if is_hashed_key(key):
        raise ValueError(f"hashed key of an over-long id (the id is in the video's attrs): {key!r}")

    def _decode(match: re.Match[str]) -> str:
        raw = bytes.fromhex(match.group(0).replace("~", ""))
        try:
            return raw.decode("utf-8", "surrogatepass")
        except UnicodeDecodeError as exc:
            raise ValueError(f"not a video key (bad escape): {key!r}") from exc

    video_id = _ESCAPE_RE.sub(_decode, key)
    try:
        canonical = safe_key(video_id)
    except ValueError as exc:
        raise ValueError(f"not a video key: {key!r}") from exc
    if canonical != key:
        raise ValueError(f"not a video key (non-canonical escaping): {key!r}")
    return video_id


def layer_name(layer: int) -> str:
    """Array name of a 1-based block index: ``layer_name(8) == "layer_08"``."""
    if isinstance(layer, bool) or not isinstance(layer, int) or layer < 1:
        raise ValueError(f"layer must be a positive int (1-based block index), got {layer!r}")
    return f"layer_{layer:02d}"


def parse_layer_name(name: str) -> int | None:
    """Block index of a ``layer_XX`` array name, or None for any other name."""
    m = _LAYER_RE.match(name)
    if m is None:
        return None
    value = int(m.group(1))
    return value if value >= 1 and layer_name(value) == name else None
