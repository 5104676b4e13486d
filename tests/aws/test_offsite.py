"""The offsite copies in S3 against moto (the AWS stand-in) with real boto3 calls, and the data
host's side for real: the commands the suite sends run here under bash with the real `age`,
in a folder standing in for the deploy path (a local "remote" instead of SSH; the SSH
transport's streaming is tested with a real sshd in tests/integration).

What is proven: only ciphertext reaches S3, with SSE-KMS, a SHA-256 checksum and an Object
Lock retention as long as the bucket's default; large files go in parts and are never held
whole; a failed read leaves nothing in S3; a second send has nothing to do; a fetch brings the
set back byte for byte, and refuses one whose files were swapped; the retention deletes only
what backup_keep drops and whose lock has ended; the bucket checks of aws.check."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import subprocess
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest

from fabfile.aws import offsite as s3
from fabfile.backup import offsite, sets
from fabfile.config import load_environment
from fabfile.errors import BadInput, StepFailed
from fabfile.remote import Masker, Printer, Result
from tests.aws.test_network import aws_client, hosts_block
from tests.conftest import env_yaml

BUCKET = "jafar-test-backups"
CANARY = b"canary-ledger-row-7f3a"   # a value inside a backed-up file: never in S3 in clear


def age_keys(tmp_path: Path) -> tuple[str, str]:
    """A fresh age identity and its recipient (the real age-keygen)."""
    path = tmp_path / "identity.txt"
    subprocess.run(["age-keygen", "-o", str(path)], check=True, capture_output=True)
    recipient = subprocess.run(["age-keygen", "-y", str(path)], check=True,
                               capture_output=True, text=True).stdout.strip()
    return path.read_text(), recipient


class LocalRemote:
    """The data host's side of a Remote, run here: the same command strings, under bash, with
    the host's deploy path (/opt/jafar) standing for this test's folder."""

    def __init__(self, deploy: Path) -> None:
        self.deploy = deploy
        self.commands: list[str] = []

    def _run(self, command: str, stdin: bytes | Iterable[bytes] | None,
             sink: Callable[[bytes], None] | None, check: bool = True) -> Result:
        self.commands.append(command)
        here = command.replace("/opt/jafar", str(self.deploy))
        proc = subprocess.Popen(["bash", "-c", here], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdin is not None and proc.stdout is not None
        for chunk in [stdin] if isinstance(stdin, bytes) else stdin or ():
            proc.stdin.write(chunk)
        proc.stdin.close()
        out = bytearray()
        while chunk := proc.stdout.read(65536):
            if sink is None:
                out += chunk
            else:
                sink(chunk)
        err = proc.stderr.read().decode() if proc.stderr else ""
        code = proc.wait()
        result = Result(command, out.decode(errors="replace"), err, code)
        if check and code != 0:
            raise StepFailed(f"local: {err.strip().splitlines()[-1:] or code}")
        return result

    def run(self, command: str, *, timeout: int | None = None, check: bool = True) -> Result:
        return self._run(command, None, None, check)

    def run_with_input(self, command: str, data: bytes, *, timeout: int | None = None,
                       check: bool = True) -> Result:
        return self._run(command, data, None, check)

    def stream_out(self, command: str, sink: Callable[[bytes], None], *,
                   timeout: int | None = None) -> Result:
        return self._run(command, None, sink)

    def stream_in(self, command: str, chunks: Iterable[bytes], *,
                  timeout: int | None = None) -> Result:
        return self._run(command, chunks, None)


class LocalPool:
    def __init__(self, deploy: Path) -> None:
        self.remote = LocalRemote(deploy)
        self.printer = Printer(Masker())

    def get(self, host, admin: bool = False) -> LocalRemote:
        return self.remote

    def renew(self, host, remote) -> None:
        pass


@pytest.fixture
def setup(environments, aws, tmp_path):
    """An environment with backup_s3 on moto, a bank's bucket, the identity in Secrets
    Manager, and a deploy path here."""
    identity, recipient = age_keys(tmp_path)
    deploy = tmp_path / "deploy"
    (deploy / "backups").mkdir(parents=True)
    kms = aws_client(aws, "kms")
    kms.create_alias(AliasName="alias/jafar-backups",
                     TargetKeyId=kms.create_key()["KeyMetadata"]["KeyId"])
    bank_bucket(aws, BUCKET)
    aws_client(aws, "secretsmanager").create_secret(Name="jafar/test/backup-age",
                                                     SecretString=identity)

    def env(keep: str = "", bucket: str = BUCKET):
        environments(env_yaml(hosts_block(), (
            f"aws: {{region: eu-west-1, endpoint_url: '{aws}'}}\n"
            f"env_file: {tmp_path / 'no-env-file'}\n"
            f"backup_s3: {{bucket: {bucket}, prefix: test/sets, kms_key: alias/jafar-backups, "
            f"age_recipient: {recipient}, age_identity: jafar/test/backup-age}}\n{keep}")))
        return load_environment("test")
    return env, deploy, identity


def bank_bucket(endpoint: str, name: str, days: int = 30) -> None:
    s3c = aws_client(endpoint, "s3")
    s3c.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True,
                      CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    s3c.put_object_lock_configuration(Bucket=name, ObjectLockConfiguration={
        "ObjectLockEnabled": "Enabled",
        "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": days}}})
    s3c.put_bucket_encryption(Bucket=name, ServerSideEncryptionConfiguration={"Rules": [
        {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms",
                                                "KMSMasterKeyID": "alias/jafar-backups"}}]})
    s3c.put_public_access_block(Bucket=name, PublicAccessBlockConfiguration={
        k: True for k in ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy",
                          "RestrictPublicBuckets")})


def make_set(deploy: Path, backup_id: str, redis: bytes = b"REDIS0011" + CANARY) -> None:
    """A set as scripts/backup.sh leaves it: files, SHA256SUMS, manifest.json (mode 0600)."""
    folder = deploy / "backups" / backup_id
    folder.mkdir(mode=0o700)
    files = {"ledger.pgdump": b"PGDMP" + CANARY * 100, "redis.rdb": redis}
    for name, data in files.items():
        (folder / name).write_bytes(data)
    (folder / "SHA256SUMS").write_text("".join(
        f"{hashlib.sha256(d).hexdigest()}  {n}\n" for n, d in sorted(files.items())))
    (folder / "manifest.json").write_text(json.dumps({
        "id": backup_id, "finished": backup_id, "release": "t1",
        "files": {n: {"bytes": len(d), "sha256": hashlib.sha256(d).hexdigest()}
                  for n, d in files.items()},
        "stores": {"ledger": {"file": "ledger.pgdump"}, "redis": {"file": "redis.rdb"}}}) + "\n")
    for path in folder.iterdir():
        path.chmod(0o600)


def tree(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_only_ciphertext_reaches_s3_encrypted_locked_and_checksummed(setup, aws):
    env_of, deploy, _ = setup
    env = env_of()
    make_set(deploy, "20261207T023000Z")
    pool = LocalPool(deploy)
    sent = offsite.send(env, pool, sets.list_sets(env, pool))
    assert sent.ids == ("20261207T023000Z",)
    s3c = aws_client(aws, "s3")
    keys = [o["Key"] for o in s3c.list_objects_v2(Bucket=BUCKET)["Contents"]]
    assert sorted(keys) == [f"test/sets/20261207T023000Z/{n}.age" for n in (
        "SHA256SUMS", "ledger.pgdump", "manifest.json", "redis.rdb")]
    now = dt.datetime.now(dt.UTC)
    for k in keys:
        head = s3c.head_object(Bucket=BUCKET, Key=k, ChecksumMode="ENABLED")
        body = s3c.get_object(Bucket=BUCKET, Key=k)["Body"].read()
        assert body.startswith(b"age-encryption.org/v1\n")
        assert CANARY not in body and b"20261207T023000Z" not in body
        assert head["ServerSideEncryption"] == "aws:kms"
        assert head["SSEKMSKeyId"] == "alias/jafar-backups"
        assert head["ObjectLockMode"] == "GOVERNANCE"
        assert dt.timedelta(days=29) < head["ObjectLockRetainUntilDate"] - now \
            < dt.timedelta(days=31)
        assert head["ChecksumSHA256"]
    # the recipient is on argv (a public key); the identity never is
    assert all("AGE-SECRET-KEY" not in c for c in pool.remote.commands)
    assert "locked until" in sent.describe(env)


def test_a_second_send_has_nothing_to_do(setup):
    env_of, deploy, _ = setup
    env = env_of()
    make_set(deploy, "20261207T023000Z")
    pool = LocalPool(deploy)
    offsite.send(env, pool, sets.list_sets(env, pool))
    again = offsite.send(env, pool, sets.list_sets(env, pool))
    assert again.ids == () and again.size == 0
    assert again.describe(env) == ("offsite: nothing to send, every set of the host is in "
                                   "s3://jafar-test-backups/test/sets/")


def test_a_large_file_goes_in_parts_and_comes_back_byte_for_byte(setup, aws, monkeypatch):
    env_of, deploy, _ = setup
    env = env_of()
    monkeypatch.setattr(s3, "PART", 5 * 1024 * 1024)  # S3's smallest part
    big = b"REDIS0011" + os.urandom(13 * 1024 * 1024)
    make_set(deploy, "20261207T023000Z", redis=big)
    before = tree(deploy / "backups" / "20261207T023000Z")
    pool = LocalPool(deploy)
    offsite.send(env, pool, sets.list_sets(env, pool))
    head = aws_client(aws, "s3").head_object(Bucket=BUCKET,
                                             Key="test/sets/20261207T023000Z/redis.rdb.age")
    assert head["ETag"].strip('"').endswith("-2")  # two parts: 5 MiB, then the rest
    subprocess.run(["rm", "-rf", str(deploy / "backups" / "20261207T023000Z")], check=True)
    said = offsite.fetch(env, pool, "20261207T023000Z")
    assert said.startswith("backup 20261207T023000Z fetched from S3")
    assert tree(deploy / "backups" / "20261207T023000Z") == before
    assert oct((deploy / "backups" / "20261207T023000Z" / "redis.rdb").stat().st_mode)[-3:] \
        == "600"
    assert [p.name for p in (deploy / "backups").iterdir()] == ["20261207T023000Z"]
    identity = aws_client(aws, "secretsmanager").get_secret_value(
        SecretId="jafar/test/backup-age")["SecretString"]
    key_line = next(ln for ln in identity.splitlines() if ln.startswith("AGE-SECRET-KEY-1"))
    assert all(key_line not in c for c in pool.remote.commands)


def test_a_read_that_fails_leaves_nothing_in_s3(setup, aws, monkeypatch):
    env_of, deploy, _ = setup
    env = env_of()
    monkeypatch.setattr(s3, "PART", 5 * 1024 * 1024)
    make_set(deploy, "20261207T023000Z", redis=os.urandom(12 * 1024 * 1024))
    pool = LocalPool(deploy)
    found = sets.list_sets(env, pool)
    (deploy / "backups" / "20261207T023000Z" / "redis.rdb").chmod(0)  # age cannot read it
    if os.geteuid() == 0:  # root reads anything: take the file away instead
        (deploy / "backups" / "20261207T023000Z" / "redis.rdb").unlink()
    with pytest.raises(StepFailed):
        offsite.send(env, pool, found)
    s3c = aws_client(aws, "s3")
    keys = [o["Key"] for o in s3c.list_objects_v2(Bucket=BUCKET).get("Contents", [])]
    assert "test/sets/20261207T023000Z/manifest.json.age" not in keys
    assert "test/sets/20261207T023000Z/redis.rdb.age" not in keys
    assert s3c.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []
    assert not s3.listed(env)["20261207T023000Z"].complete


def two_sets_sent(setup) -> tuple:
    """Yesterday's and today's sets on the host, both sent to S3."""
    env_of, deploy, _ = setup
    env = env_of()
    make_set(deploy, "20261206T023000Z", redis=b"REDIS0011 one")
    make_set(deploy, "20261207T023000Z", redis=b"REDIS0011 two")
    pool = LocalPool(deploy)
    offsite.send(env, pool, sets.list_sets(env, pool))
    return env, deploy, pool


def test_a_fetch_of_swapped_files_is_refused_and_leaves_nothing(setup, aws):
    env, deploy, pool = two_sets_sent(setup)
    s3c = aws_client(aws, "s3")
    other = s3c.get_object(Bucket=BUCKET, Key="test/sets/20261206T023000Z/redis.rdb.age")
    s3c.put_object(Bucket=BUCKET, Key="test/sets/20261207T023000Z/redis.rdb.age",
                   Body=other["Body"].read())  # a new version: yesterday's file
    subprocess.run(["rm", "-rf", str(deploy / "backups" / "20261207T023000Z")], check=True)
    with pytest.raises(StepFailed, match="does not match its SHA-256 sums"):
        offsite.fetch(env, pool, "20261207T023000Z")
    assert [p.name for p in (deploy / "backups").iterdir()] == ["20261206T023000Z"]


def test_another_sets_files_under_this_id_are_refused(setup, aws):
    """Someone with write access to the bucket puts yesterday's whole set (each file a valid
    ciphertext to the same recipient) under today's id: the manifest says whose it is."""
    env, deploy, pool = two_sets_sent(setup)
    s3c = aws_client(aws, "s3")
    for name in ("ledger.pgdump", "redis.rdb", "SHA256SUMS", "manifest.json"):
        old = s3c.get_object(Bucket=BUCKET, Key=f"test/sets/20261206T023000Z/{name}.age")
        s3c.put_object(Bucket=BUCKET, Key=f"test/sets/20261207T023000Z/{name}.age",
                       Body=old["Body"].read())
    subprocess.run(["rm", "-rf", str(deploy / "backups" / "20261207T023000Z")], check=True)
    with pytest.raises(StepFailed, match="the manifest is of set 20261206T023000Z"):
        offsite.fetch(env, pool, "20261207T023000Z")
    assert [p.name for p in (deploy / "backups").iterdir()] == ["20261206T023000Z"]


