# firmware/downlink.py against tests/vectors/downlink.json, on CPython and on
# the MicroPython unix port (tests/firmware/test_downlink.py requires the same
# output from both and no FAIL line).
#
# Run from the repository root:  micropython tests/firmware/upy_downlink_suite.py <empty dir>

import json
import os
import sys

sys.path.insert(0, ".")

from binascii import unhexlify

from firmware import downlink_update
from firmware.downlink_files import make_dirs, read_json, remove_tree
from firmware.downlink_model import Downlink
from firmware.state import Store
from protocol import downlink as dl
from tests.upy_checks import check, finish

WORK = sys.argv[1]

with open("tests/vectors/downlink.json") as f:
    DOC = json.load(f)
KEY = DOC["downlinks"][0]["key"]
NEW_KEY = DOC["downlinks"][4]["key"]


class Clock:
    def __init__(self):
        self.ms = 5000

    def __call__(self):
        return self.ms


def fresh(name, config, last=None):
    # A node folder: config.json, state/ (with a last accepted counter), a small lib/.
    root = WORK + "/" + name
    remove_tree(root)
    make_dirs(root + "/lib/firmware/roles")
    make_dirs(root + "/lib/protocol")
    for path, text in (("firmware/__init__.py", ""), ("firmware/roles/water_meter.py",
                                                       "VERSION = 1\n"),
                       ("protocol/__init__.py", ""), ("firmware/app.py", "APP = 1\n")):
        with open(root + "/lib/" + path, "w") as f:
            f.write(text)
    with open(root + "/config.json", "w") as f:
        f.write(json.dumps(config))
    store = Store(root + "/state")
    if last is not None:
        store.put("dcnt", {"last": last})
    clock = Clock()
    node = Downlink(store, config["device_id"], root + "/config.json", clock,
                    root + "/upd", root + "/lib")
    return root, node, clock


def config_text(root):
    with open(root + "/config.json") as f:
        return f.read()


def node_config(device_id=None):
    cfg = {}
    for key in DOC["node"]:
        cfg[key] = DOC["node"][key]
    if device_id is not None:
        cfg["device_id"] = device_id
    return cfg


def test_rejected():
    for v in DOC["rejected"]:
        root, node, _ = fresh("rej", node_config(v["device_id"]), v["last_dcnt"])
        before = config_text(root)
        got = node.receive(unhexlify(v["frame"]))
        check("rejected " + v["name"] + " got " + str(got), got == v["reason"])
        check("counted " + v["name"], node.counts.get(v["reason"]) == 1)
        check("nothing applied " + v["name"], config_text(root) == before
              and node.last == v["last_dcnt"] and node.entries == []
              and Store(root + "/state").get("dcnt") == {"last": v["last_dcnt"]})
    print("rejected", len(DOC["rejected"]), "downlinks, nothing applied")


def test_commands():
    root, node, _ = fresh("cmd", node_config(), 99)
    applied = 0
    for v in DOC["commands"]:
        before = config_text(root)
        got = node.receive(unhexlify(v["frame"]))
        check("accepted " + v["name"], got is None)
        rep = node.report()
        check("report " + v["name"] + " " + str(rep), rep is not None and rep[1:] == v["report"])
        if v["report"][0] & 0xF == dl.APPLIED:
            applied += 1
            check("changed " + v["name"], config_text(root) != before)
        else:
            check("unchanged " + v["name"], config_text(root) == before)
        node.report_sent()
    check("leak_hours set", read_json(root + "/config.json")["water"]["leak_hours"] == 12)
    # A restarted node keeps the counter: the last command again is a replay.
    again = Downlink(Store(root + "/state"), node.device_id, root + "/config.json",
                     Clock(), root + "/upd", root + "/lib")
    check("replay after restart", again.receive(unhexlify(DOC["commands"][-1]["frame"]))
          == "dl_replay")
    print("commands", len(DOC["commands"]), "applied", applied)


def test_clock():
    _root, node, clock = fresh("clock", node_config())
    v = DOC["downlinks"][0]
    check("asks for the clock", node.report()[0] & dl.FLAG_CLOCK)
    node.uplink_sent(7, 5000)          # uplink 7 ended at board time 5000 ms
    clock.ms = 6800                    # RX1 after 1 s, decoding: the downlink arrives later
    check("clock accepted", node.receive(unhexlify(v["frame"])) is None)
    check("clock now", node.now_ms() == 1796158014123 + 1800)
    check("clock no longer asked", not node.report()[0] & dl.FLAG_CLOCK)
    print("clock", node.now_ms(), node.report())


def test_rekey():
    root, node, _ = fresh("rekey", node_config())
    rekey, done = DOC["downlinks"][3], DOC["downlinks"][4]
    check("rekey accepted", node.receive(unhexlify(rekey["frame"])) is None)
    cfg = read_json(root + "/config.json")
    check("both keys held", cfg["key"] == KEY and cfg["key_next"] == NEW_KEY)
    check("uplinks under the new key", node.uplink_key() == unhexlify(NEW_KEY))
    check("report says rekey", node.report()[0] & dl.FLAG_REKEY)
    check("done accepted", node.receive(unhexlify(done["frame"])) is None)
    cfg = read_json(root + "/config.json")
    check("new key only", cfg["key"] == NEW_KEY and "key_next" not in cfg
          and cfg["key_no"] == 1)
    late = dl.encode(node.device_id, 50, [dl.reboot(1)], unhexlify(KEY))
    check("old key refused", node.receive(late) == "dl_forged")
    print("rekey", node.report())


