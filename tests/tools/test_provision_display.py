"""``knute provision --kind display``: the config is built and checked by the firmware's rules."""

from __future__ import annotations

import argparse

import pytest

from knute.gateway.errors import KnuteError
from knute.tools.cli.provision import build_config


def _args(*settings: str) -> argparse.Namespace:
    return argparse.Namespace(config=None, kind="display", board="heltec_v3", link=None,
                              sf=None, set=list(settings))


def test_display_config_has_no_key_kind_or_uplink() -> None:
    config = build_config(_args("display.area=sentrum", "display.mqtt.host=broker.city",
                                "display.wifi.ssid=sculpture"), 0xD15, None, "unix")
    assert config["link"] == {"type": "none"}
    assert "kind" not in config and "key" not in config
    assert config["display"]["mqtt"] == {"host": "broker.city"}


def test_display_config_error_names_the_key() -> None:
    with pytest.raises(KnuteError) as err:
        build_config(_args("display.area=sentrum", "display.night.start=25:00",
                           "display.mqtt.host=b"), 0xD15, None, "unix")
    assert str(err.value) == ("config.json would be rejected by the firmware: "
                              "display.night.start must be a time of day HH:MM")
