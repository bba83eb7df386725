"""Bad input: fuzzed frames and records, in process, under atheris and against the daemon."""

from __future__ import annotations

import logging
import os
import random
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from knute.tools.bench.reliability.harness import (
    rig,
)
from knute.tools.bench.reliability.results import (
    ROOT,
    CaseResult,
)

# ---------------------------------------------------------------- bad input


def mutate(rng: random.Random, buf: bytes, pool: Sequence[bytes],
           device_ids: Sequence[int]) -> bytes:
    """One random mutation of a frame: bit flips, byte edits, splices, header forgeries."""
    b = bytearray(buf)
    op = rng.randrange(11)
    if op == 0 and b:
        for _ in range(rng.randint(1, 3)):
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
    elif op == 1 and b:
        b[rng.randrange(len(b))] = rng.randrange(256)
    elif op == 2:
        pos = rng.randrange(len(b) + 1)
        b[pos:pos] = rng.randbytes(rng.randint(1, 8))
    elif op == 3 and len(b) > 1:
        pos = rng.randrange(len(b))
        del b[pos:pos + rng.randint(1, 8)]
    elif op == 4:
        del b[rng.randrange(len(b) + 1):]
    elif op == 5:
        other = rng.choice(pool)
        cut = rng.randrange(min(len(b), len(other)) + 1)
        b = b[:cut] + bytearray(other[cut:])
    elif op == 6 and len(b) >= 5:               # the same frame under another device's id
        b[1:5] = rng.choice(device_ids).to_bytes(4, "big")
    elif op == 7 and len(b) >= 8:               # a higher (forged) frame counter
        fcnt = min(0xFFFFFF, int.from_bytes(b[5:8], "big") + rng.randint(1, 1000))
        b[5:8] = fcnt.to_bytes(3, "big")
    elif op == 8:
        b = bytearray(rng.randbytes(rng.randrange(0, 300)))
    elif op == 9 and b:
        b[0] = rng.randrange(256)
    else:                                       # a longer tail
        b += rng.randbytes(rng.randint(1, 300))
    return bytes(b)


@dataclass
class FuzzTally:
    """What the in-process fuzzer saw."""

    inputs: int = 0
    submitted: int = 0
    accepted: int = 0
    merged: int = 0
    rejected: int = 0
    forgeries: list[str] = field(default_factory=list)
    crashes: list[str] = field(default_factory=list)


