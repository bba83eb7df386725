"""A three-node RabbitMQ cluster with the MQTT plugin on one machine, for fault tests.

``RabbitCluster(workdir).start()`` runs Debian's ``rabbitmq-server`` (3.10)
three times, each node with its own name (``knute1@localhost`` ...), AMQP,
MQTT and distribution ports, its own mnesia, log and config files under
``workdir``, and one shared Erlang cookie in ``workdir/home`` (the nodes'
and the CLI's ``$HOME``). Nodes 2 and 3 are then joined to node 1, one after
the other, by one ``rabbitmqctl eval`` in node 1 (``_join_expr``). ``kill(n)``
is kill -9 of a node's process group, ``restart(n)`` brings it back;
``partition(n)`` cuts node ``n`` off from the two others and ``heal()`` joins
them again; ``stop()`` stops all.

How the partition is made: Erlang nodes find each other's distribution port
through epmd. Each node here has its own ``ERL_EPMD_PORT``, answered by a
small epmd written in this module (``Epmd``, the name-registration part of
the Erlang distribution protocol). A node asking its epmd where a peer listens
is told the port of a ``FaultyLink`` relay (one per ordered pair of nodes)
that forwards to the peer's real distribution port, so every link between
nodes runs through a relay the test can cut (``down``: open connections are
reset and new ones refused, which the nodes see at once as ``nodedown``).
The CLI asks for the node itself and gets its real port.

The broker's configuration (what RabbitMQ's documentation promises for it is
in docs/reliability.md):

- ``mqtt.durable_queue_type = quorum``: the queue behind a persistent MQTT
  session (``clean_session = false``, QoS 1) is a quorum queue with a member
  on every node (Raft: a message is confirmed, and PUBACK sent to the
  publisher, once a majority of the members wrote it);
- ``cluster_partition_handling = pause_minority``: a node that sees fewer
  than half of the cluster stops serving clients until the majority returns,
  so no two halves accept messages on their own;
- ``net_ticktime`` left at its 60 s: a cut relay or a killed node closes the
  connection, which the peers see at once; a shorter tick only made nodes on
  a loaded machine miss ticks and see partitions that were not there.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from knute.gateway.errors import KnuteError
from knute.tools.rig.broker import _mqtt_connack, free_port
from knute.tools.rig.faults import FaultyLink, pump, recv_exact
from knute.tools.rig.wait import wait_for

RABBIT_BIN = Path("/usr/lib/rabbitmq/bin")
NODE_START_TIMEOUT_S = 180.0    # upper bounds only: every wait ends when its condition holds
NODE_STOP_TIMEOUT_S = 60.0
CTL_TIMEOUT_S = 120.0
CLUSTERED_POLL_S = 0.2          # node 1 looks this often for every node running, once joined
# What a node logs when pause_minority makes it pause (rabbit_node_monitor, 3.10).
PAUSE_LINE = "Cluster minority/secondary status detected"

# Erlang distribution protocol, epmd requests and replies (erts: "Distribution Protocol").
_ALIVE2_REQ = 120
_ALIVE2_X_RESP = 118
_PORT_PLEASE2_REQ = 122
_PORT2_RESP = 119
_NAMES_REQ = 110
_KILL_REQ = 107


class RabbitError(KnuteError):
    """The cluster cannot be set up; the message says why in one line (plus a log tail)."""


def installed() -> bool:
    """True when Debian's rabbitmq-server (and so Erlang) is installed."""
    return (RABBIT_BIN / "rabbitmq-server").exists() and shutil.which("erl") is not None


# ---------------------------------------------------------------- epmd


@dataclass
class _Registration:
    port: int
    node_type: int
    protocol: int
    highest: int
    lowest: int
    extra: bytes


