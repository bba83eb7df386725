"""Simulators: fleet, simulate engine, Modbus meters, virtual boards, packet forwarder."""
