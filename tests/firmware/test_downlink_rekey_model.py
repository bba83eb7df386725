"""Key rotation against a model of the gateway, with power cuts and lost packets.

The gateway follows docs/protocol.md section 12.9 (durable current and next
key, committed in single steps); the node is the real firmware.downlink on
files, cut (an exception inside a write, so the rename never happens) at a
random write and rebuilt from its files as after a reset. Hypothesis drives
the interleaving. After every step: the key the node seals uplinks with is
one the gateway holds, and the key the gateway seals downlinks with is one
the node holds.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.downlink_model import Downlink
from firmware.state import Store
from knute.protocol import ccm
from knute.protocol import downlink as dl
from knute.protocol.errors import FrameError

DEVICE = 0x42
K1 = bytes(range(16))
K2 = bytes(range(16, 32))


class PowerCut(Exception):
    """Raised inside a node write: its rename never happens."""


class Gateway:
    """Section 12.9's gateway side; each assignment is one committed transaction."""

    def __init__(self) -> None:
        self.current = K1
        self.next: bytes | None = None
        self.dcnt = 0

    def held(self) -> set[bytes]:
        return {self.current} | ({self.next} if self.next else set())

    def downlink(self, cmd: list[object]) -> bytes:
        self.dcnt += 1      # taken and committed before the frame is built
        return dl.encode(DEVICE, self.dcnt, [cmd], self.current)

    def uplink(self, key: bytes, fcnt: int) -> bool:
        """Verify a node frame sealed with `key` (a CCM tag over a fixed payload)."""
        sealed = ccm.seal(ccm.aes_block(key), bytes(13), fcnt.to_bytes(4, "big"), b"x", 8)
        for candidate, is_next in ((self.current, False), (self.next, True)):
            if candidate is None:
                continue
            try:
                ccm.open_(ccm.aes_block(candidate), bytes(13), fcnt.to_bytes(4, "big"),
                          sealed, 8)
            except FrameError:
                continue
            if is_next:
                self.current, self.next = candidate, None     # commit
            return True
        return False


def _node(root: Path, cut_at: list[int]) -> Downlink:
    def pause(name: str) -> None:
        cut_at[0] -= 1
        if cut_at[0] == 0:
            raise PowerCut(name)

    return Downlink(Store(str(root / "state"), pause=pause), DEVICE,
                    str(root / "config.json"), lambda: 0, str(root / "upd"),
                    str(root / "lib"), pause)


STEPS = st.sampled_from(["start", "rekey", "uplink", "done", "lost"])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(STEPS, st.integers(0, 6)), min_size=1, max_size=30))
def test_node_and_gateway_always_share_a_key(steps: list[tuple[str, int]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "config.json").write_text(json.dumps(
            {"role": "water_meter", "device_id": DEVICE, "key": K1.hex(),
             "link": {"type": "uart"}}))
        gateway = Gateway()
        cut_at = [0]
        node = _node(root, cut_at)
        fcnt = 0
        rotated = False
        for step, cut in steps:
            cut_at[0] = cut     # 0: no cut; n: the n-th write or step of this one is cut
            try:
                if step == "start" and gateway.next is None and not rotated:
                    gateway.next = K2
                elif step == "rekey" and gateway.next is not None:
                    node.receive(gateway.downlink(dl.rekey(1, 1, gateway.next)))
                elif step == "uplink":
                    fcnt += 1
                    assert gateway.uplink(node.uplink_key(), fcnt), "gateway lost the node"
                    rotated = rotated or gateway.current == K2
                elif step == "done" and gateway.current == K2:
                    node.receive(gateway.downlink(dl.rekey_done(2, 1)))
                elif step == "lost" and gateway.next is not None:
                    gateway.downlink(dl.rekey(1, 1, gateway.next))  # never arrives
            except PowerCut:
                cut_at[0] = 0
                node = _node(root, cut_at)      # the reset: state from the files
            cut_at[0] = 0
            node_keys = {node.key} | ({node.key_next} if node.key_next else set())
            assert node.uplink_key() in gateway.held()
            assert gateway.current in node_keys
