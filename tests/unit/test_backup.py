"""Backups: the builders (exact strings), the manifests' parsing, the argument checks."""

from __future__ import annotations

import json
import shlex
import subprocess
from types import SimpleNamespace

import pytest

from fabfile.backup import commands as cmd
from fabfile.backup import sets
from fabfile.errors import BadInput, StepFailed
from tests.conftest import env_yaml, shipped
from tests.unit.test_commands import SINGLE_ENV

DATA = f"cd /opt/jafar && {SINGLE_ENV} docker compose -p jafar-data --env-file .env.ec2 " \
       "-f compose/docker-compose.data.yml"


@pytest.fixture
def sandbox():
    return shipped("sandbox")


def test_take_runs_the_script_an_operator_runs(sandbox):
    assert cmd.take(sandbox, "20261203T101500Z", "v1.4.2", 600) == (
        "cd /opt/jafar && ./scripts/backup.sh --id 20261203T101500Z --project jafar-data "
        "--timeout 600 --keep 7,4,12 --max-bytes 21474836480 --release v1.4.2")
    # the safety backup of a restore: no retention (it could remove the set being restored)
    assert cmd.take(sandbox, "X-before-restore", "v1", 600, retain=False) == (
        "cd /opt/jafar && ./scripts/backup.sh --id X-before-restore --project jafar-data "
        "--timeout 600 --release v1")


def test_manifests_and_checksums(sandbox):
    assert cmd.manifests(sandbox) == (
        'cd /opt/jafar && for m in backups/*/manifest.json; do [ -f "$m" ] && cat "$m"; done; '
        "true")
    assert cmd.check_files(sandbox, "X1") == (
        "cd /opt/jafar/backups/X1 && sha256sum --quiet --strict -c SHA256SUMS 2>&1")


def test_a_restore_marks_the_host_so_that_no_backup_runs_meanwhile(sandbox):
    assert cmd.mark_restoring(sandbox, "X1") == "cd /opt/jafar && echo X1 > backups/.restoring"
    assert cmd.unmark_restoring(sandbox) == "cd /opt/jafar && rm -f backups/.restoring"


def test_a_store_is_removed_with_its_volume_and_brought_up_empty(sandbox):
    assert cmd.remove_store(sandbox, "ledger") == (
        f"{DATA} rm --stop --force postgres-ledger && "
        "docker volume rm --force jafar-data_postgres-ledger-data >/dev/null")
    assert cmd.up_store(sandbox, "redis", 180) == (
        f"{DATA} up --detach --wait --wait-timeout 180 --no-deps redis")
    # MongoDB: every member, with its data and config volumes
    assert cmd.remove_store(sandbox, "mongo") == (
        f"{DATA} rm --stop --force mongo-primary mongo-secondary mongo-arbiter && "
        "docker volume rm --force jafar-data_mongo-primary-data jafar-data_mongo-primary-config "
        "jafar-data_mongo-secondary-data jafar-data_mongo-secondary-config "
        "jafar-data_mongo-arbiter-data jafar-data_mongo-arbiter-config >/dev/null")


def test_the_ledger_is_loaded_in_one_transaction_from_stdin(sandbox):
    assert cmd.load_ledger(sandbox, "X1") == (
        f"{DATA} exec -T postgres-ledger sh -c 'exec pg_restore -U \"$POSTGRES_USER\" "
        "-d \"$POSTGRES_DB\" --exit-on-error --single-transaction --clean --if-exists' "
        "< /opt/jafar/backups/X1/ledger.pgdump")


def test_redis_is_loaded_by_a_one_off_container_without_network(sandbox):
    line = cmd.load_redis(sandbox, "X1")
    assert line.startswith(f"cid=$({DATA} ps --all --quiet redis) && ")
    assert ("docker run --rm -i --network none --user redis --cap-drop ALL --security-opt "
            'no-new-privileges:true --entrypoint sh --volumes-from "$cid" "$image" -c ') in line
    assert line.endswith('< /opt/jafar/backups/X1/redis.rdb && docker start "$cid" >/dev/null')
    script = cmd.REDIS_LOAD
    assert "--port 0" in script and "--appendonly no" in script  # no TCP; AOF written after
    assert "CONFIG SET appendonly yes" in script


