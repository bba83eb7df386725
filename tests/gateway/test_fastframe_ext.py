"""The compiled payload walk (gateway/_fastframe.c): hostile bytes, its spec, its loading.

tests/gateway/test_fastframe.py pins both walks to ``protocol.frame`` with
hypothesis; here the compiled walk meets 200,000 random and mutated payloads (a
fixed seed) and must answer each exactly as the Python walk does, never crash and
never leak; a spec it cannot take leaves that kind to the Python walk.
"""

from __future__ import annotations

import gc
import importlib
import os
import random
import shutil
import subprocess
import sys
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from knute.gateway import fastframe, fastwalk
from knute.protocol import cbor, kinds

ROOT = Path(__file__).resolve().parents[2]

try:
    compiled: Any = importlib.import_module("knute.gateway._fastframe")
except ImportError:
    compiled = None

needs_extension = pytest.mark.skipif(compiled is None, reason="gateway/_fastframe.c not built "
                                     "(no C compiler, or KNUTE_BUILD_EXT=0)")


def valid_payloads() -> list[tuple[int, bytes]]:
    """Payloads of both kinds that the walks take: typical and at the range edges."""
    from knute.tools.sim.typical import TYPICAL

    out = []
    for kind_id, name, fields in kinds.TABLE:
        out.append((kind_id, cbor.encode(kinds.pack_id(kind_id, TYPICAL[name]))))
        for pick in (0, 1):
            values = []
            for field in fields:
                lo, hi = kinds.field_range(field)
                edge = (lo, hi)[pick]
                values.append([edge] * field[7][1] if field[1] == "series" else edge)
            out.append((kind_id, cbor.encode(values)))
    return out


def hostile(rng: random.Random, seeds: list[tuple[int, bytes]]) -> tuple[int, bytes]:
    """One random or mutated payload of a random kind."""
    kind_id, plain = rng.choice(seeds)
    how = rng.randrange(4)
    if how == 0:
        return kind_id, rng.randbytes(rng.randrange(0, 80))
    bad = bytearray(plain)
    if how == 1:     # bytes changed
        for _ in range(rng.randrange(1, 4)):
            bad[rng.randrange(len(bad))] = rng.randrange(256)
    elif how == 2:   # cut short, or bytes added at the end
        bad = bad[:rng.randrange(len(bad))] if rng.random() < 0.5 else bad + rng.randbytes(3)
    else:            # a head byte that announces more than follows
        bad[rng.randrange(len(bad))] = rng.choice([0x1B, 0x3B, 0x98, 0x99, 0x9F, 0xF6, 0xFF])
    return kind_id, bytes(bad)


@needs_extension
def test_hostile_payloads_answer_as_the_python_walk() -> None:
    rng = random.Random(1801)
    seeds = valid_payloads()
    walks_c = {kid: compiled.Decoder(*fastframe.decoder_spec(kid)) for kid in fastframe.KINDS}
    taken = 0
    for _ in range(200_000):
        kind_id, plain = hostile(rng, seeds)
        answer = walks_c[kind_id](plain, 7, 9, 4)
        assert answer == fastframe.KINDS[kind_id].decode_python(plain, 7, 9, 4), plain.hex()
        taken += answer is not None
    # The mutations keep enough payloads valid that the accepting branches ran too.
    assert taken > 10_000


@needs_extension
def test_no_reference_is_leaked_on_any_path() -> None:
    # Accepted, left-to-the-protocol and out-of-memory-free error paths, many times:
    # the memory held afterwards does not grow with the number of calls.
    rng = random.Random(18)
    seeds = valid_payloads()
    cases = [hostile(rng, seeds) for _ in range(2_000)] + seeds * 50
    walks_c = {kid: compiled.Decoder(*fastframe.decoder_spec(kid)) for kid in fastframe.KINDS}

    def run() -> None:
        for kind_id, plain in cases:
            walks_c[kind_id](plain, 1, 2, 4)
            walks_c[kind_id](bytearray(plain), 1, 2, 4)

    run()
    gc.collect()
    tracemalloc.start()
    try:
        run()
        gc.collect()
        first = tracemalloc.get_traced_memory()[0]
        for _ in range(5):
            run()
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - first
    finally:
        tracemalloc.stop()
    # 5 x 4,800 calls: a leak of even one small object per call would be > 100 KB
    assert grown < 20_000, grown


