"""The shipped test rig: brokers, the gateway process, fault relay, ptys, flash images, waits."""
