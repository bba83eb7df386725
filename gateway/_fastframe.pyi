"""The payload walk of gateway.fastframe in C (gateway/_fastframe.c); optional."""

from typing import Any, final

@final
class Decoder:
    """One kind's payload walk: ``decode(p, device_id, fcnt, tag_len)`` returns
    ``protocol.frame.decoded``'s dict, or None where the protocol must answer."""

    kind: str

    def __new__(cls, name: str, kind_id: int,
                fields: tuple[tuple[str, int, int, bool, bool, int, int], ...]) -> Decoder: ...
    def __call__(self, p: bytes, device_id: int, fcnt: int,
                 tag_len: int, /) -> dict[str, Any] | None: ...
