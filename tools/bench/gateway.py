"""``knute bench gateway``: the gateway's figures, measured in one run on this machine.

- decode+verify frames/s on one core along the pipeline's hot path
  (``gateway.pipeline_checks.Verifier.verify``: header, cached AESCCM, payload checks);
- end to end frames/s from a source thread to broker-acknowledged: JSON built
  by gateway.message, committed through ``spool.AcceptBatcher`` (50 ms / 256
  frames, synchronous=FULL), published by the Forwarder, deleted on PUBACK;
  side by side with a bare paho-mqtt QoS 1 publish loop of the same JSON
  messages to the same broker (same in-flight window);
- the time to drain a spool of ``--backlog`` frames after an outage (the
  broker comes back; timed from its restart to an empty spool), and the peak
  RSS of that process (spool filled, then drained), in a child process so
  that nothing else this benchmark holds counts;
- the bytes per spooled reading: the spool file (checkpointed) divided by the
  ``--backlog`` readings in it, and the JSON bytes per reading published, for
  the same mix (two water meters for one air node, one receiver each).

A Mosquitto (/usr/sbin/mosquitto) on a free loopback port is started and
stopped by the benchmark itself.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from knute.tools.rig.broker import MOSQUITTO, Broker

ROOT = Path(__file__).resolve().parents[2]

GOALS = {
    "decode_verify_per_s": 100_000.0,     # at least
    "ratio_vs_bare_paho": 0.9,            # at least, at the default in-flight window
    "drain_s": 60.0,                      # at most (for 1,000,000 frames)
    "peak_rss_mb": 50.0,                  # at most
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the gateway benchmark."""
    parser.add_argument("--frames", type=int, default=200_000,
                        help="frames decoded+verified (default 200000)")
    parser.add_argument("--messages", type=int, default=50_000,
                        help="messages for the end-to-end and bare paho runs (default 50000)")
    parser.add_argument("--backlog", type=int, default=1_000_000,
                        help="frames spooled during the outage (default 1000000)")
    parser.add_argument("--inflight", type=int, default=20,
                        help="QoS 1 in-flight window, forwarder and bare paho (default 20, "
                             "the gateway's [mqtt] max_inflight)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--drain-child", help=argparse.SUPPRESS)


# -- workload --------------------------------------------------------------------------


RECEIVER = {"source": "lora0", "rssi_dbm": -97, "snr_db": 7.5, "freq_hz": 868_100_000,
            "sf": 9}


