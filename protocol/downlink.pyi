from typing import Any

from .ccm import BlockFn

CONTROL: int
HEADER_LEN: int
TAG_LEN: int
DIR_DOWNLINK: int
MIN_DOWNLINK: int
MAX_DOWNLINK: int
MAX_DCNT: int
MAX_COMMANDS: int
MAX_CONFIG: int
MAX_CMD_ID: int
MAX_BUNDLE: int

DL_SHORT: str
DL_LONG: str
DL_FORMAT: str
DL_DEVICE: str
DL_FORGED: str
DL_REPLAY: str
DL_ORDER: str
DL_PAYLOAD: str
DL_REASONS: tuple[str, ...]

OP_CLOCK: int
OP_CONFIG: int
OP_ACK_ALARM: int
OP_REKEY: int
OP_REKEY_DONE: int
OP_REBOOT: int
OP_UPD_BEGIN: int
OP_UPD_CHUNK: int
OP_UPD_SWITCH: int

RESULTS: tuple[str, ...]
APPLIED: int
CMD_UNKNOWN: int
CMD_ARGS: int
CMD_RANGE: int
CMD_KEY: int
CMD_STATE: int
CMD_HASH: int
CMD_STALE: int
CMD_ORDER: int

CONFIG_KEYS: tuple[tuple[int, str, str, int, int], ...]

FLAG_WANT: int
FLAG_CLOCK: int
FLAG_ALARM: int
FLAG_REKEY: int
FLAG_UPDATE: int
MAX_REPORT: int
REPORT_FIELD: tuple[Any, ...]
EU868_MAX_PAYLOAD: dict[int, int]

_Command = list[Any]
_Buffer = bytes | bytearray | memoryview

def header(device_id: int, dcnt: int) -> bytes: ...
def nonce(device_id: int, dcnt: int) -> bytes: ...
def parse_header(buf: _Buffer) -> tuple[int, int]: ...
def open_with(buf: _Buffer, device_id: int, dcnt: int, block: BlockFn) -> bytes: ...
def commands(plain: bytes) -> list[_Command]: ...
def encode(device_id: int, dcnt: int, cmds: list[_Command], key: bytes,
           block: BlockFn | None = ...) -> bytes: ...
def decode(buf: _Buffer, key: bytes, block: BlockFn | None = ...) -> dict[str, Any]: ...
def clock(cmd_id: int, up_fcnt: int, unix_s: int, ms: int) -> _Command: ...
def config(cmd_id: int, values: dict[int, int]) -> _Command: ...
def ack_alarm(cmd_id: int, bits: int) -> _Command: ...
def rekey(cmd_id: int, key_no: int, new_key: bytes) -> _Command: ...
def rekey_done(cmd_id: int, key_no: int) -> _Command: ...
def reboot(cmd_id: int) -> _Command: ...
def upd_begin(cmd_id: int, upd_no: int, size: int) -> _Command: ...
def upd_chunk(cmd_id: int, upd_no: int, offset: int, data: bytes) -> _Command: ...
def upd_switch(cmd_id: int, upd_no: int) -> _Command: ...
def chunk_capacity(sf: int, cmd_id: int = ..., upd_no: int = ..., offset: int = ...) -> int: ...
def config_entry(code: int) -> tuple[int, str, str, int, int] | None: ...
def config_check(code: int, value: object) -> int: ...
def report_entry(cmd_id: int, result: int, detail: int = ...) -> int: ...
def parse_report(series: list[int]) -> tuple[int, list[tuple[int, str, int]]]: ...
def path_ok(path: object) -> bool: ...
def bundle(files: list[tuple[str, bytes]]) -> bytes: ...
