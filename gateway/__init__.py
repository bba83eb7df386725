"""The knute gateway: ingest, verify, spool and forward sensor frames to MQTT."""
