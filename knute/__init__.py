"""knute: MicroPython sensor nodes, compact encrypted CBOR frames, a store-and-forward gateway.

The one import package of the distribution. Its rooms are the repository's
top-level folders (DESIGN.md), linked here so that every Python module has
one name whether it runs from a checkout or from an installed wheel:

    knute.protocol   the wire format (also runs on MicroPython)
    knute.gateway    the gateway daemon
    knute.tools      the `knute` command, simulators, benchmarks, the test rig
    knute.backend    the city's side: MQTT consumer, store, leak signals
    knute.firmware   the node firmware, as files for `knute provision`

The firmware is written for a board's flash, where `protocol` and `firmware`
are top-level packages in /lib; CPython code does not import it as
`knute.firmware` (see knute.tools.board.board_import).
"""
