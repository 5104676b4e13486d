"""Day-2 operations: who acts (identity), the deploy lock, the signed audit trail, the host's
recorded state, the gateway's routing, scaling, and the read-only reports (ps, logs).

Each module decides and runs; the shell it runs is built by the pure functions in
fabfile/commands/.
"""
