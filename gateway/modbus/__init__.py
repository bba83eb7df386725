"""Modbus RTU/TCP devices as a gateway source.

- ``decode``: register codecs (u16 .. float64, word and byte order) and the RTU CRC;
- ``regmap``: declarative TOML register maps, validated at load (``maps/``, package
  data read with ``importlib.resources``, ships templates);
- ``settings``: the gateway config's ``[modbus]`` table;
- ``link``: one pymodbus client and its lock; a failed request's reason;
- ``history``: hour-boundary samples for the hourly profile, and the state file;
- ``poller``: polls every device on its interval and hands each answer on in the
  shape ``protocol.frame.decode`` returns, so the rest of the gateway treats it as
  a radio frame; failures are counted by reason and a device that stops answering
  gets an ``offline`` condition.

docs/modbus.md is the reference.
"""
