"""A downlink command as the store keeps it: the ops (``OPS``), the states, the
``Command`` record and how a row of ``dl_commands`` becomes one (``COLUMNS``,
``command_of_row``). gateway.downlinks keeps the table and draws the states' order;
gateway.downlink_rekey moves ``rekey`` commands too.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from knute.protocol import downlink as dls

# Command ops as the CLI, MQTT and the store name them -> the wire op.
OPS: dict[str, int] = {
    "time": dls.OP_CLOCK,
    "config": dls.OP_CONFIG,
    "ack": dls.OP_ACK_ALARM,
    "rekey": dls.OP_REKEY,
    "rekey_done": dls.OP_REKEY_DONE,
    "reboot": dls.OP_REBOOT,
    "upd_begin": dls.OP_UPD_BEGIN,
    "upd_chunk": dls.OP_UPD_CHUNK,
    "upd_switch": dls.OP_UPD_SWITCH,
}

QUEUED = "queued"
SENT = "sent"
APPLIED = "applied"
REJECTED = "rejected"
EXPIRED = "expired"
CANCELLED = "cancelled"
STATES = (QUEUED, SENT, APPLIED, REJECTED, EXPIRED, CANCELLED)
OPEN_STATES = (QUEUED, SENT)


@dataclass(frozen=True)
class Command:
    """One command and its progress."""

    device_id: int
    cmd_id: int
    op: str
    args: dict[str, Any]
    state: str
    created_at: float
    expires_at: float
    updated_at: float
    ref: str | None = None
    result: str | None = None
    detail: int | None = None
    sends: int = 0
    dcnt: int | None = None
    up_fcnt: int | None = None

    @property
    def open(self) -> bool:
        """Still to be sent or waiting for the node's report."""
        return self.state in OPEN_STATES

    def as_dict(self) -> dict[str, Any]:
        """The command as JSON (``knute devices show``, the MQTT status message)."""
        out: dict[str, Any] = {
            "device": f"{self.device_id:08x}", "cmd_id": self.cmd_id, "id": self.ref,
            "op": self.op, "args": _public_args(self.op, self.args), "state": self.state,
            "created_at": self.created_at, "expires_at": self.expires_at,
            "updated_at": self.updated_at, "sends": self.sends}
        if self.result is not None:
            out["result"] = self.result
            out["detail"] = self.detail
        return out


def _public_args(op: str, args: dict[str, Any]) -> dict[str, Any]:
    """Arguments fit to print: never a key, never a bundle's bytes."""
    if op == "rekey":
        out = {"key_no": args.get("key_no")}
        if "waiting_for" in args:
            out["waiting_for"] = args["waiting_for"]
        return out
    if op == "upd_chunk":
        return {k: v for k, v in args.items() if k != "data"}
    return dict(args)


# The columns of dl_commands that make a Command, in command_of_row's order.
COLUMNS = ("device_id, cmd_id, op, args, state, created_at, expires_at, updated_at, ref, "
           "result, detail, sends, dcnt, up_fcnt")


def command_of_row(row: Sequence[Any]) -> Command:
    """The Command of a ``SELECT {COLUMNS} FROM dl_commands`` row."""
    return Command(device_id=int(row[0]), cmd_id=int(row[1]), op=str(row[2]),
                   args=json.loads(row[3]), state=str(row[4]), created_at=float(row[5]),
                   expires_at=float(row[6]), updated_at=float(row[7]), ref=row[8],
                   result=row[9], detail=row[10], sends=int(row[11]), dcnt=row[12],
                   up_fcnt=row[13])
