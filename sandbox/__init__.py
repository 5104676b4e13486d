"""The jafar sandbox: offline, reproducible images and test hosts (see sandbox/README.md)."""
