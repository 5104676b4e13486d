"""The offsite copies of the backup sets in S3, through boto3 (`backup_s3:`).

Each file of a set travels age-encrypted (the data host encrypts it to the environment's
recipient; the suite only passes ciphertext on) to `s3://BUCKET/PREFIX/ID/NAME.age`, in parts
of PART bytes, never whole in memory, each object with SSE-KMS under the environment's key,
a SHA-256 checksum S3 verifies, and an Object Lock retention as long as the bucket's default
(in the bucket's mode): until then nobody, the suite included, can delete or overwrite it. A
set's manifest goes last, so a set whose manifest is in S3 is whole. The retention deletes only
versions whose lock has ended (never with a governance bypass).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from fabfile.aws.client import answered, client
from fabfile.aws.network import Check
from fabfile.config import BackupS3, Environment
from fabfile.errors import BadInput, StepFailed

PART = 16 * 1024 * 1024    # S3 wants parts of 5 MiB at least (but the last)
SUFFIX = ".age"
MANIFEST = "manifest.json"
IDENTITY_LINE = "AGE-SECRET-KEY-1"
NO_LOCK = "ObjectLockConfigurationNotFoundError"  # S3's answer for a bucket without a lock


def target(env: Environment) -> BackupS3:
    if env.backup_s3 is None:
        raise BadInput(f"environment {env.name} has no backup_s3: block; add one (README, "
                       "Backups offsite) to keep copies of the sets in S3")
    return env.backup_s3


def key(env: Environment, backup_id: str, name: str) -> str:
    return f"{target(env).prefix}/{backup_id}/{name}{SUFFIX}"


@dataclass(frozen=True)
class Lock:
    """The bucket's default retention: every object the suite writes is locked this long."""

    mode: str    # GOVERNANCE or COMPLIANCE
    days: int

    def until(self, now: dt.datetime) -> dt.datetime:
        return now + dt.timedelta(days=self.days)


def lock_rule(env: Environment) -> Lock:
    """The bucket's Object Lock default retention; a bucket without one is refused: its
    copies could be deleted by whoever holds the credentials (ransomware, a mistake)."""
    s3t = target(env)
    conf = _read(env, f"reading the Object Lock configuration of bucket {s3t.bucket}",
                 lambda: client(env, "s3").get_object_lock_configuration(Bucket=s3t.bucket),
                 NO_LOCK)
    found = _lock(conf.get("ObjectLockConfiguration", {}))
    if found is None:
        raise StepFailed(f"bucket {s3t.bucket} has no Object Lock default retention: the "
                         "copies could be deleted before their time; nothing was uploaded "
                         "(README, Backups offsite: how to create the bucket)")
    return found


def _lock(conf: dict[str, Any]) -> Lock | None:
    rule = conf.get("Rule", {}).get("DefaultRetention", {})
    days = int(rule.get("Days") or 0) + 365 * int(rule.get("Years") or 0)
    if conf.get("ObjectLockEnabled") != "Enabled" or not days or not rule.get("Mode"):
        return None
    return Lock(str(rule["Mode"]), days)


def _read(env: Environment, what: str, call: Callable[[], dict[str, Any]],
          absent: str = "") -> dict[str, Any]:
    """AWS's answer; {} when it says the bucket has no such configuration (error `absent`)."""
    with answered(env, what):
        try:
            return call()
        except Exception as exc:
            if absent and _code(exc) == absent:
                return {}
            raise


def _code(exc: Exception) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))


