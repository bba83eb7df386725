"""knute's city side: store readings, rebuild hourly consumption, find leaks.

The backend reads only the MQTT contract (docs/mqtt.md and docs/schema/*.json);
it imports nothing from ``gateway/``, ``protocol/``, ``firmware/`` or ``tools/``.
Rooms: ``hours`` (pure: readings -> one hourly series per meter), ``store``
(SQLite, WAL, versioned), ``analytics`` and ``alerts`` (pure signal rules and
hysteresis), ``ingest`` (schema check and counters), ``service`` (the MQTT
consumer that ties them together), ``config`` (the TOML file).
"""
