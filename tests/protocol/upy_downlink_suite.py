# The downlink vectors on CPython and on the MicroPython unix port: the same
# output from both, with no FAIL line (tests/protocol/test_downlink_micropython.py).
#
# Run from the repository root:  micropython tests/protocol/upy_downlink_suite.py

import json
import sys

sys.path.insert(0, ".")

from binascii import unhexlify

from protocol import downlink as dl
from tests.upy_checks import check, finish, from_json, hx, reason_of

with open("tests/vectors/downlink.json") as f:
    DOC = json.load(f)


def test_downlinks():
    flips = 0
    for v in DOC["downlinks"]:
        key = unhexlify(v["key"])
        cmds = from_json(v["commands"])
        raw = unhexlify(v["frame"])
        check("encode " + v["name"], hx(dl.encode(v["device_id"], v["dcnt"], cmds, key))
              == v["frame"])
        check("header " + v["name"], hx(dl.header(v["device_id"], v["dcnt"])) == v["header"])
        check("nonce " + v["name"], hx(dl.nonce(v["device_id"], v["dcnt"])) == v["nonce"])
        got = dl.decode(raw, key)
        check("decode " + v["name"], got["commands"] == cmds and got["dcnt"] == v["dcnt"]
              and got["device_id"] == v["device_id"])
        check("fits 51 bytes " + v["name"], len(raw) <= 51)
        for pos in range(len(raw) * 8):
            bad = bytearray(raw)
            bad[pos // 8] ^= 1 << (pos % 8)
            flips += 1
            check("bit flip " + v["name"] + " " + str(pos),
                  reason_of(dl.decode, bytes(bad), key) in ("dl_forged", "dl_format"))
    print("downlinks", len(DOC["downlinks"]), "vectors", flips, "bit flips rejected")


def test_rejected():
    stateless = 0
    for v in DOC["rejected"]:
        got = reason_of(dl.decode, unhexlify(v["frame"]), unhexlify(v["key"]))
        if v["reason"] in ("dl_device", "dl_replay", "dl_order"):
            # Needs the node's state (firmware/downlink.py): the bytes themselves verify.
            check("rejected " + v["name"] + " verifies", got is None)
            continue
        stateless += 1
        check("rejected " + v["name"] + " " + v["reason"] + " got " + str(got),
              got == v["reason"])
    print("rejected", len(DOC["rejected"]), "downlinks", stateless, "without node state")


def test_bundle_and_sizes():
    b = DOC["bundle"]
    built = dl.bundle([(b["path"], unhexlify(b["module"]))])
    check("bundle", hx(built) == b["bundle"])
    check("bundle sha256", b["sha256"] in b["bundle"])
    caps = [dl.chunk_capacity(sf) for sf in (7, 8, 9, 10, 11, 12)]
    for sf in (7, 8, 9, 10, 11, 12):
        cmd = dl.upd_chunk(0xFFFF, 0xFFFF, 0xFFFF, bytes(dl.chunk_capacity(sf)))
        raw = dl.encode(1, 1, [cmd], bytes(16))
        check("chunk fills SF%d" % sf, len(raw) == dl.EU868_MAX_PAYLOAD[sf])
    print("chunk bytes at SF7..SF12", caps)
    entries = [dl.report_entry(513, dl.APPLIED), dl.report_entry(3, dl.CMD_RANGE, 2)]
    series = [dl.FLAG_WANT | dl.FLAG_CLOCK]
    series.extend(entries)
    flags, parsed = dl.parse_report(series)
    check("report", flags == 3 and parsed == [(513, "applied", 0), (3, "cmd_range", 2)])
    print("report", entries)


test_downlinks()
test_rejected()
test_bundle_and_sizes()
finish()
