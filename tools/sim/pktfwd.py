"""A LoRa packet forwarder's side of the Semtech UDP protocol (version 2), for simulators.

PUSH_DATA carries received packets as ``rxpk`` JSON and is answered by PUSH_ACK
with the same token; PULL_DATA is the keep-alive a forwarder sends every few
seconds, answered by PULL_ACK. Identifiers: PUSH_DATA 0x00, PUSH_ACK 0x01,
PULL_DATA 0x02, PULL_ACK 0x04. Each datagram starts with the protocol version
(2), a 2-byte random token and the identifier; PUSH_DATA and PULL_DATA then
carry the forwarder's 8-byte gateway EUI.
"""

from __future__ import annotations

import base64
import json
import math
import os
import random
import socket
import time
from typing import Any

PROTOCOL_VERSION = 2
PUSH_DATA, PUSH_ACK, PULL_DATA, PULL_RESP, PULL_ACK = 0x00, 0x01, 0x02, 0x03, 0x04

EU868_CHANNELS_MHZ = (868.1, 868.3, 868.5, 867.1, 867.3, 867.5, 867.7, 867.9)
LSNR_MAX_DB = 13.5          # an SX1301 reports no better SNR than about this


class NodeLink:
    """One simulated node's radio link: a place in the district, its mean signal, its SF.

    The same model as ``knute plan`` (tools.sim.radio): the node sits uniformly in
    a disc around the concentrator, its median path loss is Okumura-Hata urban
    with log-normal shadowing, and its SF is the fastest whose demodulation floor
    the mean SNR clears by the installation margin (as it would be set at
    provisioning from a link check). Seeded by the device id, so a node keeps
    its SF and signal from run to run. Each uplink hops to a channel of the
    plan and adds a little fading.
    """

    def __init__(self, device_id: int, seed: int = 1, radius_km: float = 2.0,
                 margin_db: float = 10.0) -> None:
        from knute.tools.sim.radio import HATA_SIGMA_DB, NOISE_DBM, choose_sf, hata_urban_db

        rng = random.Random(f"knute-link/{seed}/{device_id}")
        d_km = max(0.05, radius_km * math.sqrt(rng.random()))
        self.rssi_dbm = 14.0 - hata_urban_db(d_km) - rng.gauss(0.0, HATA_SIGMA_DB)
        self.snr_db = self.rssi_dbm - NOISE_DBM
        self.sf = choose_sf(self.snr_db, margin_db)

    def heard_by(self, payload: bytes, rng: random.Random, count: int = 1
                 ) -> list[dict[str, Any]]:
        """One uplink as ``count`` concentrators report it: one ``rxpk`` each.

        All on the channel the node hopped to and at its SF; the first hears the
        node's own mean signal (with a little fading), the others a few dB less.
        """
        chan = rng.randrange(len(EU868_CHANNELS_MHZ))
        out = []
        for n in range(count):
            fade = rng.gauss(0.0, 2.0) - (rng.uniform(0.0, 10.0) if n else 0.0)
            out.append(rxpk(payload, rssi_dbm=round(self.rssi_dbm + fade),
                            lsnr_db=round(min(self.snr_db + fade, LSNR_MAX_DB), 1),
                            freq_mhz=EU868_CHANNELS_MHZ[chan], sf=self.sf, chan=chan))
        return out


def node_links(seed: int = 1) -> Any:
    """A dict-like cache device id -> NodeLink (created on first use)."""

    class _Links(dict[int, NodeLink]):
        def __missing__(self, device_id: int) -> NodeLink:
            link = self[device_id] = NodeLink(device_id, seed)
            return link

    return _Links()


def rxpk(payload: bytes, *, rssi_dbm: int, lsnr_db: float, freq_mhz: float, sf: int,
         chan: int = 0, tmst: int | None = None, stat: int = 1) -> dict[str, Any]:
    """One ``rxpk`` object as a packet forwarder reports a received LoRa packet."""
    now = time.time()
    return {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
        + f".{int(now % 1 * 1e6):06d}Z",
        "tmst": tmst if tmst is not None else int(time.monotonic() * 1e6) & 0xFFFFFFFF,
        "chan": chan, "rfch": 0, "freq": freq_mhz, "stat": stat, "modu": "LORA",
        "datr": f"SF{sf}BW125", "codr": "4/5", "rssi": rssi_dbm, "lsnr": lsnr_db,
        "size": len(payload), "data": base64.b64encode(payload).decode(),
    }


def push_data(eui: bytes, packets: list[dict[str, Any]], token: bytes | None = None) -> bytes:
    """A PUSH_DATA datagram carrying `packets`."""
    token = token or os.urandom(2)
    body = json.dumps({"rxpk": packets}, separators=(",", ":")).encode()
    return bytes((PROTOCOL_VERSION,)) + token + bytes((PUSH_DATA,)) + eui + body


def pull_data(eui: bytes, token: bytes | None = None) -> bytes:
    """A PULL_DATA keep-alive datagram."""
    token = token or os.urandom(2)
    return bytes((PROTOCOL_VERSION,)) + token + bytes((PULL_DATA,)) + eui


class ForwarderClient:
    """A simulated packet forwarder with its own EUI and UDP socket."""

    def __init__(self, eui: bytes, host: str, port: int) -> None:
        self.eui = eui
        self.addr = (host, port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self.pushed = 0
        self.acked = 0
        self.pulls = 0
        self.pull_acked = 0
        self._last_pull = 0.0

    def push(self, packets: list[dict[str, Any]]) -> None:
        """Send one PUSH_DATA."""
        self.sock.sendto(push_data(self.eui, packets), self.addr)
        self.pushed += 1

    def send_raw(self, datagram: bytes) -> None:
        """Send any datagram (for garbage injection)."""
        self.sock.sendto(datagram, self.addr)

    def keepalive(self, every_s: float = 10.0) -> None:
        """Send PULL_DATA when `every_s` has passed since the last one."""
        now = time.monotonic()
        if now - self._last_pull >= every_s:
            self.sock.sendto(pull_data(self.eui), self.addr)
            self.pulls += 1
            self._last_pull = now

    def read_acks(self) -> None:
        """Count PUSH_ACK and PULL_ACK datagrams that have arrived."""
        while True:
            try:
                data = self.sock.recv(2048)
            except (BlockingIOError, ConnectionRefusedError):
                return
            if len(data) >= 4 and data[0] == PROTOCOL_VERSION:
                if data[3] == PUSH_ACK:
                    self.acked += 1
                elif data[3] == PULL_ACK:
                    self.pull_acked += 1

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()
