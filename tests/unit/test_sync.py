"""Which files a sync must upload, and the bundle it sends."""

from __future__ import annotations

import io
import tarfile
from dataclasses import replace

from fabfile.sync import Item, bundle_items, secret_items, stale, tarball
from tests.conftest import shipped

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
    items = {i.remote: i for i in bundle_items(ENV)}
    assert "/opt/jafar/compose/docker-compose.data.yml" in items
    assert items["/opt/jafar/scripts/init-replica.sh"].mode == "755"
    assert items["/opt/jafar/config/nginx/nginx.conf"].mode == "644"
    assert not any(i.secret for i in items.values())


def test_secret_items_include_tls_pair_with_private_key_0600(tmp_path):
    env = replace(ENV, tls_dir=tmp_path)
    modes = {i.remote: (i.mode, i.secret) for i in secret_items(env)}
    assert modes == {"/opt/jafar/.env.ec2": ("600", True),
                     "/opt/jafar/certs/tls.crt": ("644", False),
                     "/opt/jafar/certs/tls.key": ("600", True)}


def test_tarball_paths_are_relative_with_modes(tmp_path):
    f = tmp_path / "s.sh"
    f.write_text("echo hi\n")
    data = tarball([Item(f, "/opt/jafar/scripts/s.sh", "755", False)], "/opt/jafar")
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        (member,) = tar.getmembers()
    assert (member.name, member.mode, member.size) == ("scripts/s.sh", 0o755, 8)
