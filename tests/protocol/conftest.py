"""Fixtures for protocol tests: MicroPython runs on the 64- and 32-bit builds."""

from tests.upybuild import micropython_bin, upy_bits

__all__ = ["micropython_bin", "upy_bits"]