class Epmd:
    """The epmd of one node: registrations are shared, answers depend on who asks.

    ``registry`` holds every live registration (name -> where it listens),
    shared by the nodes' epmds; a registration lasts while its connection
    stays open, as with the real epmd. ``routes`` maps a peer's name to the
    port this node must use to reach it (its relay); any other name (the node
    itself, a CLI node) gets its real port.
    """

    def __init__(self, registry: dict[str, _Registration], lock: threading.Lock,
                 routes: dict[str, int]) -> None:
        self.registry = registry
        self.routes = routes
        self._lock = lock
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._closed = False
        self._conns: list[socket.socket] = []
        threading.Thread(target=self._accept, name=f"epmd-{self.port}", daemon=True).start()

    def close(self) -> None:
        """Stop answering; registrations held by this epmd end."""
        self._closed = True
        with contextlib.suppress(OSError):
            self._listener.close()
        for conn in list(self._conns):
            with contextlib.suppress(OSError):
                conn.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            head = recv_exact(conn, 2)
            request = recv_exact(conn, struct.unpack(">H", head)[0])
            if not request:
                return
            kind = request[0]
            if kind == _ALIVE2_REQ:
                self._alive(conn, request)
            elif kind == _PORT_PLEASE2_REQ:
                conn.sendall(self._port_reply(request[1:].decode("latin-1")))
            elif kind == _NAMES_REQ:
                with self._lock:
                    lines = "".join(f"name {name} at port {reg.port}\n"
                                    for name, reg in self.registry.items())
                conn.sendall(struct.pack(">I", self.port) + lines.encode("latin-1"))
            elif kind == _KILL_REQ:
                conn.sendall(b"OK")
        except (OSError, ConnectionError, struct.error):
            pass
        finally:
            with contextlib.suppress(OSError):
                conn.close()

    def _alive(self, conn: socket.socket, request: bytes) -> None:
        port, node_type, protocol, highest, lowest, nlen = struct.unpack(">HBBHHH", request[1:11])
        name = request[11:11 + nlen].decode("latin-1")
        (elen,) = struct.unpack(">H", request[11 + nlen:13 + nlen])
        extra = request[13 + nlen:13 + nlen + elen]
        reg = _Registration(port, node_type, protocol, highest, lowest, extra)
        with self._lock:
            taken = name in self.registry
            if not taken:
                self.registry[name] = reg
        creation = secrets.randbelow(0xFFFF_FFF0) + 4
        conn.sendall(struct.pack(">BBI", _ALIVE2_X_RESP, 1 if taken else 0, creation))
        if taken:
            return
        self._conns.append(conn)
        try:        # registered until the node closes its connection (or dies)
            while conn.recv(64):
                pass
        except OSError:
            pass
        finally:
            with self._lock:
                if self.registry.get(name) is reg:
                    del self.registry[name]
            with contextlib.suppress(ValueError):
                self._conns.remove(conn)

    def _port_reply(self, name: str) -> bytes:
        with self._lock:
            reg = self.registry.get(name)
        if reg is None:
            return bytes((_PORT2_RESP, 1))
        port = self.routes.get(name, reg.port)
        raw = name.encode("latin-1")
        return (struct.pack(">BBHBBHHH", _PORT2_RESP, 0, port, reg.node_type, reg.protocol,
                            reg.highest, reg.lowest, len(raw))
                + raw + struct.pack(">H", len(reg.extra)) + reg.extra)


# ---------------------------------------------------------------- nodes


