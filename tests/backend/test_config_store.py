"""The store and retention keys of the backend's configuration; errors name file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from knute.backend.config import ConfigError, load
from knute.backend.store import open_store
from knute.backend.store_sqlite import Store


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "backend.toml"
    path.write_text(text)
    return path


def test_retention_and_a_server_url(tmp_path: Path) -> None:
    config = load(write(tmp_path, """
[store]
url = "postgresql://knute@db.example/water"
[water]
timezone = "Europe/Oslo"
[retention]
readings_days = 90
hourly_days = 1095
daily_days = 0
every_s = 600
"""))
    assert config.store_url == "postgresql://knute@db.example/water"
    policy = config.retention()
    assert (policy.readings_days, policy.hourly_days, policy.daily_days) == (90, 1095, 0)
    assert str(policy.timezone) == "Europe/Oslo" and config.retention_every_s == 600


def test_the_default_store_is_the_sqlite_file_and_keeps_everything(tmp_path: Path) -> None:
    config = load(write(tmp_path, ""))
    assert config.store_url == "" and config.retention().readings_days == 0
    store = open_store(config)
    assert isinstance(store, Store) and store.path == str(tmp_path / "knute-backend.sqlite")
    store.close()


@pytest.mark.parametrize(("text", "message"), [
    ('[store]\nurl = "mysql://x"', r"backend\.toml: store\.url: expected a postgresql:// URL"),
    ('[store]\nurl = "postgresql:///w"\npath = "b.sqlite"',
     r"backend\.toml: store\.url and store\.path: give one store"),
    ("[retention]\nreadings_days = -1", r"backend\.toml: retention\.readings_days: must not "
                                        "be negative"),
    ("[retention]\nreadings_days = 30\nhourly_days = 35",
     r"backend\.toml: retention\.hourly_days: must be at least retention\.readings_days \+ 11"),
    ("[retention]\nhourly_days = 400", r"retention\.hourly_days: .*readings_days must be set"),
    ("[retention]\nreadings_days = 30\nhourly_days = 400\ndaily_days = 100",
     r"backend\.toml: retention\.daily_days: must be 0 \(for ever\) or at least"),
    ("[retention]\nkeep = 3", r"backend\.toml: unknown key retention\.keep"),
    ('[retention]\nreadings_days = "a month"',
     r"backend\.toml: retention\.readings_days: expected float"),
])
def test_bad_store_or_retention_keys_are_one_line_naming_the_key(
        tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(write(tmp_path, text))
