"""Pure command builders: each function returns the exact shell command as a string.

No I/O here. Operations (fabfile/<concern>.py) decide and execute; unit tests assert these
strings exactly. Quoting is always shlex.join / shlex.quote, never string surgery.
"""
