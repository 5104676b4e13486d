"""Which files a sync must upload, and the bundle it sends."""

from __future__ import annotations

import io
import tarfile
from dataclasses import replace

from fabfile import envfile
from fabfile.config import SecretSource
from fabfile.sync import Item, bundle_items, secret_items, stale, tarball
from tests.conftest import complete_env, shipped

CANARY = "canary-3e1a9b77c2d54f08"

ENV = shipped("sandbox")


def test_stale_compares_content_mode_and_owner(tmp_path):
    f = tmp_path / "a"
    f.write_text("x")
    item = Item(f, "/opt/jafar/a", "600", secret=True)
    same = f"{item.digest()} 600 root /opt/jafar/a\n"
    assert stale([item], same, "root") == []
    assert stale([item], same.replace(" 600 ", " 644 "), "root") == [item]
    assert stale([item], same, "admin") == [item]
    assert stale([item], "- - - /opt/jafar/a\n", "root") == [item]


def test_bundle_holds_compose_scripts_and_configs_with_modes():
    items = {i.remote: i for i in bundle_items(ENV, ENV.hosts[0])}
    assert "/opt/jafar/compose/docker-compose.data.yml" in items
    assert items["/opt/jafar/scripts/init-replica.sh"].mode == "755"
    assert items["/opt/jafar/config/nginx/nginx.conf"].mode == "644"
    assert not any(i.secret for i in items.values())


def env_with_file(env, tmp_path):
    path = tmp_path / "env"
    path.write_text(complete_env(CANARY))
    path.chmod(0o600)
    (tmp_path / "tls.crt").write_text("crt")
    (tmp_path / "tls.key").write_text("key")
    for name in ("data.crt", "data.key", "data-ca-bundle.crt"):
        (tmp_path / name).write_text(name)
    return replace(env, env_file=path, tls_dir=tmp_path, secrets=SecretSource())


def test_a_single_host_gets_settings_secret_files_and_the_tls_pair(tmp_path):
    env = env_with_file(ENV, tmp_path)
    items = {i.remote: i for i in secret_items(env, env.hosts[0])}
    assert items["/opt/jafar/.env.ec2"].mode == "600"
    settings = items["/opt/jafar/.env.ec2"].data().decode()
    assert "REDIS_HOST=redis" in settings and CANARY not in settings
    assert not [line for line in settings.splitlines()
                if envfile.CREDENTIAL_KEY.search(line.split("=")[0])]
    secret = items["/opt/jafar/secrets/redis_password"]
    assert (secret.mode, secret.readers) == ("440", (999, 1000))  # redis, the services
    assert secret.data().decode().startswith(CANARY)
    assert items["/opt/jafar/secrets/mongo_keyfile"].readers == (999,)
    assert "/opt/jafar/secrets/grafana_admin_password" not in items  # no Grafana here
    key = items["/opt/jafar/secrets/gateway_tls_key"]
    assert (key.mode, key.readers, key.data()) == ("440", (0,), b"key")  # nginx's master
    assert items["/opt/jafar/secrets/gateway_tls_crt"].mode == "444"  # public
    assert secret.write_command() == (
        "umask 077 && mkdir -p /opt/jafar/secrets && cat > "
        "/opt/jafar/secrets/redis_password.jafar-tmp && chmod 400 "
        "/opt/jafar/secrets/redis_password.jafar-tmp && setfacl -m u:999:r,u:1000:r "
        "/opt/jafar/secrets/redis_password.jafar-tmp && mv -f "
        "/opt/jafar/secrets/redis_password.jafar-tmp /opt/jafar/secrets/redis_password")


