"""firmware/downlink.py on CPython: counter rules over random sequences, rotation edge cases."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.downlink_model import Downlink
from firmware.state import Store
from knute.protocol import downlink as dl

DEVICE = 0x1234
K1 = bytes(range(16))
K2 = bytes(range(50, 66))
K3 = bytes(range(80, 96))


def _node(root: Path, link: str = "uart", fresh: bool = True) -> Downlink:
    if fresh:
        root.mkdir(parents=True, exist_ok=True)
        (root / "config.json").write_text(json.dumps({
            "role": "water_meter", "device_id": DEVICE, "key": K1.hex(),
            "link": {"type": link}, "water": {"sends_per_day": 4, "profile_len": 6}}))
    return Downlink(Store(str(root / "state")), DEVICE, str(root / "config.json"),
                    lambda: 0, str(root / "upd"), str(root / "lib"))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 40), st.booleans(), st.booleans()), min_size=1,
                max_size=25))
def test_accepted_iff_authentic_and_above_every_accepted_counter(
    steps: list[tuple[int, bool, bool]],
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        node = _node(root)
        highest = -1
        for dcnt, forged, restart in steps:
            if restart:
                node = _node(root, fresh=False)
            raw = dl.encode(DEVICE, dcnt, [dl.ack_alarm(1, 1)], K3 if forged else K1)
            reason = node.receive(raw)
            if forged:
                assert reason == "dl_forged"
            elif dcnt > highest:
                assert reason is None
                highest = dcnt
            else:
                assert reason == ("dl_replay" if dcnt == highest else "dl_order")
            assert node.last == highest


def test_one_rotation_at_a_time_and_no_early_commit(tmp_path: Path) -> None:
    node = _node(tmp_path)
    assert node.receive(dl.encode(DEVICE, 1, [dl.rekey(1, 1, K2)], K1)) is None
    # Another key while K2 is pending, and rekey_done under the old key: refused.
    assert node.receive(dl.encode(DEVICE, 2, [dl.rekey(2, 2, K3), dl.rekey_done(3, 1)],
                                  K1)) is None
    assert node.entries[-2:] == [dl.report_entry(2, dl.CMD_STATE),
                                 dl.report_entry(3, dl.CMD_STATE)]
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert (cfg["key"], cfg["key_next"]) == (K1.hex(), K2.hex())
    # The same K2 again (the gateway did not see the report): harmless.
    assert node.receive(dl.encode(DEVICE, 3, [dl.rekey(4, 1, K2)], K1)) is None
    assert node.entries[-1] == dl.report_entry(4, dl.APPLIED)
    # Any downlink under K2 commits it; the old key is then refused.
    assert node.receive(dl.encode(DEVICE, 4, [dl.ack_alarm(5, 0)], K2)) is None
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["key"] == K2.hex() and "key_next" not in cfg and cfg["key_no"] == 1
    assert node.receive(dl.encode(DEVICE, 5, [dl.ack_alarm(6, 0)], K1)) == "dl_forged"
    assert node.counts == {"dl_forged": 1}


def test_radio_codes_apply_on_a_lora_node_only(tmp_path: Path) -> None:
    lora = _node(tmp_path / "lora", "lora")
    assert lora.receive(dl.encode(DEVICE, 1, [dl.config(1, {11: 10, 13: 868300000})],
                                  K1)) is None
    assert lora.entries == [dl.report_entry(1, dl.APPLIED)]
    cfg = json.loads((tmp_path / "lora" / "config.json").read_text())
    assert cfg["radio"] == {"sf": 10, "freq_hz": 868300000}
    assert lora.changed == [("radio", "sf"), ("radio", "freq_hz")]
    bad = lora.receive(dl.encode(DEVICE, 2, [dl.config(2, {13: 868200000, 12: 20})], K1))
    assert bad is None
    assert lora.entries[-2:] == [dl.report_entry(2, dl.CMD_RANGE, 12),
                                 dl.report_entry(2, dl.CMD_RANGE, 13)]
    uart = _node(tmp_path / "uart")
    uart.receive(dl.encode(DEVICE, 1, [dl.config(1, {11: 10})], K1))
    assert uart.entries == [dl.report_entry(1, dl.CMD_KEY, 11)]


def test_report_survives_a_restart_until_sent(tmp_path: Path) -> None:
    node = _node(tmp_path)
    node.receive(dl.encode(DEVICE, 1, [dl.reboot(7)], K1))
    assert node.reboot
    again = _node(tmp_path, fresh=False)
    assert again.report() == [dl.FLAG_WANT | dl.FLAG_CLOCK, dl.report_entry(7, dl.APPLIED)]
    again.report_sent()
    assert _node(tmp_path, fresh=False).report() == [dl.FLAG_WANT | dl.FLAG_CLOCK]


def test_staging_survives_a_reboot_and_a_cut_set_folder_does_not(tmp_path: Path) -> None:
    from firmware import downlink_update

    node = _node(tmp_path)
    for top in ("firmware", "protocol"):
        (tmp_path / "lib" / top).mkdir(parents=True)
        (tmp_path / "lib" / top / "__init__.py").write_text("")
    data = dl.bundle([("firmware/probe.py", b"VERSION = 2\n")])
    node.receive(dl.encode(DEVICE, 1, [dl.upd_begin(1, 1, len(data)),
                                       dl.upd_chunk(2, 1, 0, data[:20])], K1))
    (tmp_path / "upd" / "s7" / "firmware").mkdir(parents=True)    # a switch cut short
    assert downlink_update.boot_hook(str(tmp_path / "upd")) == (None, None)
    assert sorted(p.name for p in (tmp_path / "upd").iterdir()) == ["bundle.bin", "stage.json"]
    node = _node(tmp_path, fresh=False)
    assert node.report()[0] & dl.FLAG_UPDATE
    node.receive(dl.encode(DEVICE, 2, [dl.upd_chunk(3, 1, 20, data[20:]),
                                       dl.upd_switch(4, 1)], K1))
    assert node.entries[-2:] == [dl.report_entry(3, dl.APPLIED), dl.report_entry(4, dl.APPLIED)]
    folder, _ = downlink_update.boot_hook(str(tmp_path / "upd"))
    assert folder is not None
    assert (Path(folder) / "firmware" / "probe.py").read_bytes() == b"VERSION = 2\n"


_args = st.recursive(
    st.integers(-(2**40), 2**40) | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.integers(0, 20), inner, max_size=3),
    max_leaves=6)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 0xFFFF), st.integers(0, 12),
                          st.lists(_args, max_size=4)), min_size=1, max_size=4))
def test_any_authentic_command_list_is_applied_or_refused_never_raises(
    cmds: list[tuple[int, int, list[object]]],
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for top in ("firmware", "protocol"):
            (root / "lib" / top).mkdir(parents=True)
        node = _node(root)
        node.uplink_sent(7, 0)
        raw_cmds = [[cid, op, *args] for cid, op, args in cmds]
        try:
            raw = dl.encode(DEVICE, 1, raw_cmds, K1)
        except Exception:
            return      # longer than a downlink may be
        reason = node.receive(raw)
        if reason is not None:
            # Nested deeper than any command's arguments (protocol.downlink._item).
            assert reason == "dl_payload" and node.entries == [] and node.last == -1
            return
        assert len(node.entries) >= len(cmds)
        for entry in node.entries:
            assert entry >> 8 in {cid for cid, _, _ in cmds}
        assert json.loads((root / "config.json").read_text())["key"] == K1.hex() or \
            any(op == dl.OP_REKEY for _, op, _ in cmds)