def test_a_fetch_needs_the_right_identity_and_never_shows_it(setup, aws, tmp_path):
    env_of, deploy, _ = setup
    env = env_of()
    make_set(deploy, "20261207T023000Z")
    pool = LocalPool(deploy)
    offsite.send(env, pool, sets.list_sets(env, pool))
    subprocess.run(["rm", "-rf", str(deploy / "backups" / "20261207T023000Z")], check=True)
    sm = aws_client(aws, "secretsmanager")
    sm.put_secret_value(SecretId="jafar/test/backup-age", SecretString="canary-not-a-key")
    with pytest.raises(StepFailed) as caught:
        offsite.fetch(env, pool, "20261207T023000Z")
    assert "does not hold one age identity" in str(caught.value)
    assert "canary" not in str(caught.value)
    (tmp_path / "other").mkdir()
    other, _ = age_keys(tmp_path / "other")
    sm.put_secret_value(SecretId="jafar/test/backup-age", SecretString=other)
    with pytest.raises(StepFailed, match="did not decrypt"):
        offsite.fetch(env, pool, "20261207T023000Z")
    assert list((deploy / "backups").iterdir()) == []
    with pytest.raises(BadInput, match="no complete set of that id"):
        offsite.fetch(env, pool, "20261201T000000Z")


