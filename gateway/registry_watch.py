"""The running gateway's view of the registry: devices added or removed take effect.

``knute devices`` commits to the registry from another process; the ingest
loop polls the registry's ``PRAGMA data_version`` (it moves with every commit
of another connection, never with the daemon's own display-cache writes) and
hands a new snapshot to the pipeline. SIGHUP and the status socket's
``reload`` re-read it at once. A file copied over the open registry is not
read (its old -wal would mix in): one error line says how to restore safely.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from knute.gateway.pipeline import Pipeline
from knute.gateway.registry import Registry

log = logging.getLogger("knute.gateway")


class RegistryWatch:
    """Keeps the pipeline's devices in step with the registry file."""

    def __init__(self, registry: Registry, pipeline: Pipeline) -> None:
        self.registry = registry
        self.pipeline = pipeline
        self.checks = 0          # polls so far
        self.reloads = 0         # snapshots handed to the pipeline so far
        self._poll_error = ""
        self._replaced_logged = False
        self.on_reload: Callable[[], None] | None = None   # after each new snapshot
        # Asked when the file changed: False when only tables other than the devices
        # changed (the downlink store's), so the snapshot need not be read again.
        self.devices_changed: Callable[[], bool] | None = None

    def poll(self) -> None:
        """Pick up devices added or removed by ``knute devices`` without a signal."""
        path = self.registry.path
        self.checks += 1
        try:
            if self.registry.replaced():
                # A file copied or moved over the open registry: SQLite keeps the old
                # file's -wal next to it, and reading the new file through it would
                # mix the two. Keep what we have and say how to restore safely.
                if not self._replaced_logged:
                    self._replaced_logged = True
                    log.error("registry %s was replaced while the gateway had it open; "
                              "keeping %d devices. Restore a registry with the gateway "
                              "stopped (and its -wal/-shm removed), or while it runs with "
                              "sqlite3 %s '.restore BACKUP'", path,
                              len(self.pipeline.devices), path)
                return
            if not self.registry.changed():
                return
            if self.devices_changed is not None and not self.devices_changed():
                return
        except Exception as exc:  # keep the devices we have; try again on the next poll
            if str(exc) != self._poll_error:     # once per distinct problem
                self._poll_error = str(exc)
                log.error("registry %s cannot be checked for changes, keeping %d devices: "
                          "%s", path, len(self.pipeline.devices), exc)
            return
        self._poll_error = ""
        self.reload()

    def reload(self) -> None:
        """Hand the registry's devices to the pipeline now (the old ones if it fails)."""
        try:
            devices = self.registry.snapshot()
        except Exception as exc:  # keep the old snapshot
            log.error("registry reload failed, keeping %d devices: %s",
                      len(self.pipeline.devices), exc)
            return
        self.pipeline.update_devices(devices)
        if self.on_reload is not None:
            self.on_reload()
        self.reloads += 1
        log.info("registry reloaded: %d devices", len(devices))
