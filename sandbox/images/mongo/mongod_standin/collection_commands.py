"""Collection, index and cursor commands: what the real mongodump and mongorestore (MongoDB
Database Tools 100.18.0) send besides find, count, insert and listCollections (commands.py).

`create` (with `idIndex`), `drop`, `listIndexes`, `createIndexes` (ascending/descending keys,
`unique` enforced on insert and at build time, `sparse`, `hidden`), `getMore`, `killCursors`.
Options that would change what a collection or an index does and that the stand-in does not do
(capped, validators, views, time series, collations, TTL, partial, text/geo/hashed/wildcard
indexes...) fail with 238 NotImplemented; they are never accepted and ignored. Error codes and
messages follow mongod 7.0's.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from bson import Int64

from . import catalog, cursors
from .commands import (
    _check_fields,
    _check_readable,
    _check_system,
    _check_writable,
    _collection_name,
    _persist_and_replicate,
    _write_concern_needed,
    collection_alive,
    command,
)
from .errors import CommandError, bson_type_name, not_implemented, wrong_type

if TYPE_CHECKING:
    from .connection import Connection

MAX_INDEXES = 64  # per collection, as mongod

_CREATE_FIELDS = frozenset({
    "idIndex", "autoIndexId", "capped", "size", "max", "validator", "validationLevel",
    "validationAction", "collation", "viewOn", "pipeline", "timeseries", "clusteredIndex",
    "changeStreamPreAndPostImages", "storageEngine", "indexOptionDefaults", "expireAfterSeconds",
    "encryptedFields", "flags", "temp", "recordPreImages",
})
# create options whose default the stand-in has (given with that value, they change nothing)
_CREATE_DEFAULTS = {
    "capped": (False,),
    "autoIndexId": (True,),
    "validator": ({},),
    "validationLevel": ("strict",),
    "validationAction": ("error",),
    "storageEngine": ({},),
    "indexOptionDefaults": ({},),
}
# index options: implemented, ignored as mongod ignores them, refused as not implemented
_INDEX_IMPLEMENTED = frozenset({"v", "key", "name", "unique", "sparse", "hidden"})
_INDEX_IGNORED = frozenset({"ns", "background", "dropDups"})  # mongod 7 drops these too
_INDEX_NOT_IMPLEMENTED = frozenset({
    "partialFilterExpression", "expireAfterSeconds", "collation", "weights", "default_language",
    "language_override", "textIndexVersion", "2dsphereIndexVersion", "bits", "min", "max",
    "bucketSize", "storageEngine", "wildcardProjection", "prepareUnique", "clustered",
    "coarsestIndexedLevel", "finestIndexedLevel",
})
_SPECIAL_KEYS = {
    "text", "2d", "2dsphere", "2dsphere_bucket", "hashed", "geoHaystack", "columnstore",
}


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# ---- create / drop ---------------------------------------------------------------------------
def _check_id_index(spec: object, ns: str) -> None:
    """create's idIndex: what mongod accepts for a collection's _id index."""
    if not isinstance(spec, dict):
        raise wrong_type("create.idIndex", spec, "object")
    for field, value in spec.items():
        if field == "key":
            if not (
                isinstance(value, dict)
                and list(value) == ["_id"]
                and _is_number(value["_id"])
                and value["_id"] == 1
            ):
                raise CommandError(2, f"The field 'key' for an _id index must be {{_id: 1}}, "
                                      f"but got {value!r}")
        elif field == "name":
            if value != "_id_":
                raise CommandError(2, f"The field 'name' for an _id index must be '_id_', but "
                                      f"got {value!r}")
        elif field == "ns":
            if value != ns:
                raise CommandError(2, f"The 'ns' field of the _id index specification ({value}) "
                                      f"does not match the collection ({ns})")
        elif field == "v":
            if not (_is_number(value) and value in (1, 2)):
                raise CommandError(67, f"Invalid index specification {spec!r}; cannot create an "
                                       f"index of version {value!r}")
        elif field == "collation":
            raise not_implemented("collections with a collation")
        else:
            raise CommandError(197, f"The field '{field}' is not valid for an _id index "
                                    "specification.")


@command("create")
def cmd_create(conn: Connection, db: str, doc: dict) -> dict:
    coll = _collection_name(doc, "create")
    _check_fields("create", doc, _CREATE_FIELDS)
    conn.require("create", "createCollection", db)
    _check_system(db, coll)
    catalog.check_namespace(db, coll)
    for field in _CREATE_FIELDS - {"idIndex"}:
        if field in doc and not any(
            doc[field] == d and type(doc[field]) is type(d) for d in _CREATE_DEFAULTS.get(field, ())
        ):
            raise not_implemented(f"create with {field} (plain collections only)")
    if "idIndex" in doc:
        _check_id_index(doc["idIndex"], f"{db}.{coll}")
    _check_writable(conn.member)
    _write_concern_needed(conn.member, doc)
    store = conn.member.store
    with store.lock:
        if catalog.exists(store, db, coll):
            raise CommandError(48, f"Collection {db}.{coll} already exists.")
        catalog.ensure_collection(store, db, coll)
    return _persist_and_replicate(conn, doc)


@command("drop")
def cmd_drop(conn: Connection, db: str, doc: dict) -> dict:
    coll = _collection_name(doc, "drop")
    _check_fields("drop", doc, frozenset())
    conn.require("drop", "dropCollection", db)
    _check_system(db, coll)
    _check_writable(conn.member)
    _write_concern_needed(conn.member, doc)
    store = conn.member.store
    with store.lock:
        if not catalog.exists(store, db, coll):
            raise CommandError(26, "ns not found")
        indexes = catalog.drop_collection(store, db, coll)
    reply = {"nIndexesWas": indexes, "ns": f"{db}.{coll}"}
    reply.update(_persist_and_replicate(conn, doc))
    return reply


# ---- indexes ---------------------------------------------------------------------------------
@command("listIndexes")
def cmd_list_indexes(conn: Connection, db: str, doc: dict) -> dict:
    coll = _collection_name(doc, "listIndexes")
    _check_fields("listIndexes", doc, frozenset({"cursor", "includeBuildUUIDs",
                                                  "includeIndexBuildInfo"}))
    conn.require("listIndexes", "listIndexes", db)
    _check_system(db, coll)
    _check_readable(conn, doc)
    spec = doc.get("cursor") or {}
    if not isinstance(spec, dict):
        raise wrong_type("listIndexes.cursor", spec, "object")
    batch_size = cursors.batch_size_of(spec.get("batchSize"), "listIndexes.cursor", None)
    store = conn.member.store
    with store.lock:
        if not catalog.exists(store, db, coll):
            raise CommandError(26, f"ns does not exist: {db}.{coll}")
        specs = [dict(s) for s in catalog.index_specs(store, db, coll)]
    ns = f"{db}.$cmd.listIndexes.{coll}"
    return cursors.first_reply(conn, doc, ns, specs, batch_size, collection_alive(conn, db, coll))


def _same_key(a: dict, b: dict) -> bool:
    return list(a) == list(b) and all(
        catalog.value_key(a[k]) == catalog.value_key(b[k]) for k in a
    )


def _options(spec: dict) -> dict:
    return {k: bool(spec.get(k)) for k in ("unique", "sparse")}


def _index_spec(raw: object, ignore_unknown: bool) -> dict:
    """One createIndexes spec, validated and reduced to what listIndexes will answer."""
    if not isinstance(raw, dict):
        raise CommandError(14, "The elements of the 'indexes' array must be objects")
    if "key" not in raw:
        raise CommandError(9, f"Error in specification {raw!r} :: caused by :: The 'key' field is "
                              "a required property of an index specification")
    if "name" not in raw:
        raise CommandError(9, f"Error in specification {raw!r} :: caused by :: The 'name' field "
                              "is a required property of an index specification")
    key, name = raw["key"], raw["name"]
    if not isinstance(key, dict) or not key:
        raise CommandError(67, f"Error in specification {raw!r} :: caused by :: Index keys "
                               "cannot be an empty field")
    if not isinstance(name, str) or not name:
        raise CommandError(67, f"Error in specification {raw!r} :: caused by :: The index name "
                               "must be a non-empty string")
    for field, direction in key.items():
        if not field or field.startswith("$") or ".." in field or field.endswith("."):
            if field.endswith("$**"):
                raise not_implemented("wildcard indexes")
            raise CommandError(67, f"Error in specification {raw!r} :: caused by :: Index key "
                                   f"contains an illegal field name: '{field}'")
        if field.endswith("$**"):
            raise not_implemented("wildcard indexes")
        if isinstance(direction, str):
            if direction in _SPECIAL_KEYS:
                raise not_implemented(f"{direction} indexes (ascending/descending keys only)")
            raise CommandError(67, f"Error in specification {raw!r} :: caused by :: Unknown index "
                                   f"plugin '{direction}'")
        if not _is_number(direction) or direction == 0:
            raise CommandError(67, f"Error in specification {raw!r} :: caused by :: Values in the "
                                   "index key pattern can't be all zeros nor a "
                                   f"{bson_type_name(direction)}: {field}: {direction!r}")
    out = {"v": 2, "key": key, "name": name}
    for field, value in raw.items():
        if field in ("key", "name") or field in _INDEX_IGNORED:
            continue
        if field == "v":
            if not (_is_number(value) and value in (1, 2)):
                raise CommandError(67, f"Error in specification {raw!r} :: caused by :: Invalid "
                                       f"index specification; cannot create an index of version "
                                       f"{value!r}")
            out["v"] = int(value)
        elif field in ("unique", "sparse", "hidden"):
            if not isinstance(value, bool) and not _is_number(value):
                raise wrong_type(f"createIndexes.indexes.{field}", value, "bool")
            if value:
                out[field] = True
        elif field in _INDEX_NOT_IMPLEMENTED:
            raise not_implemented(f"the index option {field}")
        elif not ignore_unknown:
            raise CommandError(197, f"The field '{field}' is not valid for an index "
                                    f"specification. Specification: {raw!r}")
    if _same_key(key, {"_id": 1}) and (out.get("unique") or out.get("sparse")):
        raise CommandError(197, "The field 'unique' is not valid for an _id index specification.")
    return out


def _conflict(new: dict, existing: list[dict]) -> dict | None:
    """The existing index ``new`` duplicates (None if it is new); refuses a conflicting one."""
    for old in existing:
        same_name, same_key = old["name"] == new["name"], _same_key(old["key"], new["key"])
        if old["name"] == "_id_" and same_key:
            if same_name or not (new.get("unique") or new.get("sparse")):
                return old
        if same_name and not same_key:
            raise CommandError(86, "An existing index has the same name as the requested index. "
                                   f"Requested index: {new!r}, existing index: {old!r}")
        if same_key and _options(old) == _options(new):
            if same_name:
                return old
            raise CommandError(85, f"Index already exists with a different name: {old['name']}")
        if same_name:
            raise CommandError(85, "An equivalent index already exists with the same name but "
                                   f"different options. Requested index: {new!r}, existing "
                                   f"index: {old!r}")
        if same_key:
            raise CommandError(85, f"Index already exists with a different name: {old['name']}")
    return None


@command("createIndexes")
def cmd_create_indexes(conn: Connection, db: str, doc: dict) -> dict:
    coll = _collection_name(doc, "createIndexes")
    _check_fields("createIndexes", doc, frozenset({"indexes", "commitQuorum",
                                                    "ignoreUnknownIndexOptions"}))
    store = conn.member.store
    with store.lock:
        missing = not catalog.exists(store, db, coll)
    conn.require("createIndexes", "createIndex", db)
    if missing:  # mongod: creating the collection as well needs createCollection
        conn.require("createIndexes", "createCollection", db)
    _check_system(db, coll)
    catalog.check_namespace(db, coll)
    raw = doc.get("indexes")
    if not isinstance(raw, list):
        raise CommandError(14 if raw is not None else 40414,
                           "BSON field 'createIndexes.indexes' is missing but a required field"
                           if raw is None else
                           f"BSON field 'createIndexes.indexes' is the wrong type "
                           f"'{bson_type_name(raw)}', expected type 'array'")
    if not raw:
        raise CommandError(2, "Must specify at least one index to create")
    ignore_unknown = bool(doc.get("ignoreUnknownIndexOptions"))
    specs = [_index_spec(item, ignore_unknown) for item in raw]
    _check_writable(conn.member)
    _write_concern_needed(conn.member, doc)
    with store.lock:
        existing = catalog.index_specs(store, db, coll)
        before = len(existing)
        new: list[dict] = []
        for spec in specs:
            if _conflict(spec, existing + new) is None:
                new.append(spec)
        if before + len(new) > MAX_INDEXES:
            raise CommandError(67, f"add index fails, too many indexes for {db}.{coll} key:"
                                   f"{new[-1]['key']!r}")
        documents = catalog.collections(store, db).get(coll, [])
        for spec in new:
            if spec.get("unique"):
                duplicate = catalog.first_duplicate(documents, db, coll, spec)
                if duplicate is not None:
                    raise CommandError(11000, f"Index build failed: {db}.{coll} :: caused by :: "
                                              f"{duplicate}")
        created = False
        if missing:
            _, created = catalog.ensure_collection(store, db, coll)
        for spec in new:
            catalog.add_index(store, db, coll, spec)
    reply: dict = {"numIndexesBefore": before, "numIndexesAfter": before + len(new)}
    if missing:
        reply["createdCollectionAutomatically"] = created
    if not new:
        reply["note"] = "all indexes already exist"
    if new or created:
        reply.update(_persist_and_replicate(conn, doc))
    return reply


# ---- cursors ---------------------------------------------------------------------------------
def _owned(conn: Connection, cursor: cursors.Cursor) -> bool:
    return not conn.auth_enabled or cursor.owner == conn.user


@command("getMore")
def cmd_get_more(conn: Connection, db: str, doc: dict) -> dict:
    conn.require_authenticated("getMore")
    _check_fields("getMore", doc, frozenset({"collection", "batchSize", "maxTimeMS", "term",
                                             "lastKnownCommittedOpTime"}))
    cid = doc["getMore"]
    if not isinstance(cid, Int64):
        raise wrong_type("getMore.getMore", cid, "long")
    coll = doc.get("collection")
    if coll is None:
        raise CommandError(40414, "BSON field 'getMore.collection' is missing but a required "
                                  "field")
    if not isinstance(coll, str):
        raise wrong_type("getMore.collection", coll, "string")
    batch_size = cursors.batch_size_of(doc.get("batchSize"), "getMore", None)
    registry = conn.member.cursors
    cursor = registry.get(int(cid))
    if cursor is None:
        raise CommandError(43, f"cursor id {int(cid)} not found")
    if cursor.ns != f"{db}.{coll}":
        raise CommandError(13, f"Requested getMore on namespace '{db}.{coll}', but cursor "
                               f"belongs to a different namespace {cursor.ns}")
    if not _owned(conn, cursor):
        raise CommandError(13, f"cursor id {int(cid)} was not created by the authenticated user")
    if not cursor.alive():
        registry.close(cursor.id)
        raise CommandError(175, f"collection dropped: {cursor.ns}")
    batch, cursor.position = cursors.take_batch(cursor.docs, cursor.position, batch_size)
    cursor.last_used = time.monotonic()
    out = cursor.id
    if cursor.position >= len(cursor.docs):
        registry.close(cursor.id)
        out = 0
    return cursors.reply(out, cursor.ns, batch, first=False)


@command("killCursors")
def cmd_kill_cursors(conn: Connection, db: str, doc: dict) -> dict:
    conn.require_authenticated("killCursors")
    coll = doc["killCursors"]  # may be "$cmd.listIndexes.x": a cursor's namespace, not a name
    if not isinstance(coll, str) or not coll:
        raise wrong_type("killCursors.killCursors", coll, "string")
    _check_fields("killCursors", doc, frozenset({"cursors"}))
    ids = doc.get("cursors")
    if not isinstance(ids, list):
        raise wrong_type("killCursors.cursors", ids, "array")
    registry = conn.member.cursors
    killed, not_found = [], []
    for cid in ids:
        if not isinstance(cid, Int64):
            raise wrong_type("killCursors.cursors", cid, "long")
        cursor = registry.get(int(cid))
        if cursor is None or cursor.ns != f"{db}.{coll}":
            not_found.append(Int64(cid))
            continue
        if not _owned(conn, cursor) and not conn.allows("killAnyCursor"):
            raise CommandError(13, f"not authorized on {db} to execute command "
                                   "{ killCursors: ... }")
        registry.close(cursor.id)
        killed.append(Int64(cid))
    return {"cursorsKilled": killed, "cursorsNotFound": not_found, "cursorsAlive": [],
            "cursorsUnknown": []}
