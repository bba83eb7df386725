"""What docs/mqtt.md, docs/modbus.md and the reading schema name exists in the code.

Prose drifts where tables are checked: a retained flag restated in another
page, a configuration key that is only a constructor argument, a schema
description listing a field the gateway never publishes.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from knute.gateway.registry import Device

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


def _text(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


def _topic_table() -> dict[str, tuple[str, str]]:
    # docs/mqtt.md "Topics": topic -> (QoS, retained yes/no)
    rows = re.findall(r"^\| `([^`]+)` \| [^|]+ \| (\d) \| (yes|no) \|$", _text("mqtt.md"),
                      flags=re.M)
    return {topic: (qos, retained) for topic, qos, retained in rows}


def test_every_page_that_restates_a_topics_qos_and_retain_agrees_with_mqtt_md() -> None:
    table = _topic_table()
    assert table["<prefix>/<kind>/<device>/condition"] == ("1", "yes")
    found = 0
    for page in sorted(DOCS.glob("*.md")):
        prose = " ".join(page.read_text(encoding="utf-8").split())
        for qos, negated, topic in re.findall(
                r"QoS (\d),? and (not )?retained,? on `([^`]+)`", prose):
            found += 1
            assert topic in table, (page.name, topic)
            assert (qos, "no" if negated else "yes") == table[topic], (page.name, topic)
    assert found >= 1


def _config_keys() -> set[str]:
    # Keys of docs/operations.md's configuration reference, and of the code that reads them.
    reference = _text("operations.md").split("## Configuration reference", 1)[1]
    reference = reference.split("\n## ", 1)[0]
    keys = set()
    for cell in re.findall(r"^\| ([^|]+) \|", reference, flags=re.M):
        keys.update(re.findall(r"`([a-z_]+)`", cell))
    code = "".join((ROOT / "gateway" / f).read_text(encoding="utf-8")
                   for f in ("config.py", "modbus/settings.py"))
    return {key for key in keys if f'"{key}"' in code}


def _schema_fields() -> set[str]:
    names: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "properties" and isinstance(value, dict):
                    names.update(value)
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for schema in DOCS.glob("schema/*.schema.json"):
        walk(json.loads(schema.read_text(encoding="utf-8")))
    return names


def test_settings_named_in_mqtt_md_are_configuration_keys_or_published_fields() -> None:
    # `[table] key` is a setting; a name with a unit suffix in the prose is a setting
    # or a field of the schemas or of the page's own field tables.
    text = _text("mqtt.md")
    keys = _config_keys()
    assert {"prefix", "protocol", "keepalive", "max_mb"} <= keys
    lines = text.splitlines()
    tables = "\n".join(line for line in lines if line.startswith("|"))
    prose = "\n".join(line for line in lines if not line.startswith("|"))
    fields = _schema_fields() | set(re.findall(r"`([a-z_]+)`", tables))
    for table, key in re.findall(r"`\[([a-z_.]+)\] ([a-z_]+)`", text):
        assert key in keys, f"docs/mqtt.md names [{table}] {key}, not a configuration key"
    for name in re.findall(r"`([a-z_]+_(?:s|ms|mb|days|bytes))`", prose):
        assert name in keys or name in fields, (
            f"docs/mqtt.md names `{name}`: neither a configuration key nor a schema field")


def test_reading_site_description_names_only_what_is_published() -> None:
    schema = json.loads((DOCS / "schema" / "reading.schema.json").read_text(encoding="utf-8"))
    description = schema["properties"]["site"]["description"]
    named = set(re.findall(r"`([a-z_]+)`", description))
    device = Device(device_id=0x1234, kind="water_meter", key=bytes(16), name="Storgata 1",
                    site="north", location={"address": "Storgata 1", "lat": 63.43, "lon": 10.39})
    published = device.site_info()
    assert published is not None and "name" not in published
    assert named, "the site description names no field"
    assert named <= set(published), sorted(named - set(published))