class RabbitNode:
    """One node of the cluster: its name, ports, files and process."""

    def __init__(self, cluster: RabbitCluster, index: int) -> None:
        self.cluster = cluster
        self.index = index
        self.short = f"knute{index}"
        self.name = f"{self.short}@localhost"
        self.dir = cluster.workdir / self.short
        self.dir.mkdir(parents=True, exist_ok=True)
        self.amqp_port = free_port()
        self.mqtt_port = free_port()
        self.dist_port = free_port()
        self.log_path = self.dir / "server.log"
        self.epmd: Epmd | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def running(self) -> bool:
        """True while the node's process is alive."""
        return self.proc is not None and self.proc.poll() is None

    def env(self) -> dict[str, str]:
        """The environment of this node's server and of the CLI aimed at it."""
        assert self.epmd is not None
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        env.update({
            "HOME": str(self.cluster.home),
            "ERL_EPMD_PORT": str(self.epmd.port),
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.amqp_port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_CONF_ENV_FILE": str(self.dir / "rabbitmq-env.conf"),
            "RABBITMQ_CONFIG_FILE": str(self.dir / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.dir / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.dir / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(self.dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.dir / "log"),
            "RABBITMQ_PID_FILE": str(self.dir / "rabbit.pid"),
            "RABBITMQ_PLUGINS_EXPAND_DIR": str(self.dir / "plugins-expand"),
            # exec the VM directly: SIGTERM reaches it and stops the node cleanly.
            "RUNNING_UNDER_SYSTEMD": "true",
            # No scheduler busy-waiting (Debian's rabbitmq-env sets the same; said here
            # so the rig does not depend on it): three idle VMs spinning on a 2-core
            # machine would take the CPU from the tests beside them.
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS":
                "-start_epmd false +sbwt none +sbwtdcpu none +sbwtdio none",
            "RABBITMQ_CTL_ERL_ARGS": "-start_epmd false",
        })
        return env

    def write_files(self) -> None:
        """This node's config, plugins and env files (rewritten before every start)."""
        (self.dir / "rabbitmq-env.conf").write_text("")
        (self.dir / "enabled_plugins").write_text("[rabbitmq_mqtt].\n")
        (self.dir / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.amqp_port}\n"
            f"mqtt.listeners.tcp.default = 127.0.0.1:{self.mqtt_port}\n"
            "mqtt.allow_anonymous = true\n"
            f"mqtt.durable_queue_type = {self.cluster.queue_type}\n"
            f"cluster_partition_handling = {self.cluster.partition_handling}\n"
            "loopback_users = none\n"
            "log.console = false\n"
            f"log.file = {self.log_path.name}\n"
            "log.file.level = info\n"
            "disk_free_limit.absolute = 20MB\n")

    def start(self) -> None:
        """Start the node's process (returns at once; ``wait_ready`` waits)."""
        if self.running:
            return
        self.write_files()
        out = (self.dir / "stdout.log").open("ab")
        with out:
            self.proc = subprocess.Popen(
                [str(RABBIT_BIN / "rabbitmq-server")], cwd=self.dir, env=self.env(),
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True)
        self.starts += 1

    def accepts_mqtt(self) -> bool:
        """True when the node's MQTT listener answers CONNECT with CONNACK."""
        return _mqtt_connack("127.0.0.1", self.mqtt_port)

    def wait_ready(self, timeout: float = NODE_START_TIMEOUT_S) -> None:
        """Wait until the node serves MQTT; RabbitError with its log's tail if it died."""
        def ready() -> bool:
            if not self.running:
                raise RabbitError(f"RabbitMQ node {self.name} exited with status "
                                  f"{self.proc.poll() if self.proc else None}; "
                                  f"log:\n{self.log_tail()}")
            return self.accepts_mqtt()

        try:
            wait_for(ready, timeout, f"RabbitMQ node {self.name} to accept MQTT")
        except RabbitError:
            raise
        except Exception as exc:
            raise RabbitError(f"{exc}; log:\n{self.log_tail()}") from exc

    def kill(self) -> None:
        """kill -9 of the node's whole process group (the VM and its helpers)."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=NODE_STOP_TIMEOUT_S)

    def stop(self) -> None:
        """SIGTERM (the node stops cleanly), kill -9 past the timeout."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=NODE_STOP_TIMEOUT_S)
        self.kill()

    def ctl(self, *args: str, timeout: float = CTL_TIMEOUT_S) -> str:
        """``rabbitmqctl -n NODE ARGS``; RabbitError naming the command if it fails."""
        cmd = [str(RABBIT_BIN / "rabbitmqctl"), "-n", self.name, *args]
        try:
            out = subprocess.run(cmd, env=self.env(), capture_output=True, text=True,
                                 timeout=timeout, check=False, cwd=self.dir)
        except subprocess.TimeoutExpired as exc:
            raise RabbitError(f"rabbitmqctl {' '.join(args)} on {self.name}: no answer in "
                              f"{timeout:g} s") from exc
        if out.returncode != 0:
            raise RabbitError(f"rabbitmqctl {' '.join(args)} on {self.name} exited "
                              f"{out.returncode}: {(out.stderr or out.stdout).strip()[-800:]}")
        return out.stdout

    def pauses(self) -> int:
        """How often this node has paused itself as a minority (lines in its log)."""
        try:
            text = (self.dir / "log" / self.log_path.name).read_text(errors="replace")
        except OSError:
            return 0
        return text.count(PAUSE_LINE)

    def log_tail(self, lines: int = 25) -> str:
        """The last lines of the node's log (and its stdout, where boot errors go)."""
        text = ""
        for path in (self.dir / "stdout.log", self.dir / "log" / self.log_path.name):
            with contextlib.suppress(OSError):
                text += path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])