@needs_extension
def test_calls_and_buffers() -> None:
    decode = compiled.Decoder(*fastframe.decoder_spec(1))
    kind_id, plain = valid_payloads()[0]
    assert kind_id == 1
    expected = fastframe.KINDS[1].decode_python(plain, 7, 9, 4)
    assert expected is not None
    for buf in (plain, bytearray(plain), memoryview(plain)):
        assert decode(buf, 7, 9, 4) == expected
    assert decode(b"", 7, 9, 4) is None
    with pytest.raises(TypeError):
        decode(plain, 7, 9)
    with pytest.raises(TypeError):
        decode(plain, 7, 9, 4, 5)
    with pytest.raises(TypeError):
        decode(plain, 7, 9, tag_len=4)
    with pytest.raises(TypeError):
        decode("not bytes", 7, 9, 4)
    assert decode.kind == "water_meter" and "water_meter" in repr(decode)


@needs_extension
def test_specs_it_cannot_take_are_refused() -> None:
    name, kid, fields = fastframe.decoder_spec(1)
    field = ("x", 0, 10, False, False, -1, -1)
    bad = {
        "too many fields": (field,) * 24,
        "range upside down": (("x", 5, 4, False, False, -1, -1),),
        "series too long": (("x", 0, 1, False, False, 1, 256),),
        "series lengths upside down": (("x", 0, 1, False, False, 3, 2),),
        "required after optional": (("x", 0, 1, False, True, -1, -1), field),
    }
    for why, spec in bad.items():
        with pytest.raises(ValueError):
            compiled.Decoder(name, kid, spec)
        assert why
    with pytest.raises(OverflowError):     # beyond 64 bits: the Python walk keeps it
        compiled.Decoder(name, kid, (("x", 0, 2**64, False, False, -1, -1),))
    with pytest.raises(TypeError):
        compiled.Decoder(name, kid, (["x", 0, 1, False, False, -1, -1],))
    assert compiled.Decoder(name, kid, fields)(b"\x80", 1, 2, 4) is None


def test_the_compiled_walk_runs_where_it_is_built() -> None:
    # A checkout with a C compiler builds it (make bootstrap); then every kind uses it.
    wanted = (os.environ.get("KNUTE_FAST_PATH", "").lower() != "python"
              and os.environ.get("KNUTE_BUILD_EXT", "1") != "0")
    if compiled is None:
        assert not wanted or shutil.which("cc") is None, "a C compiler, but no extension"
        assert fastframe.FAST_PATH == "python"
        return
    expected = "c" if wanted else "python"
    assert expected == fastframe.FAST_PATH
    # `knute gateway check` reports the walk without loading the kinds table
    # (fastwalk.which): it must name the one the fast path runs.
    assert fastwalk.which() == fastframe.FAST_PATH
    for kind in fastframe.KINDS.values():
        assert (kind.decode is not kind.decode_python) == wanted


def test_knute_fast_path_python_keeps_the_python_walk() -> None:
    env = {**os.environ, "KNUTE_FAST_PATH": "python"}
    out = subprocess.run(
        [sys.executable, "-c", "from knute.gateway import fastframe as f\n"
         "print(f.FAST_PATH, all(k.decode is k.decode_python for k in f.KINDS.values()))"],
        capture_output=True, text=True, timeout=120, env=env, cwd=ROOT, check=True)
    assert out.stdout.split() == ["python", "True"]