def _accepted_stream(count: int, devices: int = 1000, gateway_id: str = "bench",
                     prefix: str = "knute") -> Iterator[Any]:
    """``count`` Accepted readings as the pipeline hands them over, devices round robin.

    Values and radio metadata vary from reading to reading (seeded), as in the
    field, so that the spool's compression is measured on realistic rows.
    """
    import random

    from knute.gateway import message
    from knute.gateway.spool import Accepted
    from knute.tools.sim.typical import TYPICAL

    rng = random.Random(11)
    kinds_of = {dev: ("water_meter" if dev % 3 else "air_quality")
                for dev in range(1, devices + 1)}
    kind_ids = {"water_meter": 1, "air_quality": 2}
    for i in range(count):
        dev = i % devices + 1
        fcnt = i // devices
        kind = kinds_of[dev]
        now = time.time()
        values = dict(TYPICAL[kind])
        if kind == "water_meter":
            values.update(index=rng.randrange(10_000, 9_000_000), battery=rng.randrange(10, 21),
                          profile=[rng.randrange(0, 90) for _ in range(6)],
                          profile_end_h=int(now // 3600) % 256)
        else:
            values.update(pm1=rng.randrange(400), pm2_5=rng.randrange(600),
                          pm10=rng.randrange(900), temperature=rng.randrange(-250, 350),
                          humidity=rng.randrange(10, 101), pressure=rng.randrange(9600, 10400))
        receiver = dict(RECEIVER, rssi_dbm=rng.randrange(-125, -60),
                        snr_db=rng.randrange(-150, 110) / 10,
                        freq_hz=rng.choice((868_100_000, 868_300_000, 868_500_000)),
                        sf=rng.randrange(7, 13))
        reading = message.Reading(
            device_id=dev, kind=kind, kind_id=kind_ids[kind], fcnt=fcnt, values=values,
            received_at=now, receivers=[receiver], source="radio", site=None,
            gateway_id=gateway_id, prefix=prefix)
        decoded = {"kind_id": kind_ids[kind], "values": values}
        # As the pipeline hands it over: the JSON built in the ingest thread (epoch 0).
        yield Accepted(device_id=dev, fcnt=fcnt, kind=kind, topic=reading.topic(),
                       payload=reading.json(0), alarm=message.is_alarm(decoded),
                       received_at=now, reading=reading, epoch=0)


# -- broker ----------------------------------------------------------------------------


def _mosquitto(workdir: str) -> Broker:
    """A throwaway Mosquitto on 127.0.0.1 (not started)."""
    if not os.access(MOSQUITTO, os.X_OK):
        from knute.gateway.errors import KnuteError

        raise KnuteError(f"{MOSQUITTO} not found: install it (apt-get install mosquitto)")
    return Broker(Path(workdir), "mosquitto")


# -- figures ---------------------------------------------------------------------------


def bench_decode_verify(frames: int) -> float:
    """Frames/s through the pipeline's Verifier on this thread: the same measurement
    as ``knute bench protocol`` (best of its rounds), so both print one figure."""
    from knute.tools.bench.protocol import _rate, _workload, gateway_path_passes

    work, keys = _workload()
    verify, new_pass = gateway_path_passes(keys)
    return _rate(verify, work, frames, new_pass)


def bench_bare_paho(port: int, payloads: list[tuple[str, bytes]],
                    inflight: int) -> tuple[float, float]:
    """(messages/s, CPU µs per message) of a plain paho QoS 1 publish loop
    (loop_start, wait for every PUBACK)."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    done = threading.Event()
    acked = [0]
    total = len(payloads)

    def on_publish(client: Any, userdata: Any, mid: int, rc: Any, props: Any) -> None:
        acked[0] += 1
        if acked[0] >= total:
            done.set()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-bare")
    client.max_inflight_messages_set(inflight)
    client.max_queued_messages_set(0)
    client.on_publish = on_publish
    client.connect("127.0.0.1", port, 30)
    client.loop_start()
    start, cpu = time.perf_counter(), time.process_time()
    for topic, payload in payloads:
        client.publish(topic, payload, qos=1)
    done.wait(timeout=600)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    client.loop_stop()
    client.disconnect()
    return acked[0] / elapsed, cpu / max(1, acked[0]) * 1e6


def bench_bare_amqtt(port: int, payloads: list[tuple[str, bytes]],
                     inflight: int) -> tuple[float, float] | None:
    """(messages/s, CPU µs per message) of amqtt's asyncio client publishing the same
    messages at QoS 1 with ``inflight`` publishes awaiting their PUBACK; None
    without amqtt (the demo extra)."""
    try:
        from amqtt.client import MQTTClient  # type: ignore[import-untyped]
    except ImportError:
        return None
    import asyncio
    import logging

    logging.getLogger("amqtt").setLevel(logging.ERROR)

    async def main() -> tuple[int, float, float]:
        client = MQTTClient(client_id="bench-amqtt", config={"auto_reconnect": False})
        await client.connect(f"mqtt://127.0.0.1:{port}/")
        window = asyncio.Semaphore(inflight)
        acked = 0

        async def one(topic: str, payload: bytes) -> None:
            nonlocal acked
            try:
                await client.publish(topic, payload, qos=1)
                acked += 1
            finally:
                window.release()

        tasks = []
        start, cpu = time.perf_counter(), time.process_time()
        for topic, payload in payloads:
            await window.acquire()
            tasks.append(asyncio.ensure_future(one(topic, payload)))
        await asyncio.gather(*tasks)
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
        await client.disconnect()
        return acked, elapsed, cpu

    acked, elapsed, cpu = asyncio.run(main())
    return acked / elapsed, cpu / max(1, acked) * 1e6


def bench_ingest_cpu(devices: int = 500, per_device: int = 10) -> float:
    """CPU µs per frame of the ingest thread's work before the spool: Pipeline.submit
    (header, registry, verify, replay, dedup window), release and to_accepted (the
    reading's JSON), for frames of both kinds with one receiver each."""
    from knute.gateway.pipeline import Pipeline, Reception, to_accepted
    from knute.gateway.registry import Device
    from knute.protocol import ccm, frame
    from knute.tools.sim.typical import TYPICAL

    keys = {dev: os.urandom(16) for dev in range(1, devices + 1)}
    registry = {dev: Device(dev, "water_meter" if dev % 3 else "air_quality", key)
                for dev, key in keys.items()}
    frames = []
    for dev, key in keys.items():
        block = ccm.aes_block(key)
        for fcnt in range(per_device):
            frames.append(frame.encode(registry[dev].kind, dev, fcnt, TYPICAL[registry[dev].kind],
                                       key, 4, block))
    frames.sort(key=lambda raw: frame.parse_header(raw)[2])   # counters rise per device
    pipeline = Pipeline(registry)
    now = time.time()
    start = time.process_time()
    for i, raw in enumerate(frames):
        pipeline.submit(Reception("lora0", "radio", raw, now, float(i), RECEIVER))
    released = [to_accepted(ready, prefix="knute", gateway_id="bench")
                for ready in pipeline.due(float("inf"))]
    cpu = time.process_time() - start
    if len(released) != len(frames):
        from knute.gateway.errors import KnuteError

        raise KnuteError(f"ingest benchmark: {len(released)} of {len(frames)} frames accepted")
    return cpu / len(frames) * 1e6


def bench_end_to_end(port: int, rows: list[Any], inflight: int,
                     workdir: str) -> tuple[float, float]:
    """(frames/s, CPU µs per frame) from a source thread through spool and forwarder to
    PUBACK; the CPU time is this process's (every thread), the broker's not counted."""
    from knute.gateway.forwarder import Forwarder, MqttConfig
    from knute.gateway.spool import AcceptBatcher, Spool

    spool = Spool(os.path.join(workdir, "e2e.db"), max_bytes=4 << 30, max_age_s=86400.0)
    fwd = Forwarder(spool, MqttConfig(host="127.0.0.1", port=port, max_inflight=inflight,
                                      client_id="bench-e2e"),
                    gateway_id="bench", status_provider=dict)
    fwd.start()
    deadline = time.monotonic() + 10
    while fwd.state != "open" and time.monotonic() < deadline:
        time.sleep(0.01)
    batcher = AcceptBatcher(spool, on_commit=lambda batch: fwd.wake())
    batcher.start()
    start, cpu = time.perf_counter(), time.process_time()
    for row in rows:
        batcher.add(row)
    batcher.flush()
    deadline = time.monotonic() + 600
    while spool.depth and time.monotonic() < deadline:   # no query: not charged
        time.sleep(0.002)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    delivered = spool.stats()["acked_total"]
    batcher.stop()
    fwd.stop(5)
    spool.close()
    return delivered / elapsed, cpu / max(1, delivered) * 1e6


def _drain_child(workdir: str, backlog: int, inflight: int) -> dict[str, float]:
    """In a child process: spool ``backlog`` frames while the broker is down, then drain."""
    from knute.gateway.forwarder import Forwarder, MqttConfig
    from knute.gateway.spool import Spool

    broker = _mosquitto(workdir)
    spool = Spool(os.path.join(workdir, "drain.db"), max_bytes=16 << 30, max_age_s=86400.0)
    fwd = Forwarder(spool, MqttConfig(host="127.0.0.1", port=broker.port, max_inflight=inflight,
                                      client_id="bench-drain", backoff_min_s=0.1,
                                      backoff_max_s=1.0, connect_timeout_s=2.0),
                    gateway_id="bench", status_provider=dict)
    fwd.start()        # the broker is down: the forwarder backs off and retries
    batch = []
    for row in _accepted_stream(backlog):
        batch.append(row)
        if len(batch) == 256:
            spool.accept(batch)
            batch = []
    spool.accept(batch)
    # The bytes one spooled reading takes on disk: the file, checkpointed, per row.
    path = os.path.join(workdir, "drain.db")
    fwd.stop(5)
    spool.close()
    file_bytes = os.path.getsize(path)
    spool = Spool(path, max_bytes=16 << 30, max_age_s=86400.0)
    fwd = Forwarder(spool, MqttConfig(host="127.0.0.1", port=broker.port, max_inflight=inflight,
                                      client_id="bench-drain", backoff_min_s=0.1,
                                      backoff_max_s=1.0, connect_timeout_s=2.0),
                    gateway_id="bench", status_provider=dict)
    fwd.start()
    broker.start()
    start, cpu = time.perf_counter(), time.process_time()
    deadline = time.monotonic() + 1800
    while spool.depth and time.monotonic() < deadline:   # no query: not charged
        time.sleep(0.01)
    drain_s, cpu = time.perf_counter() - start, time.process_time() - cpu
    left = spool.stats()["depth"]
    fwd.stop(5)
    spool.close()
    broker.stop()
    rss_kb = 0
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                rss_kb = int(line.split()[1])
    return {"drain_s": drain_s, "drain_cpu_s": cpu, "peak_rss_mb": rss_kb / 1024, "left": left,
            "spool_bytes_per_reading": file_bytes / max(1, backlog)}


def run(args: argparse.Namespace) -> int:
    """Run every part and print the figures."""
    if args.drain_child:
        workdir, backlog, inflight = args.drain_child.split(",")
        print(json.dumps(_drain_child(workdir, int(backlog), int(inflight))))
        return 0
    workdir = tempfile.mkdtemp(prefix="knute-bench-gw-")
    try:
        decode = bench_decode_verify(args.frames)
        ingest_us = bench_ingest_cpu()
        rows = list(_accepted_stream(args.messages))
        payloads = [(row.topic, row.payload) for row in rows]
        json_per_reading = sum(len(p) for _, p in payloads) / max(1, len(payloads))
        broker = _mosquitto(workdir)
        broker.start()
        try:
            bare, bare_us = bench_bare_paho(broker.port, payloads, args.inflight)
            e2e, deliver_us = bench_end_to_end(broker.port, rows, args.inflight, workdir)
            amqtt = bench_bare_amqtt(broker.port, payloads, args.inflight)
        finally:
            broker.stop()
        del rows, payloads
        child = subprocess.run(
            [sys.executable, "-m", "knute.tools.cli", "bench", "gateway", "--drain-child",
             f"{workdir},{args.backlog},{args.inflight}"],
            cwd=ROOT, capture_output=True, text=True, timeout=3600, check=False)
        if child.returncode != 0:
            from knute.gateway.errors import KnuteError

            raise KnuteError(f"drain benchmark failed: {child.stderr.strip()[-500:]}")
        drain = json.loads(child.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result = {
        "decode_verify_per_s": round(decode),
        "end_to_end_per_s": round(e2e),
        "bare_paho_per_s": round(bare),
        "ratio_vs_bare_paho": round(e2e / bare, 3) if bare else 0.0,
        "bare_amqtt_per_s": round(amqtt[0]) if amqtt else None,
        "cpu_us_per_reading": round(ingest_us + deliver_us, 1),
        "cpu_us_ingest": round(ingest_us, 1),
        "cpu_us_spool_forward": round(deliver_us, 1),
        "bare_paho_cpu_us_per_msg": round(bare_us, 1),
        "bare_amqtt_cpu_us_per_msg": round(amqtt[1], 1) if amqtt else None,
        "backlog": args.backlog,
        "drain_s": round(drain["drain_s"], 1),
        "drain_cpu_s": round(drain["drain_cpu_s"], 1),
        "drain_cpu_us_per_reading": round(drain["drain_cpu_s"] / max(1, args.backlog) * 1e6, 1),
        "peak_rss_mb": round(drain["peak_rss_mb"], 1),
        "spool_bytes_per_reading": round(drain["spool_bytes_per_reading"]),
        "json_bytes_per_reading": round(json_per_reading),
    }
    if args.json:
        print(json.dumps(result))
        return 0
    per_million = args.backlog / 1_000_000
    goals = {
        "decode_verify_per_s": result["decode_verify_per_s"] >= GOALS["decode_verify_per_s"],
        "ratio_vs_bare_paho": result["ratio_vs_bare_paho"] >= GOALS["ratio_vs_bare_paho"],
        "drain_s": result["drain_s"] <= GOALS["drain_s"] * per_million,
        "peak_rss_mb": result["peak_rss_mb"] <= GOALS["peak_rss_mb"],
    }

    def mark(key: str) -> str:
        return "ok" if goals[key] else "MISSED"

    amqtt_line = (f"{result['bare_amqtt_per_s']:>10,} msg/s  "
                  f"{result['bare_amqtt_cpu_us_per_msg']:>7} µs CPU/msg" if amqtt
                  else "  (amqtt not installed: pip install 'knute[demo]')")
    print(f"decode+verify (pipeline Verifier, 1 core) {result['decode_verify_per_s']:>10,} "
          f"frames/s   goal 100,000   {mark('decode_verify_per_s')}")
    print(f"end to end (spool -> forwarder -> PUBACK) {result['end_to_end_per_s']:>10,} "
          f"frames/s {result['cpu_us_spool_forward']:>7} µs CPU/frame")
    print(f"bare paho QoS 1 publish loop              {result['bare_paho_per_s']:>10,} msg/s  "
          f"{result['bare_paho_cpu_us_per_msg']:>7} µs CPU/msg")
    print(f"bare amqtt QoS 1 publish loop             {amqtt_line}")
    print(f"ratio end to end / bare paho              {result['ratio_vs_bare_paho']:>10} "
          f"          goal 0.9        {mark('ratio_vs_bare_paho')}")
    print(f"CPU per reading, frame to PUBACK          {result['cpu_us_per_reading']:>10} µs "
          f"(ingest {result['cpu_us_ingest']}, spool+forward {result['cpu_us_spool_forward']})")
    print(f"drain {result['backlog']:,} spooled frames after an outage "
          f"{result['drain_s']:>8} s   goal 60 s per 1,000,000   {mark('drain_s')}  "
          f"({result['drain_cpu_s']} s CPU, {result['drain_cpu_us_per_reading']} µs a reading)")
    print(f"peak RSS with the backlog spooled          {result['peak_rss_mb']:>8} MB  "
          f"goal 50 MB   {mark('peak_rss_mb')}")
    print(f"spool file per spooled reading             {result['spool_bytes_per_reading']:>8} "
          f"bytes (JSON published: {result['json_bytes_per_reading']} bytes)")
    return 0