class RabbitCluster:
    """Three RabbitMQ nodes on loopback, clustered, with every inter-node link relayed."""

    def __init__(self, workdir: Path, *, size: int = 3, queue_type: str = "quorum",
                 partition_handling: str = "pause_minority") -> None:
        if not installed():
            raise RabbitError("RabbitMQ not installed: no /usr/lib/rabbitmq/bin/rabbitmq-server "
                              "or erl (apt-get install rabbitmq-server; `make test` does it)")
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.queue_type = queue_type
        self.partition_handling = partition_handling
        self.home = workdir / "home"
        self.home.mkdir(exist_ok=True)
        cookie = self.home / ".erlang.cookie"
        if not cookie.exists():
            cookie.write_text(secrets.token_hex(16).upper())
        cookie.chmod(0o400)
        self.nodes = [RabbitNode(self, n + 1) for n in range(size)]
        self._registry: dict[str, _Registration] = {}
        self._lock = threading.Lock()
        # links[(a, b)]: what node a dials to reach node b.
        self.links: dict[tuple[int, int], FaultyLink] = {}
        for a in self.nodes:
            for b in self.nodes:
                if a is not b:
                    self.links[(a.index, b.index)] = FaultyLink(("127.0.0.1", b.dist_port))
        for a in self.nodes:
            routes = {b.short: self.links[(a.index, b.index)].port
                      for b in self.nodes if b is not a}
            a.epmd = Epmd(self._registry, self._lock, routes)
        self.started = False

    @property
    def mqtt_ports(self) -> list[int]:
        """The nodes' MQTT ports, node 1 first."""
        return [n.mqtt_port for n in self.nodes]

    def node(self, index: int) -> RabbitNode:
        """Node ``index`` (1-based)."""
        return self.nodes[index - 1]

    def start(self) -> None:
        """Start every node, join nodes 2.. to node 1, wait until all serve MQTT."""
        for node in self.nodes:
            node.start()
        try:
            for node in self.nodes:
                node.wait_ready()
            self.nodes[0].ctl("eval", self._join_expr(),
                              timeout=CTL_TIMEOUT_S * len(self.nodes) + NODE_START_TIMEOUT_S)
            for node in self.nodes:
                node.wait_ready()
        except BaseException:
            self.stop()
            raise
        self.started = True

    def _join_expr(self) -> str:
        """The Erlang that joins nodes 2.. to node 1, run in node 1 by one CLI call.

        For each joining node in turn: stop_app, join_cluster and start_app, called
        from node 1 (``rpc:call``); then node 1 waits until it sees every node
        running (``rabbit_nodes:all_running``, what ``cluster_status`` reports as
        running_nodes). One CLI call for all of it, as a CLI run is a whole Erlang VM
        start (about 0.5 s of CPU, seconds of wall on a loaded machine): one per
        joining node and a ``rabbitmqctl cluster_status`` per poll cost four or more.
        The eval fails, saying which step, if a step does not return ``ok``
        (``badmatch``) or the nodes are not all running within
        ``NODE_START_TIMEOUT_S`` (``case_clause``).
        """
        first = self.nodes[0].name
        steps = []
        for node in self.nodes[1:]:
            steps += [f"ok = rpc:call('{node.name}', rabbit, stop, [])",
                      f"ok = rpc:call('{node.name}', rabbit_mnesia, join_cluster, "
                      f"['{first}', disc])",
                      f"ok = rpc:call('{node.name}', rabbit, start, [])"]
        names = ", ".join(f"'{n.name}'" for n in sorted(self.nodes, key=lambda n: n.name))
        polls = int(NODE_START_TIMEOUT_S / CLUSTERED_POLL_S)
        steps.append(f"Wait = fun Poll(N) -> case lists:sort(rabbit_nodes:all_running()) of "
                     f"[{names}] -> ok; _ when N > 0 -> timer:sleep("
                     f"{round(CLUSTERED_POLL_S * 1000)}), Poll(N - 1) end end")
        steps.append(f"ok = Wait({polls})")
        return ", ".join(steps) + "."

    def running_nodes(self, via: int = 1) -> set[str]:
        """The running nodes node ``via`` reports (``cluster_status``), empty if it cannot."""
        try:
            text = self.node(via).ctl("cluster_status", "--formatter", "json", timeout=60)
        except RabbitError:
            return set()
        try:
            return set(json.loads(text[text.index("{"):]).get("running_nodes", []))
        except ValueError:
            return set()

    def kill(self, index: int) -> None:
        """kill -9 node ``index``."""
        self.node(index).kill()

    def restart(self, index: int) -> None:
        """Start node ``index`` again and wait until it serves MQTT."""
        node = self.node(index)
        node.start()
        node.wait_ready()

    def partition(self, index: int) -> None:
        """Cut node ``index`` off from every other node (both directions)."""
        for (a, b), link in self.links.items():
            if index in (a, b):
                link.set_mode("down")

    def heal(self) -> None:
        """Let every cut inter-node link pass again.

        Only the cut ones: switching a link resets its connections, and resetting
        the live link between the two majority nodes as well made each of them see
        the other go down while node 1 was still away, a minority of one each.
        """
        for link in self.links.values():
            if link.mode != "relay":
                link.set_mode("relay")

    def stop(self) -> None:
        """Stop every node (in parallel), then the relays and the epmds."""
        threads = [threading.Thread(target=n.stop, daemon=True) for n in self.nodes]
        for t in threads:
            t.start()
        for t in threads:
            t.join(NODE_STOP_TIMEOUT_S + 15)
        for link in self.links.values():
            link.close()
        for node in self.nodes:
            if node.epmd is not None:
                node.epmd.close()
        self.started = False

    def __enter__(self) -> RabbitCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Balancer:
    """A TCP front for clients that follow the cluster (a backend, not a gateway).

    Each new connection goes to the first node in ``ports`` that accepts it, in
    turn from the one after the last used: a load balancer's view of the
    cluster, so a client with one address still reaches a live node.
    """

    def __init__(self, ports: Sequence[int]) -> None:
        self.ports = list(ports)
        self._next = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._closed = False
        self.connections = 0
        threading.Thread(target=self._accept, name="balancer", daemon=True).start()

    def close(self) -> None:
        """Stop listening (open connections end with their peers)."""
        self._closed = True
        with contextlib.suppress(OSError):
            self._listener.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._route, args=(conn,), daemon=True).start()

    def _route(self, conn: socket.socket) -> None:
        for step in range(len(self.ports)):
            n = (self._next + step) % len(self.ports)
            try:
                up = socket.create_connection(("127.0.0.1", self.ports[n]), timeout=2)
                up.settimeout(None)
            except OSError:
                continue
            self._next = n
            self.connections += 1
            for a, b in ((conn, up), (up, conn)):
                threading.Thread(target=pump, args=(a, b), kwargs={"close": True},
                                 daemon=True).start()
            return
        with contextlib.suppress(OSError):
            conn.close()