def test_mongo_is_restored_on_the_primary_from_stdin_after_roots_password(sandbox):
    assert cmd.load_mongo(sandbox, "X1") == (
        "cd /opt/jafar && seeds=\"rs0/$(sed -n 's/^MONGO_HOSTS=//p' .env.ec2 | tail -n 1)\" && "
        '{ printf "%s\\n" "$(cat secrets/mongo_root_password)"; '
        "cat /opt/jafar/backups/X1/mongo.archive.gz; } | "
        f"{{ {DATA} exec -T mongo-primary sh -c 'exec mongorestore --host \"$1\" --ssl "
        "--sslCAFile /run/secrets/data_ca_crt --username \"$MONGO_ROOT_USERNAME\" "
        "--authenticationDatabase admin --archive --gzip --drop --nsInclude \"$MONGO_APP_DB.*\" "
        "--writeConcern '\"'\"'{w: \"majority\"}'\"'\"' --stopOnError' mongorestore \"$seeds\"; }")


def test_the_redis_load_script_is_valid_posix_sh():
    assert subprocess.run(["sh", "-n", "-c", cmd.REDIS_LOAD], check=False).returncode == 0


MANIFEST = {"id": "20261203T101500Z", "started": "2026-12-03T10:15:00Z",
            "finished": "2026-12-03T10:15:04Z", "host": "h", "release": "v1",
            "files": {"ledger.pgdump": {"bytes": 2048, "sha256": "a" * 64},
                      "redis.rdb": {"bytes": 1024, "sha256": "b" * 64}},
            "stores": {"ledger": {"file": "ledger.pgdump"}, "redis": {"file": "redis.rdb"},
                       "mongo": {"skipped": "not backed up by this version of the suite"}}}
# a set of this version: MongoDB too
FULL = dict(MANIFEST, id="20261204T101500Z",
            stores={"ledger": {"file": "ledger.pgdump"}, "redis": {"file": "redis.rdb"},
                    "mongo": {"file": "mongo.archive.gz", "collections": {"wallets": 3}}})


def test_manifests_are_parsed_oldest_first_and_noise_skipped():
    newer = dict(MANIFEST, id="20261204T000000Z")
    found = sets.parse_manifests("\n".join([json.dumps(newer), "garbage", "{}",
                                            json.dumps(MANIFEST)]))
    assert [s.id for s in found] == ["20261203T101500Z", "20261204T000000Z"]
    assert found[0].size == 3072


def test_the_table_names_what_a_set_leaves_out():
    lines = sets.table(sets.parse_manifests(json.dumps(MANIFEST)))
    assert lines[0].split() == ["ID", "FINISHED", "RELEASE", "SIZE", "STORES"]
    assert lines[1].startswith("20261203T101500Z  2026-12-03T10:15:04Z  v1       3.0 KiB  ")
    assert lines[1].endswith("ledger, mongo (not backed up by this version of the suite), redis")
    assert sets.table([]) == ["no backup on the data host yet (take one: inv backup)"]
    assert sets.table(sets.parse_manifests(json.dumps(FULL)))[1].endswith("ledger, mongo, redis")


def test_ids_and_stores_are_checked():
    assert sets.check_id("20261203T101500Z-before-restore") == "20261203T101500Z-before-restore"
    for bad in ("", "../etc", "-x", "a b", "a" * 65, "x;rm"):
        with pytest.raises(BadInput, match="is not a backup id"):
            sets.check_id(bad)
    assert sets.parse_stores("") == ("ledger", "redis", "mongo")
    assert sets.parse_stores("mongo, redis, ledger") == ("ledger", "redis", "mongo")
    with pytest.raises(BadInput, match="--only names postgres: choose from ledger, redis, mongo"):
        sets.parse_stores("postgres,redis")


def test_an_unknown_id_names_the_latest_ones():
    found = sets.parse_manifests(json.dumps(MANIFEST))
    with pytest.raises(BadInput, match="no such backup on the data host "
                                       r"\(the latest: 20261203T101500Z;"):
        sets.find(found, "20990101T000000Z")


def test_the_writers_of_a_store_are_stopped_for_its_restore():
    assert sets.writers(("ledger",)) == ["ledger-service"]
    assert sets.writers(("redis",)) == ["api-service", "auth-service", "transaction-service",
                                        "notification-service", "risk-service"]
    assert sets.writers(("mongo",)) == ["api-service", "auth-service", "wallet-service",
                                        "transaction-service", "ledger-service",
                                        "risk-service"]
    assert sets.new_id(0) == "19700101T000000Z"