class Upload:
    """One object written a chunk at a time: a multipart upload once it passes PART bytes, a
    single PUT when it stays smaller. `abort` leaves nothing behind."""

    def __init__(self, env: Environment, object_key: str, lock: Lock) -> None:
        s3t = target(env)
        self.env, self.key = env, object_key
        self.s3 = client(env, "s3")
        self.args = {"Bucket": s3t.bucket, "Key": object_key}
        self.extra = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": s3t.kms_key,
                      "ObjectLockMode": lock.mode,
                      "ObjectLockRetainUntilDate": lock.until(dt.datetime.now(dt.UTC)),
                      "ChecksumAlgorithm": "SHA256"}
        self.buffer = bytearray()
        self.upload_id: str | None = None
        self.parts: list[dict[str, Any]] = []
        self.size = 0

    def write(self, chunk: bytes) -> None:
        self.buffer += chunk
        self.size += len(chunk)
        while len(self.buffer) >= 2 * PART:  # keep a part back: the last may not be tiny
            self._part(bytes(self.buffer[:PART]))
            del self.buffer[:PART]

    def _part(self, body: bytes) -> None:
        with answered(self.env, f"uploading {self.key}"):
            if self.upload_id is None:
                self.upload_id = self.s3.create_multipart_upload(
                    **self.args, **self.extra)["UploadId"]
            number = len(self.parts) + 1
            done = self.s3.upload_part(**self.args, UploadId=self.upload_id, PartNumber=number,
                                       Body=body, ChecksumAlgorithm="SHA256")
        self.parts.append({"PartNumber": number, "ETag": done["ETag"],
                           "ChecksumSHA256": done["ChecksumSHA256"]})

    def finish(self) -> int:
        """The object is complete in S3 (the bytes written, in all)."""
        with answered(self.env, f"uploading {self.key}"):
            if self.upload_id is None:
                self.s3.put_object(**self.args, **self.extra, Body=bytes(self.buffer))
                return self.size
        self._part(bytes(self.buffer))
        with answered(self.env, f"completing the upload of {self.key}"):
            self.s3.complete_multipart_upload(**self.args, UploadId=self.upload_id,
                                              MultipartUpload={"Parts": self.parts})
        return self.size

    def abort(self) -> None:
        if self.upload_id is not None:
            with answered(self.env, f"aborting the upload of {self.key}"):
                self.s3.abort_multipart_upload(**self.args, UploadId=self.upload_id)


def upload(env: Environment, object_key: str, lock: Lock,
           produce: Callable[[Callable[[bytes], None]], object]) -> int:
    """`produce(write)` writes the object's bytes; when it raises, nothing is left in S3."""
    sink = Upload(env, object_key, lock)
    try:
        produce(sink.write)
    except BaseException:
        sink.abort()
        raise
    return sink.finish()


@dataclass(frozen=True)
class OffsiteSet:
    id: str
    files: dict[str, int]        # plain name -> bytes in S3 (ciphertext)
    locked_until: str = ""       # the manifest's retention, ISO (UTC)

    @property
    def complete(self) -> bool:
        return MANIFEST in self.files

    @property
    def size(self) -> int:
        return sum(self.files.values())

    def as_dict(self) -> dict[str, object]:
        return {"id": self.id, "complete": self.complete, "bytes": self.size,
                "files": sorted(self.files), "locked_until": self.locked_until}


def listed(env: Environment, with_locks: bool = False) -> dict[str, OffsiteSet]:
    """The sets under the prefix, by id (with_locks: each manifest's retention too, one HEAD
    a set)."""
    s3t = target(env)
    s3 = client(env, "s3")
    found: dict[str, dict[str, int]] = {}
    with answered(env, f"listing {s3t.url()}"):
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=s3t.bucket,
                                                                 Prefix=f"{s3t.prefix}/"):
            for item in page.get("Contents", []):
                rest = item["Key"][len(s3t.prefix) + 1:]
                backup_id, _, name = rest.partition("/")
                if name.endswith(SUFFIX) and "/" not in name:
                    found.setdefault(backup_id, {})[name[:-len(SUFFIX)]] = int(item["Size"])
    sets = {}
    for backup_id, files in sorted(found.items()):
        until = ""
        if with_locks and MANIFEST in files:
            with answered(env, f"reading {s3t.url(backup_id)}{MANIFEST}{SUFFIX}"):
                head = s3.head_object(Bucket=s3t.bucket, Key=key(env, backup_id, MANIFEST))
            retain = head.get("ObjectLockRetainUntilDate")
            until = retain.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if retain else ""
        sets[backup_id] = OffsiteSet(backup_id, files, until)
    return sets


def chunks(env: Environment, backup_id: str, name: str) -> Iterator[bytes]:
    """An object's bytes as they arrive (to the data host, for backup.fetch)."""
    s3t = target(env)
    object_key = key(env, backup_id, name)
    with answered(env, f"reading s3://{s3t.bucket}/{object_key}"):
        body = client(env, "s3").get_object(Bucket=s3t.bucket, Key=object_key)["Body"]
        yield from body.iter_chunks(1024 * 1024)


@dataclass(frozen=True)
class Pruned:
    deleted: tuple[str, ...]               # ids whose every version was deleted
    locked: tuple[tuple[str, str], ...]    # (id, until): kept by Object Lock for now


