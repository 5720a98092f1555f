"""WebSocket frames the server writes itself (RFC 6455 section 5.2)."""

from __future__ import annotations

import struct

#: The two bytes that start a text frame of each payload length under 126
#: (every reply but the longest errors), made once rather than per reply.
_SHORT_HEADERS = tuple(bytes((0x81, length)) for length in range(126))


def text_frame(text: str) -> bytes:
    """``text`` as one unmasked, uncompressed WebSocket text frame, as a server sends it."""
    payload = text.encode()
    length = len(payload)
    if length < 126:
        return _SHORT_HEADERS[length] + payload
    if length <= 0xFFFF:
        return struct.pack("!BBH", 0x81, 126, length) + payload
    return struct.pack("!BBQ", 0x81, 127, length) + payload