def test_the_retention_deletes_what_backup_keep_drops_once_its_lock_has_ended(setup, aws):
    env_of, deploy, _ = setup
    env = env_of(keep="backup_keep: {daily: 1, weekly: 0, monthly: 0}\n")
    s3c = aws_client(aws, "s3")
    past = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    future = dt.datetime.now(dt.UTC) + dt.timedelta(days=3)
    for backup_id, until in (("20261201T023000Z", past), ("20261202T023000Z", future)):
        for name in ("redis.rdb", "manifest.json"):
            s3c.put_object(Bucket=BUCKET, Key=f"test/sets/{backup_id}/{name}.age", Body=b"x",
                           ObjectLockMode="GOVERNANCE", ObjectLockRetainUntilDate=until,
                           ChecksumAlgorithm="SHA256")
    s3c.put_object(Bucket=BUCKET, Key="other/keep-me", Body=b"y")  # outside the prefix
    make_set(deploy, "20261207T023000Z")
    pool = LocalPool(deploy)
    sent = offsite.send(env, pool, sets.list_sets(env, pool))
    assert sent.pruned.deleted == ("20261201T023000Z",)
    assert sent.pruned.locked == (("20261202T023000Z", future.strftime("%Y-%m-%dT%H:%M:%SZ")),)
    versions = s3c.list_object_versions(Bucket=BUCKET)
    left = {v["Key"].split("/")[2] if v["Key"].startswith("test/") else v["Key"]
            for v in versions.get("Versions", [])}
    assert left == {"20261202T023000Z", "20261207T023000Z", "other/keep-me"}
    assert "retention deleted 20261201T023000Z from S3; not kept, but locked: " \
           "20261202T023000Z until" in sent.describe(env)
    listed = s3.listed(env, with_locks=True)
    assert listed["20261202T023000Z"].locked_until == future.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_a_bucket_without_object_lock_gets_nothing(setup, aws):
    env_of, deploy, _ = setup
    aws_client(aws, "s3").create_bucket(
        Bucket="jafar-plain", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    env = env_of(bucket="jafar-plain")
    make_set(deploy, "20261207T023000Z")
    pool = LocalPool(deploy)
    with pytest.raises(StepFailed, match="has no Object Lock default retention"):
        offsite.send(env, pool, sets.list_sets(env, pool))
    assert aws_client(aws, "s3").list_objects_v2(Bucket="jafar-plain").get("KeyCount") == 0
    assert pool.remote.commands == [pool.remote.commands[0]]  # the listing only: nothing read


def test_the_bucket_checks_of_aws_check(setup, aws):
    env_of, _, _ = setup
    assert [(c.check, c.ok) for c in s3.bucket_checks(env_of())] == [
        ("backup-bucket-versioning", True), ("backup-bucket-object-lock", True),
        ("backup-bucket-encryption", True), ("backup-bucket-public-access", True)]
    aws_client(aws, "s3").create_bucket(
        Bucket="jafar-plain", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    found = {c.check: (c.ok, c.found) for c in s3.bucket_checks(env_of(bucket="jafar-plain"))}
    assert found == {
        "backup-bucket-versioning": (False, "never enabled"),
        "backup-bucket-object-lock": (False, "no default retention"),
        "backup-bucket-encryption": (False, "none"),
        "backup-bucket-public-access": (False, "not blocked: BlockPublicAcls, "
                                        "BlockPublicPolicy, IgnorePublicAcls, "
                                        "RestrictPublicBuckets")}


def test_an_unreachable_endpoint_is_a_failure_not_a_missing_setting(environments, aws,
                                                                     tmp_path):
    """aws.check must not report "never enabled" for a bucket it could not read."""
    from tests.conftest import Listener

    closed = Listener()  # accepts and closes: no HTTP answer
    try:
        environments(env_yaml(hosts_block(), (
            f"aws: {{region: eu-west-1, endpoint_url: 'http://127.0.0.1:{closed.port}'}}\n"
            f"env_file: {tmp_path / 'no-env-file'}\n"
            "backup_s3: {bucket: jafar-x, prefix: p, kms_key: alias/k, age_recipient: "
            "age1a67kuxhlm3yayee258tprq7svxr63jqylew2spzh5m6z5063aduswel5c6, "
            "age_identity: jafar/x}\n")))
        with pytest.raises(StepFailed, match="reading bucket jafar-x"):
            s3.bucket_checks(load_environment("test"))
    finally:
        closed.close()