def prune(env: Environment, keep: set[str], now: dt.datetime | None = None) -> Pruned:
    """Delete every version of the sets not in `keep` whose lock has ended; a set with a
    version still locked stays (whole) and is said."""
    s3t = target(env)
    s3 = client(env, "s3")
    now = now or dt.datetime.now(dt.UTC)
    versions: dict[str, list[dict[str, Any]]] = {}
    with answered(env, f"listing the versions under {s3t.url()}"):
        for page in s3.get_paginator("list_object_versions").paginate(
                Bucket=s3t.bucket, Prefix=f"{s3t.prefix}/"):
            for v in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]:
                backup_id = v["Key"][len(s3t.prefix) + 1:].partition("/")[0]
                if backup_id not in keep:
                    versions.setdefault(backup_id, []).append(v)
    deleted, locked = [], []
    for backup_id, found in sorted(versions.items()):
        until = max((_retained(env, s3, v) for v in found), default=None)
        if until is not None and until > now:
            locked.append((backup_id, until.strftime("%Y-%m-%dT%H:%M:%SZ")))
            continue
        with answered(env, f"deleting {s3t.url(backup_id)} (its lock has ended)"):
            for v in found:
                s3.delete_object(Bucket=s3t.bucket, Key=v["Key"], VersionId=v["VersionId"])
        deleted.append(backup_id)
    return Pruned(tuple(deleted), tuple(locked))


def _retained(env: Environment, s3: Any, version: dict[str, Any]) -> dt.datetime | None:
    if "Size" not in version:  # a delete marker holds no data and no lock
        return None
    s3t = target(env)
    with answered(env, f"reading the retention of s3://{s3t.bucket}/{version['Key']}"):
        head = s3.head_object(Bucket=s3t.bucket, Key=version["Key"],
                              VersionId=version["VersionId"])
    return head.get("ObjectLockRetainUntilDate")


def identity(env: Environment) -> str:
    """The age identity (private key) that opens the copies, from Secrets Manager: only the
    line age needs, never shown."""
    s3t = target(env)
    with answered(env, f"reading Secrets Manager secret {s3t.age_identity}"):
        text = client(env, "secretsmanager").get_secret_value(
            SecretId=s3t.age_identity).get("SecretString") or ""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip().startswith(IDENTITY_LINE)]
    if len(lines) != 1:
        raise StepFailed(f"Secrets Manager secret {s3t.age_identity} does not hold one age "
                         "identity (a line AGE-SECRET-KEY-1..., as age-keygen writes it); its "
                         "value is not shown")
    return lines[0]


# --- aws.check: the bucket as a bank needs it ------------------------------------------------

def bucket_checks(env: Environment) -> list[Check]:
    """Versioning, Object Lock with a default retention, SSE-KMS with the environment's key
    by default, every public access blocked."""
    s3t = target(env)
    s3 = client(env, "s3")
    subject = f"bucket {s3t.bucket}"
    fix = "README, Backups offsite: how to create the bucket"

    def read(call: Callable[[], dict[str, Any]], absent: str = "") -> dict[str, Any]:
        return _read(env, f"reading {subject}", call, absent)

    versioning = read(lambda: s3.get_bucket_versioning(Bucket=s3t.bucket))
    lock = _lock(read(lambda: s3.get_object_lock_configuration(Bucket=s3t.bucket),
                      NO_LOCK).get("ObjectLockConfiguration", {}))
    rules = read(lambda: s3.get_bucket_encryption(Bucket=s3t.bucket),
                 "ServerSideEncryptionConfigurationNotFoundError").get(
        "ServerSideEncryptionConfiguration", {}).get("Rules", [])
    default = rules[0].get("ApplyServerSideEncryptionByDefault", {}) if rules else {}
    blocked = read(lambda: s3.get_public_access_block(Bucket=s3t.bucket),
                   "NoSuchPublicAccessBlockConfiguration").get(
        "PublicAccessBlockConfiguration", {})
    sse = f"{default.get('SSEAlgorithm', 'none')} {default.get('KMSMasterKeyID', '')}".strip()
    public = sorted(k for k in ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy",
                                "RestrictPublicBuckets") if not blocked.get(k))
    return [
        Check("backup-bucket-versioning", subject, versioning.get("Status") == "Enabled",
              "versioning enabled", versioning.get("Status", "never enabled"), fix),
        Check("backup-bucket-object-lock", subject, lock is not None,
              "Object Lock with a default retention (governance or compliance)",
              f"{lock.mode} {lock.days} days" if lock else "no default retention", fix),
        Check("backup-bucket-encryption", subject,
              default.get("SSEAlgorithm") == "aws:kms"
              and default.get("KMSMasterKeyID") == s3t.kms_key,
              f"SSE-KMS with {s3t.kms_key} by default", sse, fix),
        Check("backup-bucket-public-access", subject, not public,
              "every public access blocked",
              "all blocked" if not public else "not blocked: " + ", ".join(public), fix),
    ]