def test_the_timer_runs_daily_at_backup_at_with_a_random_delay(sandbox):
    from dataclasses import replace

    from fabfile.backup import schedule

    env = replace(sandbox, backup_at="03:45")
    timer = schedule.timer_unit(env)
    assert "\nOnCalendar=*-*-* 03:45:00 UTC\nRandomizedDelaySec=30min\nPersistent=true\n" in timer
    assert "\nWantedBy=timers.target\n" in timer
    unit = schedule.service_unit(env)
    assert "\nUser=deploy\nWorkingDirectory=/opt/jafar\n" in unit
    assert ("\nExecStart=/opt/jafar/scripts/backup.sh --project jafar-data --keep 7,4,12 "
            "--max-bytes 21474836480 --verify-every 7\n") \
        in unit
    script = schedule.install(env)
    assert script.startswith("set -e\n")
    assert "chown deploy: /var/lib/prometheus/node-exporter/jafar_backup.prom" in script
    assert "systemctl enable --now --quiet jafar-backup.timer" in script
    assert subprocess.run(["sh", "-n", "-c", script], check=False).returncode == 0


def test_backup_at_read_unquoted_by_yaml_is_still_the_time(environments):
    from fabfile.config import load_environment
    from tests.unit.test_config import ONE_HOST

    environments(env_yaml(ONE_HOST, "backup_at: 04:05\n"))  # YAML 1.1: the number 245
    assert load_environment("test").backup_at == "04:05"