def fuzz_in_process(n: int, *, seed: int = 7) -> tuple[FuzzTally, dict[str, Any]]:
    """``n`` random and mutated frames through the serial reader, the UDP source and
    the pipeline, in process. Returns the tally and the counters' snapshot.

    A forgery is an accepted frame whose bytes are not those of a frame the
    fleet really sent. Every rejection must be counted by reason.
    """
    from knute.gateway.config import UdpSourceConfig
    from knute.gateway.pipeline import Pipeline, Reception
    from knute.gateway.registry import Device
    from knute.gateway.sources.serial import RecordReader
    from knute.gateway.sources.udp_forwarder import UdpForwarderSource
    from knute.gateway.status import Counters
    from knute.protocol import stream
    from knute.tools.sim.fleet import Fleet
    from knute.tools.sim.pktfwd import push_data, rxpk

    knute_log = logging.getLogger("knute")
    saved_level = knute_log.level
    knute_log.setLevel(logging.ERROR)    # rejections are counted, not logged
    rng = random.Random(seed)
    fleet = Fleet(30, 10, start=1_767_225_600.0, seed=seed, first_device_id=0x30000000)
    genuine: list[bytes] = []
    while len(genuine) < 2000:
        genuine += [tx.payload for tx in fleet.due(fleet.next_time()) if tx.valid]
    genuine_set = set(genuine)
    devices = {n.device_id: Device(n.device_id, n.kind, n.key) for n in fleet.nodes}
    ids = [*devices, 0xDEADBEEF]
    counters = Counters()
    pipeline = Pipeline(devices, counters=counters, dedup_window_s=0.01)
    tally = FuzzTally()
    clock = [0.0]
    receptions: list[Reception] = []
    reader = RecordReader("serial", counters)
    udp = UdpForwarderSource(UdpSourceConfig(name="udp", host="127.0.0.1", port=0),
                             receptions.append, counters)
    eui = bytes.fromhex("aa555a0000000001")
    next_genuine = 0

    def submit_all() -> None:
        for rx in receptions:
            tally.submitted += 1
            verdict = pipeline.submit(rx)
            if verdict.status == "pending":
                tally.accepted += 1
                if rx.frame not in genuine_set:
                    tally.forgeries.append(rx.frame.hex())
            elif verdict.status == "merged":
                tally.merged += 1
            else:
                tally.rejected += 1
        receptions.clear()
        clock[0] += 0.001
        pipeline.due(clock[0])

    try:
        for i in range(n):
            tally.inputs += 1
            if i % 50 == 0 and next_genuine < len(genuine):    # genuine traffic in between
                buf = genuine[next_genuine]
                next_genuine += 1
            else:
                buf = mutate(rng, rng.choice(genuine), genuine, ids)
            path = i % 3
            try:
                if path == 0:
                    receptions.append(Reception("direct", "serial", buf, 0.0, clock[0],
                                                {"source": "direct"}))
                elif path == 1:
                    if len(buf) <= stream.MAX_BODY - stream.RADIO_META_LEN:
                        rtype = rng.choice((stream.REC_FRAME, stream.REC_RADIO))
                        body = (stream.pack_radio(-90, 50, 868_100_000, 9, buf)
                                if rtype == stream.REC_RADIO else buf)
                        record = stream.encode_record(rtype, body)
                    else:
                        record = b"\x00" + buf + b"\x00"
                    if rng.random() < 0.1:
                        record = mutate(rng, record, genuine, ids)
                    cut = rng.randrange(len(record) + 1)
                    for part in (record[:cut], record[cut:]):
                        receptions += reader.feed(part, 0.0, clock[0])
                else:
                    pkt = rxpk(buf, rssi_dbm=-100, lsnr_db=1.0, freq_mhz=868.1, sf=9)
                    if rng.random() < 0.05:
                        pkt[rng.choice(list(pkt))] = rng.choice([None, -1, "x", [], {}, 1e99])
                    dgram = push_data(eui, [pkt])
                    if rng.random() < 0.1:
                        dgram = mutate(rng, dgram, genuine, ids)
                    udp.handle(dgram, 0.0, clock[0])
                submit_all()
            except Exception as exc:  # any exception here is a crash of the gateway path
                tally.crashes.append(f"{type(exc).__name__}: {exc} on {buf.hex()}")
                receptions.clear()
        receptions += reader.feed(b"\x00", 0.0, clock[0])
        submit_all()
        pipeline.drain()
    finally:
        udp.stop(timeout=0.1)
        knute_log.setLevel(saved_level)    # the caller (a test worker, the CLI) keeps its own
    return tally, counters.snapshot()


ATHERIS_CHILD = r"""
import sys, atheris
with atheris.instrument_imports(include=["knute.protocol"]):
    from knute.protocol import frame, stream, cbor
    from knute.protocol.errors import FrameError
from knute.gateway.sources import semtech_udp as semtech

KEY = bytes(range(16))

def one_input(data):
    fdp = atheris.FuzzedDataProvider(data)
    which = fdp.ConsumeIntInRange(0, 3)
    rest = fdp.ConsumeBytes(len(data))
    try:
        if which == 0:
            frame.decode(rest, KEY)
        elif which == 1:
            dec = stream.StreamDecoder()
            for item in dec.feed(rest):
                if not isinstance(item, (tuple, FrameError)):
                    raise AssertionError(repr(item))
        elif which == 2:
            cbor.decode(rest)
        else:
            d = semtech.parse_datagram(rest)
            doc = semtech.parse_push(d.body)
            for pkt in doc.get("rxpk") or ():
                try:
                    semtech.parse_rxpk(pkt, d.gateway_eui, "fuzz")
                except FrameError:
                    pass
    except FrameError:
        pass

atheris.Setup(sys.argv, one_input)
atheris.Fuzz()
"""


def fuzz_atheris(runs: int, workdir: Path, *, seed: int = 1,
                 timeout_s: float = 1200.0) -> dict[str, Any]:
    """Coverage-guided fuzzing (atheris) of frame decode, stream framing, CBOR and the
    packet-forwarder parsers for ``runs`` inputs. {"runs", "crashed", "output"}."""
    workdir.mkdir(parents=True, exist_ok=True)
    script = workdir / "fuzz_child.py"
    script.write_text(ATHERIS_CHILD)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run(
        [sys.executable, str(script), f"-runs={runs}", f"-seed={seed}", "-max_len=400",
         f"-artifact_prefix={workdir}/", "-print_final_stats=1"],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout_s)
    text = out.stdout + out.stderr
    match = re.search(r"Done (\d+) runs", text)
    done = int(match.group(1)) if match else 0
    return {"runs": done, "crashed": out.returncode != 0, "output": text[-3000:],
            "available": "No module named 'atheris'" not in text}


