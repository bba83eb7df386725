# File helpers for downlink commands (firmware.downlink, firmware.downlink_update):
# atomic JSON files in the manner of firmware.state.Store, and whole-folder
# copy and removal for module sets. Only os and json: the boot hook of
# firmware.downlink_update loads this before any other firmware module.

import json
import os

_DIR = 0x4000   # stat mode bit of a directory (S_IFDIR)


def write_atomic(path, text, pause=None):
    """Write `text` to `path` through `path`.tmp and a rename (old or new after a cut).

    `pause(path)` (bench only) is called halfway through the temporary file.
    """
    tmp = path + ".tmp"
    with open(tmp, "w") as handle:
        if pause is not None:
            half = len(text) // 2
            handle.write(text[:half])
            handle.flush()
            pause(path)
            handle.write(text[half:])
        else:
            handle.write(text)
    os.rename(tmp, path)


def read_json(path):
    """The JSON value in `path`, or None when it is absent or unreadable."""
    try:
        with open(path) as handle:
            return json.loads(handle.read())
    except (OSError, ValueError):
        return None


def is_dir(path):
    """True if `path` is a directory."""
    try:
        return bool(os.stat(path)[0] & _DIR)
    except OSError:
        return False


def exists(path):
    """True if `path` exists."""
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def remove_tree(path):
    """Remove `path` and everything under it (nothing if it is absent)."""
    if not is_dir(path):
        if exists(path):
            os.remove(path)
        return
    for name in os.listdir(path):
        remove_tree(path + "/" + name)
    os.rmdir(path)


def make_dirs(path):
    """Create `path` and its missing parents."""
    parts = path.split("/")
    built = parts[0]                # "" for an absolute path
    if built and not is_dir(built):
        os.mkdir(built)
    for part in parts[1:]:
        built = built + "/" + part
        if part and not is_dir(built):
            os.mkdir(built)


def copy_tree(src, dst, buf):
    """Copy the folder `src` to `dst` (created), file by file through `buf`."""
    make_dirs(dst)
    for name in os.listdir(src):
        here = src + "/" + name
        there = dst + "/" + name
        if is_dir(here):
            copy_tree(here, there, buf)
            continue
        with open(here, "rb") as source, open(there, "wb") as target:
            while True:
                n = source.readinto(buf)
                if not n:
                    break
                target.write(buf if n == len(buf) else memoryview(buf)[:n])
