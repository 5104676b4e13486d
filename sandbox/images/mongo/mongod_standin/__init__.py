"""The jafar mongod stand-in: a small MongoDB wire-protocol server for the sandbox.

This is NOT MongoDB. No MongoDB server can be installed on the machines the jafar sandbox runs
on, so the sandbox's data stack runs this stand-in under the name ``mongod``. It implements the
small subset of mongod that the deploy suite and its clients (mongosh, pymongo, the Node driver)
use: the handshake, SCRAM authentication, a replica set's initiate/status/config, user
management, basic insert/find/count, and what the real mongodump and mongorestore need
(collections, indexes with unique ones enforced, cursors; no oplog). Every command it does
not implement fails with CommandNotFound (code 59); it never answers ok to something it did
not do.
"""

from __future__ import annotations

STANDIN_NAME = "jafar mongod stand-in (not MongoDB)"
# The MongoDB release whose wire behaviour the stand-in imitates.
VERSION = "7.0.16"
VERSION_ARRAY = [7, 0, 16, 0]
MAX_WIRE_VERSION = 21  # MongoDB 7.0
FCV = "7.0"