def retention():
    import importlib.util

    from tests.conftest import ROOT

    spec = importlib.util.spec_from_file_location("backup_retention",
                                                  ROOT / "scripts" / "backup_retention.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_retention_keeps_the_newest_set_of_each_day_week_and_month():
    r = retention()
    # two sets a day for 60 days back from 2026-12-03 (a Thursday), plus odd names
    days = [f"202612{d:02d}" for d in range(3, 0, -1)] + [f"202611{d:02d}" for d in
                                                          range(30, 0, -1)] + \
        [f"202610{d:02d}" for d in range(31, 3, -1)]
    ids = [f"{d}T{h}0000Z" for d in days for h in ("23", "02")] + ["notes", "x-1"]
    kept = r.to_keep(ids, 3, 2, 2)
    assert kept == {
        "notes", "x-1",                                          # never judged
        "20261203T230000Z", "20261202T230000Z", "20261201T230000Z",  # 3 days
        "20261129T230000Z",            # the newest of the previous ISO week (23-29 Nov)
        "20261130T230000Z",            # the newest of November
    }
    assert r.to_keep(ids, 0, 0, 0) == {"notes", "x-1", "20261203T230000Z"}  # newest always
    assert "20261203T020000Z-before-restore" in r.to_keep(
        ["20261203T020000Z-before-restore", "20261202T020000Z"], 1, 0, 0)


def test_retention_removes_what_it_does_not_keep(tmp_path):
    r = retention()
    for name in ("20261201T000000Z", "20261202T000000Z", "20261202T120000Z", "odd"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "manifest.json").write_text("{}")
    (tmp_path / ".20261203T000000Z.partial").mkdir()  # being written: not a set
    assert r.main(["--keep", "1,0,0", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".20261203T000000Z.partial", "20261202T120000Z", "odd"]
    assert r.main(["--keep", "7,4", str(tmp_path)]) == 2


def test_retention_then_fits_the_sets_in_max_bytes_oldest_first(tmp_path, capsys):
    r = retention()
    sizes = {"20261201T000000Z": 400, "20261202T000000Z": 300, "20261203T000000Z": 200,
             "odd": 50}
    kept = set(sizes)
    assert r.within(sizes, kept, 1000) == kept                       # 950 fits
    assert r.within(sizes, kept, 600) == {"20261202T000000Z", "20261203T000000Z", "odd"}
    assert r.within(sizes, kept, 100) == {"20261203T000000Z", "odd"}  # never the newest
    for name, n in sizes.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "manifest.json").write_text("x" * n)
    assert r.main(["--keep", "7,4,12", "--max-bytes", "100", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert out == "removed 20261201T000000Z\nremoved 20261202T000000Z\n"
    assert err == ("backup_retention: the sets kept take 250 bytes, more than the 100 allowed, "
                   "and the newest set (and a folder not named by a time) is never removed: "
                   "raise backup_max_size\n")


def test_backup_max_size_is_read_in_binary_units(environments):
    from fabfile.config import load_environment
    from tests.unit.test_config import ONE_HOST

    assert load_environment("sandbox").backup_max_bytes == 20 * 1024 ** 3  # the default
    environments(env_yaml(ONE_HOST, "backup_max_size: 512MiB\n"))
    assert load_environment("test").backup_max_bytes == 512 * 1024 ** 2
    for bad in ("20GB", "0GiB", "-1GiB", "20 GiB", "1.5TiB"):
        environments(env_yaml(ONE_HOST, f"backup_max_size: {bad}\n"))
        with pytest.raises(BadInput, match="backup_max_size: invalid value .*; a size like "
                                           r"20GiB \(MiB, GiB or TiB\)"):
            load_environment("test")


def test_backup_keep_is_validated(environments):
    from fabfile.config import load_environment
    from tests.unit.test_config import ONE_HOST

    environments(env_yaml(ONE_HOST, "backup_keep: {daily: 3}\n"))
    assert load_environment("test").backup_keep == (3, 4, 12)
    environments(env_yaml(ONE_HOST, "backup_keep: {hourly: 3}\n"))
    with pytest.raises(BadInput, match="backup_keep.hourly: unknown key"):
        load_environment("test")
    environments(env_yaml(ONE_HOST, "backup_keep: {daily: -1}\n"))
    with pytest.raises(BadInput, match="backup_keep.daily: must be an integer from 0 to 1000"):
        load_environment("test")


def test_sizes_are_read_in_binary_units():
    assert [sets.human(n) for n in (0, 1023, 3072, 5 * 1024 ** 2, 7 * 1024 ** 4)] == [
        "0 B", "1023 B", "3.0 KiB", "5.0 MiB", "7168.0 GiB"]


class OneHostRemote:
    """Every host's commands, recorded; scripts/backup.sh fails as a full disk would."""

    def __init__(self) -> None:
        self.ran: list[str] = []

    def run(self, command: str, timeout: int | None = None, check: bool = True):
        self.ran.append(command)
        if "./scripts/backup.sh" in command:
            raise StepFailed("jafar-sandbox-1: backup: error: pg_dump of the ledger failed")
        return SimpleNamespace(ok=True, stdout="")


class OneRemotePool:
    def __init__(self) -> None:
        self.remote = OneHostRemote()

    def get(self, host, admin: bool = False):
        return self.remote

    def renew(self, host, remote) -> None:
        pass


def test_a_failed_safety_backup_restores_nothing_and_says_the_writers_stay_stopped(sandbox):
    chosen = sets.parse_manifests(json.dumps(FULL))[0]
    pool = OneRemotePool()
    with pytest.raises(StepFailed) as failed:
        sets.restore(sandbox, pool, chosen, ("redis",), lambda host, text: None, safety=True)
    assert str(failed.value) == (
        "jafar-sandbox-1: backup: error: pg_dump of the ledger failed; the safety backup "
        "failed, so nothing was restored: api-service, auth-service, transaction-service, "
        "notification-service, risk-service stay stopped (start them with inv deploy --only "
        "core.up, or restore with --skip-safety-backup when the stores are lost anyway)")
    assert not any(".restoring" in c or "rm --stop" in c for c in pool.remote.ran)


RECIPIENT = "age1a67kuxhlm3yayee258tprq7svxr63jqylew2spzh5m6z5063aduswel5c6"


def test_offsite_builders_send_ciphertext_only_and_take_the_identity_on_stdin(sandbox):
    assert cmd.encrypt(sandbox, "X1", "redis.rdb", RECIPIENT) == (
        f"cd /opt/jafar/backups/X1 && exec age --encrypt --recipient {RECIPIENT} redis.rdb")
    assert cmd.receive(sandbox, "X1", "redis.rdb", first=True) == (
        "umask 077 && rm -rf /opt/jafar/backups/.X1.fetch && mkdir -m 0700 "
        "/opt/jafar/backups/.X1.fetch && cat > /opt/jafar/backups/.X1.fetch/redis.rdb.age")
    assert cmd.receive(sandbox, "X1", "manifest.json", first=False) == (
        "umask 077 && cat > /opt/jafar/backups/.X1.fetch/manifest.json.age")
    assert cmd.unpack(sandbox, "X1", ["redis.rdb", "manifest.json"]) == (
        "set -e; umask 077; trap 'rm -rf /opt/jafar/backups/.X1.fetch' EXIT; "
        "key=$(grep -m 1 '^AGE-SECRET-KEY-1'); cd /opt/jafar/backups/.X1.fetch; "
        "for f in redis.rdb manifest.json; do "
        'printf "%s\\n" "$key" | age --decrypt --identity - --output "$f" "$f.age"; '
        'rm "$f.age"; done; sha256sum --quiet --strict -c SHA256SUMS; '
        f"python3 -c {shlex.quote(cmd.MANIFEST_CHECK)} X1; chmod 0600 -- *; "
        "cd ..; test ! -e /opt/jafar/backups/X1; mv /opt/jafar/backups/.X1.fetch "
        "/opt/jafar/backups/X1; trap - EXIT; echo 'fetched X1'")
