# The protocol suite that runs unchanged on CPython and on the MicroPython unix
# port. CPython is the oracle: tests/protocol/test_micropython.py runs this file
# on both interpreters and requires identical output with no FAIL line.
#
# Run from the repository root:  micropython tests/protocol/upy_suite.py

import json
import sys

sys.path.insert(0, ".")

from binascii import unhexlify

from protocol import cbor, ccm, frame, stream
from protocol.errors import FrameError
from tests.upy_checks import check, finish, from_json, hx, reason_of

VECTORS = "tests/vectors/"


def load(name):
    with open(VECTORS + name) as f:
        return json.load(f)


def test_cbor():
    doc = load("cbor.json")
    for hexed, expected in doc["valid"]:
        raw = unhexlify(hexed)
        value = from_json(expected)
        check("cbor decode " + hexed, cbor.decode(raw) == value)
        check("cbor encode " + hexed, cbor.encode(value) == raw)
    for hexed, reason in doc["invalid"]:
        got = reason_of(cbor.decode, unhexlify(hexed))
        check("cbor reject " + hexed + " " + reason + " got " + str(got), got == reason)
    print("cbor", len(doc["valid"]), "valid", len(doc["invalid"]), "invalid")


def test_ccm():
    doc = load("ccm.json")
    for v in doc["vectors"]:
        block = ccm.aes_block(unhexlify(v["key"]))
        nonce = unhexlify(v["nonce"])
        aad = unhexlify(v["aad"])
        sealed = ccm.seal(block, nonce, aad, unhexlify(v["plain"]), v["tag_len"])
        check("ccm seal " + v["nonce"], hx(sealed) == v["sealed"])
        opened = ccm.open_(block, nonce, aad, sealed, v["tag_len"])
        check("ccm open " + v["nonce"], hx(opened) == v["plain"])
        bad = bytearray(sealed)
        bad[-1] ^= 1
        got = reason_of(ccm.open_, block, nonce, aad, bytes(bad), v["tag_len"])
        check("ccm tamper " + v["nonce"], got == "frame_tag")
    # Associated data long enough for the 0xff 0xfe length form (RFC 3610 section 2.2).
    for v in doc["long_aad"]:
        block = ccm.aes_block(unhexlify(v["key"]))
        nonce = unhexlify(v["nonce"])
        aad = (bytes(range(256)) * (v["aad_len"] // 256 + 1))[:v["aad_len"]]
        name = "ccm long aad " + str(v["aad_len"]) + " tag " + str(v["tag_len"])
        sealed = ccm.seal(block, nonce, aad, unhexlify(v["plain"]), v["tag_len"])
        check(name + " seal", hx(sealed) == v["sealed"])
        opened = ccm.open_(block, nonce, aad, sealed, v["tag_len"])
        check(name + " open", hx(opened) == v["plain"])
    print("ccm", len(doc["vectors"]), "RFC 3610 vectors", len(doc["long_aad"]), "long aad")


def test_frames():
    doc = load("frames.json")
    flips = 0
    for v in doc["frames"]:
        key = unhexlify(v["key"])
        raw = unhexlify(v["frame"])
        built = frame.encode(v["kind"], v["device_id"], v["fcnt"], v["values"], key,
                             v["tag_len"])
        check("frame encode " + v["name"], hx(built) == v["frame"])
        got = frame.decode(raw, key)
        check("frame values " + v["name"], got["values"] == v["values"])
        check("frame fields " + v["name"], got["kind"] == v["kind"]
              and got["device_id"] == v["device_id"] and got["fcnt"] == v["fcnt"]
              and got["tag_len"] == v["tag_len"])
        wrong = bytearray(key)
        wrong[0] ^= 0x80
        check("frame wrong key " + v["name"],
              reason_of(frame.decode, raw, bytes(wrong)) == "frame_tag")
        # Every single-bit flip anywhere in the frame is rejected.
        for pos in range(len(raw) * 8):
            bad = bytearray(raw)
            bad[pos // 8] ^= 1 << (pos % 8)
            r = reason_of(frame.decode, bytes(bad), key)
            flips += 1
            check("bit flip " + v["name"] + " " + str(pos), r is not None)
    print("frames", len(doc["frames"]), "vectors", flips, "bit flips rejected")


def test_stream():
    doc = load("frames.json")
    wire = bytearray(b"\x13\x37garbage\xff")
    bodies = []
    for v in doc["frames"]:
        body = unhexlify(v["frame"])
        bodies.append(body)
        wire.extend(stream.encode_record(stream.REC_FRAME, body))
        wire.extend(b"\x00\x01\x02noise")  # line noise between records
    radio = stream.pack_radio(-117, -75, 868100000, 12, bodies[0])
    wire.extend(stream.encode_record(stream.REC_RADIO, radio))
    # Feed one byte at a time: records must come out whole and in order.
    dec = stream.StreamDecoder()
    good = []
    errors = 0
    for i in range(len(wire)):
        for item in dec.feed(bytes(wire[i:i + 1])):
            if isinstance(item, FrameError):
                errors += 1
            else:
                good.append(item)
    check("stream count", len(good) == len(bodies) + 1)
    for i in range(len(bodies)):
        check("stream body " + str(i), good[i] == (stream.REC_FRAME, bodies[i]))
    meta, inner = stream.unpack_radio(good[-1][1])
    check("stream radio meta", meta == {"rssi_dbm": -117, "snr_db": -7.5,
                                        "freq_hz": 868100000, "sf": 12})
    check("stream radio frame", inner == bodies[0])
    # A corrupted record is reported and the next one still arrives.
    rec = b"\x00" + stream.cobs_encode(b"\x01" + bodies[0] + b"\xde\xad\xbe\xef") + b"\x00"
    items = dec.feed(rec + stream.encode_record(stream.REC_FRAME, bodies[1]))
    check("stream crc reason", isinstance(items[0], FrameError) and items[0].reason == "link_crc")
    check("stream after crc", items[-1] == (stream.REC_FRAME, bodies[1]))
    print("stream", len(good), "records", errors, "noise errors")


def test_rejected():
    doc = load("frames.json")
    reasons = {}
    for v in doc["rejected"]:
        got = reason_of(frame.decode, unhexlify(v["frame"]), unhexlify(v["key"]))
        check("rejected " + v["name"] + " " + v["reason"] + " got " + str(got),
              got == v["reason"])
        reasons[v["reason"]] = True
    print("rejected", len(doc["rejected"]), "frames", len(reasons), "reasons")


def receive(dec, data):
    # What a receiver makes of `data`: each good record as (type, body hex), each
    # fault as its reason; a RADIO record must hold its metadata.
    out = []
    for item in dec.feed(data):
        if isinstance(item, FrameError):
            out.append(item.reason)
            continue
        if item[0] in (stream.REC_RADIO, stream.REC_TX):
            unpack = stream.unpack_radio if item[0] == stream.REC_RADIO else stream.unpack_tx
            reason = reason_of(unpack, item[1])
            if reason:
                out.append(reason)
                continue
        out.append((item[0], hx(item[1])))
    return out


def test_link():
    doc = load("link.json")
    for v in doc["records"]:
        body = unhexlify(v["body"])
        wire = unhexlify(v["record"])
        check("link encode " + v["name"], hx(stream.encode_record(v["type"], body)) == v["record"])
        check("link decode " + v["name"],
              stream.decode_record(wire[1:-1]) == (v["type"], body))
        if "radio" in v:
            r = v["radio"]
            meta, inner = stream.unpack_radio(body)
            check("link radio " + v["name"], meta["rssi_dbm"] == r["rssi_dbm"]
                  and round(meta["snr_db"] * 10) == r["snr_db_x10"]
                  and meta["freq_hz"] == r["freq_hz"] and meta["sf"] == r["sf"]
                  and hx(inner) == r["frame"])
        if "tx" in v:
            t = v["tx"]
            check("link tx " + v["name"], stream.unpack_tx(body) == (
                t["at_ms"], t["freq_hz"], t["sf"], unhexlify(t["payload"])))
            check("link tx pack " + v["name"], stream.pack_tx(
                t["at_ms"], t["freq_hz"], t["sf"], unhexlify(t["payload"])) == body)
        if "text" in v:
            check("link text " + v["name"], body.decode("utf-8") == v["text"])
    faults = 0
    for v in doc["streams"]:
        wire = unhexlify(v["wire"])
        expected = []
        for item in v["items"]:
            if "reason" in item:
                expected.append(item["reason"])
                faults += 1
            else:
                expected.append((item["type"], item["body"]))
        whole = receive(stream.StreamDecoder(), wire)
        check("link stream " + v["name"] + " got " + str(whole), whole == expected)
        dec = stream.StreamDecoder()
        bytewise = []
        for i in range(len(wire)):
            bytewise.extend(receive(dec, wire[i:i + 1]))
        check("link stream bytewise " + v["name"], bytewise == expected)
    print("link", len(doc["records"]), "records", len(doc["streams"]), "streams", faults,
          "faults")


test_cbor()
test_ccm()
test_frames()
test_rejected()
test_stream()
test_link()
finish()