def send(node, key, dcnt, cmd):
    return node.receive(dl.encode(node.device_id, dcnt, [cmd], key))


def update(node, key, dcnt, upd_no, data, step):
    results = [send(node, key, dcnt, dl.upd_begin(1, upd_no, len(data)))]
    dcnt += 1
    for offset in range(0, len(data), step):
        results.append(send(node, key, dcnt, dl.upd_chunk(2, upd_no, offset,
                                                          data[offset:offset + step])))
        dcnt += 1
    results.append(send(node, key, dcnt, dl.upd_switch(3, upd_no)))
    return dcnt + 1, results


def test_update():
    root, node, _ = fresh("upd", node_config())
    key = unhexlify(KEY)
    b = DOC["bundle"]
    data = unhexlify(b["bundle"])
    dcnt, results = update(node, key, 1, 1, data, 22)
    check("update frames accepted", results == [None] * len(results))
    entries = node.entries
    check("switch applied", dl.parse_report([0, entries[-1]])[1][-1] == (3, "applied", 0))
    check("reboot asked", node.reboot)
    folder, rolled = downlink_update.boot_hook(root + "/upd")
    check("new set active", folder == root + "/upd/s1" and rolled is None)
    with open(folder + "/" + b["path"], "rb") as f:
        check("module replaced", f.read() == unhexlify(b["module"]))
    with open(folder + "/firmware/app.py") as f:
        check("other modules kept", f.read() == "APP = 1\n")
    check("confirmed", downlink_update.confirm(root + "/upd"))
    # Update 2 never completes a send: after TRIAL_BOOTS boots it is rolled back.
    two = dl.bundle([("firmware/app.py", b"APP = 2\n")])
    node.report_sent()
    dcnt, results = update(node, key, dcnt, 2, two, 85)
    check("update 2 applied", node.report()[-1] & 0xF == dl.APPLIED)
    seen = []
    for _ in range(downlink_update.TRIAL_BOOTS + 1):
        seen.append(downlink_update.boot_hook(root + "/upd"))
    check("rolled back " + str(seen), seen[-1] == (root + "/upd/s1", 2)
          and seen[0][0] == root + "/upd/s2")
    check("set 2 removed", sorted(os.listdir(root + "/upd")) == ["manifest.json", "s1"])
    # A bundle whose SHA-256 does not match: nothing replaced, nothing switched.
    bad = bytearray(dl.bundle([("firmware/app.py", b"APP = 3\n")]))
    bad[-1] ^= 1
    node.report_sent()
    dcnt, results = update(node, key, dcnt, 3, bytes(bad), 85)
    rep = dl.parse_report(node.report())[1]
    check("hash refused " + str(rep), rep[-1] == (3, "cmd_hash", 0))
    check("still set 1", downlink_update.boot_hook(root + "/upd") == (root + "/upd/s1", None))
    # Chunks out of order are refused, repeats are harmless.
    node.report_sent()
    send(node, key, dcnt, dl.upd_begin(1, 4, 40))
    r1 = send(node, key, dcnt + 1, dl.upd_chunk(2, 4, 20, bytes(20)))
    send(node, key, dcnt + 2, dl.upd_chunk(3, 4, 0, bytes(20)))
    send(node, key, dcnt + 3, dl.upd_chunk(4, 4, 0, bytes(20)))
    results = [e[1] for e in dl.parse_report(node.report())[1]]
    check("chunk order " + str(results), r1 is None
          and results == ["applied", "cmd_order", "applied", "applied"])
    check("update flag", node.report()[0] & dl.FLAG_UPDATE)
    bad_path = dl.bundle([("firmware/app.py", b"x")]).replace(b"firmware/app.py",
                                                             b"firmware/../x.py")
    node.report_sent()
    update(node, key, dcnt + 4, 5, bad_path, 85)
    check("path refused", dl.parse_report(node.report())[1][-1][1] == "cmd_args")
    print("update", sorted(os.listdir(root + "/upd")))


def test_alarm():
    _root, node, _ = fresh("alarm", node_config())
    node.alarm_raised(0b100001)
    repeats = 0
    while node.alarm_repeat_due():
        repeats += 1
    check("bounded repeats", repeats == 6)
    check("alarm flag", node.report()[0] & dl.FLAG_ALARM)
    check("ack accepted", node.receive(unhexlify(DOC["downlinks"][2]["frame"])) is None)
    check("alarm cleared", node.alarm_bits == 0 and not node.report()[0] & dl.FLAG_ALARM)
    print("alarm repeats", repeats)


test_rejected()
test_commands()
test_clock()
test_rekey()
test_update()
test_alarm()
finish()