def test_an_internet_facing_core_host_gets_no_data_only_secret(tmp_path):
    env = env_with_file(shipped("prod"), tmp_path)
    core = next(h for h in env.hosts if h.has("core"))
    data = next(h for h in env.hosts if h.has("data"))
    on_core = {i.remote.rsplit("/", 1)[1] for i in secret_items(env, core)}
    on_data = {i.remote.rsplit("/", 1)[1] for i in secret_items(env, data)}
    data_only = {"mongo_root_password", "postgres_password", "mongo_keyfile"}
    assert not on_core & data_only
    assert data_only <= on_data
    assert {"auth_jwt_secret", "grafana_admin_password", "gateway_tls_key"} & on_data == set()
    assert {"gateway_tls_key", "gateway_tls_crt"} <= on_core
    assert "grafana_admin_password" in on_core  # prod runs Grafana (its profile is on)
    # the data plane: the data host's key stays on the data host; everyone verifies with the CA
    assert "data_tls_key" not in on_core and "data_tls_crt" not in on_core
    assert {"data_tls_key", "data_tls_crt", "data_ca_crt"} <= on_data
    assert "data_ca_crt" in on_core
    core_settings = next(i for i in secret_items(env, core)
                         if i.remote.endswith(".env.ec2")).data().decode()
    assert "POSTGRES_USER=" not in core_settings and "MONGO_ROOT_USERNAME=" not in core_settings
    assert "GATEWAY_BIND=10.0.1.11\n" in core_settings  # gateway_bind: private, this host's
    data_settings = next(i for i in secret_items(env, data)
                         if i.remote.endswith(".env.ec2")).data().decode()
    assert "MONGO_HOSTS=" in data_settings  # init-replica.sh reads it on the data host
    assert "GATEWAY_BIND=" not in data_settings
    other = next(i for i in secret_items(env, env.hosts_with("core")[1])
                 if i.remote.endswith(".env.ec2")).data().decode()
    assert "GATEWAY_BIND=10.0.1.12\n" in other
    assert "MONGO_APP_USER=" in data_settings and "MONGO_LEDGER_USER=" in data_settings


def test_the_ledger_role_is_the_login_user_without_a_rotations_clone(tmp_path):
    env = env_with_file(ENV, tmp_path)
    values = {**envfile.parse(env.env_file), "LEDGER_DB_USER": "jafar_ledger_clone"}
    settings = next(i for i in secret_items(env, env.hosts[0], values)
                    if i.remote.endswith(".env.ec2")).data().decode().splitlines()
    assert "LEDGER_DB_USER=jafar_ledger_clone" in settings
    assert "LEDGER_DB_ROLE=jafar_ledger" in settings


def test_the_data_planes_key_is_readable_by_the_data_stores_only(tmp_path):
    env = env_with_file(ENV, tmp_path)
    items = {i.remote.rsplit("/", 1)[1]: i for i in secret_items(env, env.hosts[0])}
    key = items["data_tls_key"]
    assert (key.mode, key.readers, key.secret, key.data()) == ("440", (999,), True, b"data.key")
    assert (items["data_tls_crt"].mode, items["data_tls_crt"].secret) == ("444", False)
    bundle = items["data_ca_crt"]
    assert (bundle.mode, bundle.data()) == ("444", b"data-ca-bundle.crt")
    assert "data-ca.key" not in {i.local.name for i in items.values() if i.local}


def test_tarball_paths_are_relative_with_modes(tmp_path):
    f = tmp_path / "s.sh"
    f.write_text("echo hi\n")
    data = tarball([Item(f, "/opt/jafar/scripts/s.sh", "755", False)], "/opt/jafar")
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        (member,) = tar.getmembers()
    assert (member.name, member.mode, member.size) == ("scripts/s.sh", 0o755, 8)


USER = ENV.hosts[0].ssh.user


class StateRemote:
    """A host whose files are all as wanted except `stale_paths`; records what is run."""

    def __init__(self, items, stale_paths: set[str]) -> None:
        self.lines = "".join(
            f"{'-' if i.remote in stale_paths else i.digest()} {i.mode} {USER} {i.remote}\n"
            for i in items)
        self.ran: list[str] = []
        self.sent: list[str] = []

    def run(self, command: str, **_):
        self.ran.append(command)
        out = self.lines if "sha256sum" in command else "reloaded alertmanager\n"
        return type("R", (), {"stdout": out, "ok": True})()

    def run_with_input(self, command: str, data: bytes, **_):
        self.sent.append(command)


def test_a_changed_alertmanager_file_is_uploaded_then_reloaded_alone():
    from fabfile.sync import apply_files
    items = bundle_items(ENV, ENV.hosts[0])
    target = "/opt/jafar/config/alertmanager/alertmanager.yml"
    remote = StateRemote(items, {target})
    outcome = apply_files(ENV, ENV.hosts[0], remote)
    assert outcome.changed
    assert outcome.message == (f"updated 1 of {len(items)} files: "
                               "config/alertmanager/alertmanager.yml; reloaded alertmanager")
    assert len(remote.ran) == 2 and "service=alertmanager" in remote.ran[1]
    assert "service=prometheus" not in remote.ran[1]


def test_unchanged_files_reload_nothing():
    from fabfile.sync import apply_files
    items = bundle_items(ENV, ENV.hosts[0])
    remote = StateRemote(items, set())
    outcome = apply_files(ENV, ENV.hosts[0], remote)
    assert not outcome.changed and len(remote.ran) == 1 and remote.sent == []
