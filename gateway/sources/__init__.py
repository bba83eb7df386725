"""Frame sources: serial links (pyserial) and Semtech UDP packet forwarders.

Every source runs its own thread, turns what it hears into
``gateway.pipeline.Reception`` objects and hands them to a sink (the daemon's
ingest queue). Link-level faults are counted by reason where they happen.
"""
