"""The collection catalog: which collections exist, their options, UUID and index specs, and
the index keys that enforce `_id` and unique indexes.

Layout, in the state document (store.py):
    data:    {db: {collection: [documents]}}        a collection exists when it is here
    catalog: {db: {collection: {uuid, options, indexes}}}
             uuid: Binary subtype 4 (listCollections' info.uuid); options: the create options
             (always {} today: the stand-in accepts no option that changes a collection);
             indexes: the specs of the indexes other than `_id_`, as listIndexes answers them.
A collection of an older state file has no catalog entry: it has the `_id_` index only and no
UUID (listCollections then leaves info.uuid out rather than invent one).

Index keys are hashable forms of BSON values that are equal exactly when the stand-in's
equality (commands._equal) says so: 1, 1.0 and Int64(1) are one key, True is not 1, documents
compare field by field in order.
"""

from __future__ import annotations

import datetime
import json
import uuid
from typing import TYPE_CHECKING

from bson import Int64
from bson.binary import Binary
from bson.decimal128 import Decimal128

from . import wire
from .errors import CommandError, not_implemented

if TYPE_CHECKING:
    from .store import Store

ID_INDEX = {"v": 2, "key": {"_id": 1}, "name": "_id_"}


# ---- the catalog ---------------------------------------------------------------------------
def collections(store: Store, db: str) -> dict:
    """{name: [documents]} of ``db`` (empty when the database does not exist)."""
    return store.state["data"].get(db, {})


def exists(store: Store, db: str, coll: str) -> bool:
    return coll in store.state["data"].get(db, {})


def entry(store: Store, db: str, coll: str) -> dict:
    """The catalog entry of an existing collection ({} for one without: older state files)."""
    return store.state.get("catalog", {}).get(db, {}).get(coll, {})


def ensure_collection(store: Store, db: str, coll: str) -> tuple[list, bool]:
    """The documents of db.coll, creating the collection (with a fresh UUID) when it does not
    exist; returns (documents, created). Call with store.lock held."""
    colls = store.state["data"].setdefault(db, {})
    if coll in colls:
        return colls[coll], False
    colls[coll] = []
    store.state.setdefault("catalog", {}).setdefault(db, {})[coll] = {
        "uuid": Binary(uuid.uuid4().bytes, 4),
        "options": {},
        "indexes": [],
    }
    return colls[coll], True


def drop_collection(store: Store, db: str, coll: str) -> int:
    """Remove db.coll and its catalog entry; returns how many indexes it had (with `_id_`)."""
    indexes = 1 + len(entry(store, db, coll).get("indexes", []))
    data = store.state["data"]
    del data[db][coll]
    if not data[db]:
        del data[db]
    catalog = store.state.get("catalog", {})
    if coll in catalog.get(db, {}):
        del catalog[db][coll]
        if not catalog[db]:
            del catalog[db]
    return indexes


def index_specs(store: Store, db: str, coll: str) -> list[dict]:
    """Every index of db.coll, `_id_` first, as listIndexes answers."""
    return [dict(ID_INDEX), *entry(store, db, coll).get("indexes", [])]


def add_index(store: Store, db: str, coll: str, spec: dict) -> None:
    ensure_collection(store, db, coll)
    catalog = store.state.setdefault("catalog", {}).setdefault(db, {})
    catalog.setdefault(coll, {"options": {}, "indexes": []}).setdefault("indexes", []).append(spec)


# ---- index keys ------------------------------------------------------------------------------
def value_key(value: object) -> tuple:
    """A hashable key of a BSON value; equal keys for values the stand-in's equality matches."""
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, (int, float, Int64)):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        return ("number", value)
    if isinstance(value, str):
        return ("string", value)
    if value is None:
        return ("null",)
    if isinstance(value, dict):
        return ("object", tuple((k, value_key(v)) for k, v in value.items()))
    if isinstance(value, list):
        return ("array", tuple(value_key(v) for v in value))
    if isinstance(value, (bytes, datetime.datetime, Decimal128)) or _hashable(value):
        return (type(value).__name__, value)
    return ("bson", wire.encode({"v": value}))


def _hashable(value: object) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


MISSING = object()  # a dotted path that a document does not have


