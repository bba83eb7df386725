"""The shipped test rig: the real parts that tests, the demo and the benchmarks share.

- ``broker``: Mosquitto (or the amqtt fallback) on loopback, stoppable and
  restartable on the same port; ``free_port``;
- ``tls``: Mosquitto with a TLS listener and a throwaway PKI;
- ``gateway``: ``knute gateway run`` as a real process (start, wait until it
  listens, stop, kill -9, status, log);
- ``subscriber``: ``Subscriber``, the MQTT client standing for the backend
  (subscribe, keep topic/payload/retain/QoS, wait for a count or a condition);
- ``faults``: ``FaultyLink``, a TCP relay that refuses, swallows or drops;
- ``rabbitmq``: a three-node RabbitMQ cluster with the MQTT plugin, every
  link between nodes through a relay (kill a node, cut one off, heal);
- ``ptys`` and ``nullmodem``: serial lines without hardware;
- ``flash`` and ``node``: firmware images compiled by mpy-cross and nodes run
  by the MicroPython unix port;
- ``wait``: ``wait_for(condition, timeout, what)``, the one way to wait.
- ``proc``: ``terminate(proc, timeout)``, the one way to stop a daemon (SIGTERM,
  then kill -9 past the timeout).

Shipped code may use the rig; the rig never imports ``tests``.
"""