def case_bad_input(workdir: Path, *, frames: int = 20_000, atheris_runs: int = 20_000,
                   seed: int = 7) -> CaseResult:
    """Random and mutated frames in process, through the serial and UDP sources and the
    pipeline, plus atheris on the decoders: zero crashes, zero accepted forgeries,
    every rejection counted by reason."""
    result = CaseResult("bad_input", runs=1)
    tally, snap = fuzz_in_process(frames, seed=seed)
    result.sent = tally.inputs
    result.accepted = tally.accepted
    result.delivered = tally.accepted          # in process: "delivered" = handed to the spool
    result.crashes = len(tally.crashes)
    result.problems += [f"crash: {c}" for c in tally.crashes[:5]]
    if tally.forgeries:
        result.problems.append(f"{len(tally.forgeries)} forged frames accepted, e.g. "
                               f"{tally.forgeries[0]}")
    totals = snap["totals"]
    by_reason = sum(snap["rejected"].values())
    if by_reason != totals.get("rejected", 0):
        result.problems.append(f"rejections by reason add up to {by_reason}, "
                               f"total says {totals.get('rejected', 0)}")
    pipeline_rejects = sum(snap["sources"].get(s, {}).get("rejected", 0)
                           for s in ("direct",))
    if tally.submitted != tally.accepted + tally.merged + tally.rejected:
        result.problems.append("a submitted frame got no verdict")
    serial = snap["sources"].get("serial", {})
    result.notes.update({"rejected_by_reason": snap["rejected"], "merged": tally.merged,
                         "direct_rejected": pipeline_rejects,
                         "serial_received": serial.get("received", 0)})
    if atheris_runs:
        fz = fuzz_atheris(atheris_runs, workdir / "atheris", seed=seed)
        if not fz["available"]:
            result.notes["atheris"] = "not installed"
        else:
            result.sent += fz["runs"]
            result.notes["atheris_runs"] = fz["runs"]
            if fz["crashed"]:
                result.crashes += 1
                result.problems.append("atheris found a crash:\n" + fz["output"])
            elif fz["runs"] < atheris_runs:
                result.problems.append(f"atheris ran {fz['runs']} of {atheris_runs} inputs")
    return result


def case_bad_input_daemon(workdir: Path, *, frames: int = 2000, rate: float = 1000.0,
                          seed: int = 8) -> CaseResult:
    """Mutated frames and records through the running gateway's pty and UDP port,
    interleaved with the fleet's genuine traffic: the process survives, only genuine
    frames reach the backend, every rejection is counted."""
    result = CaseResult("bad_input_daemon", runs=1)
    from knute.protocol import stream
    from knute.tools.sim.pktfwd import push_data, rxpk

    rng = random.Random(seed)
    with rig(workdir, meters=20, air=10, rate=rate, seed=seed) as r:
        r.gw.start()
        genuine: list[bytes] = []
        fleet = r.fleet.fleet
        while len(genuine) < 500:
            genuine += [tx.payload for tx in fleet.due(fleet.next_time()) if tx.valid]
        ids = [d for d, _, _ in r.fleet.devices]
        sent_bad = 0
        for i, good in enumerate(genuine):
            r.fleet.send_one(int.from_bytes(good[1:5], "big"), good, True)
            for _ in range(max(1, frames // len(genuine))):
                bad = mutate(rng, good if rng.random() < 0.8 else rng.choice(genuine),
                             genuine, ids)
                if i % 2:
                    record = stream.encode_record(stream.REC_FRAME, bad[:stream.MAX_BODY])
                    if rng.random() < 0.2:
                        record = mutate(rng, record, genuine, ids)
                    r.fleet.serial_write(record + b"\x00")
                else:
                    dgram = push_data(bytes.fromhex("aa555a0000000001"),
                                      [rxpk(bad, rssi_dbm=-99, lsnr_db=0.5, freq_mhz=868.1,
                                            sf=9)])
                    if rng.random() < 0.2:
                        dgram = mutate(rng, dgram, genuine, ids)
                    r.fleet.udp_raw(dgram)
                sent_bad += 1
                r.fleet.sent += 1
            time.sleep(1.0 / rate)
        result.notes["mutated_sent"] = sent_bad
        time.sleep(1.0)
        if not r.gw.check():
            result.problems.append("the gateway died on bad input")
        st = r.gw.status()
        rejected = st["rejected"]
        result.notes["rejected_by_reason"] = rejected
        if sum(rejected.values()) != st["totals"]["rejected"]:
            result.problems.append("rejections by reason do not add up")
        r.drain(result)
    return result