def _path_values(doc: dict, path: str) -> list:
    """The values an index on ``path`` takes for ``doc``: one, or each element of an array
    (mongod's multikey index; an empty array indexes as undefined, a missing field as null)."""
    value: object = doc
    parts = path.split(".")
    for i, part in enumerate(parts):
        if isinstance(value, list):
            raise not_implemented(
                f"a unique index over the path {path!r} through an array ({'.'.join(parts[:i])})"
            )
        if isinstance(value, dict) and part in value:
            value = value[part]
        else:
            return [None]
    if isinstance(value, list):
        return list(value) if value else [_UNDEFINED]
    return [value]


_UNDEFINED = ("undefined",)


def doc_keys(doc: dict, key_pattern: dict, sparse: bool = False) -> set[tuple]:
    """The keys ``doc`` has in an index with this key pattern (empty for a sparse index when
    the document has none of the fields)."""
    fields = list(key_pattern)
    if sparse and all(value_at(doc, f) is MISSING for f in fields):
        return set()
    combos: list[tuple] = [()]
    for field in fields:
        values = _path_values(doc, field)
        keys = [v if v is _UNDEFINED else value_key(v) for v in values]
        combos = [c + (k,) for c in combos for k in keys]
    return set(combos)


def value_at(doc: dict, path: str) -> object:
    value: object = doc
    for part in path.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        else:
            return MISSING
    return value


def unique_indexes(store: Store, db: str, coll: str) -> list[dict]:
    """The specs that constrain inserts: `_id_` and every unique index."""
    return [ID_INDEX] + [s for s in entry(store, db, coll).get("indexes", []) if s.get("unique")]


class UniqueKeys:
    """The keys already taken in each unique index of one collection (`_id_` included), built
    once per write command, so a batch of n inserts costs O(n + documents), not O(n x docs)."""

    def __init__(self, store: Store, db: str, coll: str, documents: list) -> None:
        self.db, self.coll = db, coll
        self.specs = unique_indexes(store, db, coll)
        self.taken: dict[str, dict[tuple, object]] = {s["name"]: {} for s in self.specs}
        for doc in documents:
            for spec in self.specs:
                for key in self._keys(doc, spec):
                    self.taken[spec["name"]][key] = doc

    @staticmethod
    def _keys(doc: dict, spec: dict) -> set[tuple]:
        if spec["name"] == "_id_":
            return {(value_key(doc.get("_id")),)}
        return doc_keys(doc, spec["key"], bool(spec.get("sparse")))

    def conflict(self, doc: dict) -> str | None:
        """The E11000 message when ``doc`` would duplicate a key, else None."""
        for spec in self.specs:
            for key in self._keys(doc, spec):
                if key in self.taken[spec["name"]]:
                    return duplicate_message(self.db, self.coll, spec, doc)
        return None

    def add(self, doc: dict) -> None:
        for spec in self.specs:
            for key in self._keys(doc, spec):
                self.taken[spec["name"]][key] = doc


def duplicate_message(db: str, coll: str, spec: dict, doc: dict) -> str:
    """mongod's E11000 text: `... index: NAME dup key: { field: value }`."""
    fields = ", ".join(f"{f}: {_shown(value_at(doc, f))}" for f in spec["key"])
    return (
        f"E11000 duplicate key error collection: {db}.{coll} index: {spec['name']} "
        f"dup key: {{ {fields} }}"
    )


def _shown(value: object) -> str:
    """A key value as mongod's messages print it (strings in double quotes, null, true...)."""
    if value is MISSING or value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)


def first_duplicate(documents: list, db: str, coll: str, spec: dict) -> str | None:
    """Building a unique index over existing documents: the E11000 message of the first
    duplicate, or None."""
    seen: set[tuple] = set()
    for doc in documents:
        keys = doc_keys(doc, spec["key"], bool(spec.get("sparse")))
        if keys & seen:
            return duplicate_message(db, coll, spec, doc)
        seen |= keys
    return None


def check_namespace(db: str, coll: str) -> None:
    """What mongod refuses as a collection name (on top of commands._collection_name)."""
    if len(f"{db}.{coll}") > 255:
        raise CommandError(73, f"Fully qualified namespace is too long. Namespace: {db}.{coll}")
