"""The display node's MQTT client takes a PUBLISH off the socket on a fragmented heap.

On a board that has run for weeks the heap is in pieces: many small blocks
free, no large one. A client that allocates its receive buffer on every read
(``sock.recv(512)``) then raises MemoryError with a packet waiting in the
socket, and the display never learns the new index. The client reads into a
buffer allocated once at boot instead. Run on the unix port (both builds):
tests/firmware/upy_mqttsub_heap.py squeezes the heap after subscribing, this
test plays the broker (MQTT 3.1.1, written from the standard) and checks the
message arrived and was acknowledged.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

from tests.firmware.test_mqttsub_peer import TOPIC, _read_packet

ROOT = Path(__file__).resolve().parents[2]
PAYLOAD = b'{"band":"fair","colour":"#50f0e6"}'


def test_a_publish_is_received_when_no_512_byte_block_is_free(
        micropython_bin: Path, flash_lib: Path, tmp_path: Path) -> None:
    node = tmp_path / "node"
    shutil.copytree(flash_lib, node / "lib")
    shutil.copy(ROOT / "tests" / "firmware" / "upy_mqttsub_heap.py", node / "heap.py")
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(20)
    port = server.getsockname()[1]
    proc = subprocess.Popen([str(micropython_bin), "-X", "heapsize=64k", "heap.py", str(port)],
                            cwd=node, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        conn, _ = server.accept()
        conn.settimeout(20)
        with conn:
            head, _ = _read_packet(conn)
            assert head == 0x10                                    # CONNECT
            conn.sendall(b"\x20\x02\x00\x00")                      # CONNACK, accepted
            head, body = _read_packet(conn)
            assert head == 0x82                                    # SUBSCRIBE
            conn.sendall(b"\x90\x03" + body[:2] + b"\x01")         # SUBACK, QoS 1
            assert proc.stdout is not None and proc.stdin is not None
            assert proc.stderr is not None
            assert proc.stdout.readline().strip() == "up", proc.stderr.read()
            topic = TOPIC.encode()
            body = len(topic).to_bytes(2, "big") + topic + b"\x00\x07" + PAYLOAD
            conn.sendall(bytes([0x33, len(body)]) + body)          # QoS 1, retained
            proc.stdin.write("go\n")
            proc.stdin.flush()
            out, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, out + err
            lines = dict(line.split(" ", 1) for line in out.strip().splitlines())
            # The squeeze worked: no 512-byte block was free while the client read.
            assert lines["fragmented"] == "1" and int(lines["kept"]) > 20, out
            assert lines.get("got") == PAYLOAD.decode(), out
            assert lines["messages"] == "1"
            head, body = _read_packet(conn)
            assert (head, body) == (0x40, b"\x00\x07")             # the PUBACK
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        server.close()
