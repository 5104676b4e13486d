"""Image pins: what the environment runs, how a pin reaches compose, what is stale, and how a
change is described. No host: the pulls are the release's (tested there)."""

from __future__ import annotations

from dataclasses import replace

from fabfile.commands.compose import suite_variables
from fabfile.ops import pins
from fabfile.stackspec import infra_images
from tests.conftest import shipped

A, B = "a" * 64, "b" * 64


def test_the_images_come_from_the_compose_files_and_enabled_profiles():
    prod, sandbox = shipped("prod"), shipped("staging")
    assert infra_images(prod)["NGINX_IMAGE"] == ("nginx:1.27.3", "core")
    assert infra_images(prod)["MONGO_IMAGE"] == ("mongo:7.0.16", "data")
    assert "GRAFANA_IMAGE" in infra_images(prod)  # prod enables the grafana profile
    assert "GRAFANA_IMAGE" not in infra_images(replace(sandbox, compose_profiles=()))
    assert not any(v.startswith("JAFAR") for v in infra_images(prod))  # releases pin those


def test_a_pin_replaces_the_tag_it_was_made_for_only():
    env = replace(shipped("prod"), pins={"NGINX_IMAGE": f"nginx:1.27.3@sha256:{A}"})
    assert suite_variables(env)["NGINX_IMAGE"] == f"nginx:1.27.3@sha256:{A}"
    moved = replace(env, images={"NGINX_IMAGE": "nginx:1.27.4"})
    assert suite_variables(moved)["NGINX_IMAGE"] == "nginx:1.27.4"
    assert "nginx:1.27.4" in pins.stale(moved)[0] and "1.27.3" in pins.stale(moved)[0]


def test_a_protected_environment_needs_every_pin():
    prod = shipped("prod")
    asked = pins.wanted(prod)
    full = {var: f"{ref}@sha256:{A}" for var, (ref, _) in asked.items()}
    assert pins.stale(replace(prod, pins=full)) == []
    partial = dict(full)
    del partial["REDIS_IMAGE"]
    assert pins.stale(replace(prod, pins=partial)) == ["REDIS_IMAGE (redis:7.2.7) has no pin"]
    staging = replace(shipped("staging"), protected=False)
    assert pins.stale(replace(staging, pins={})) == []  # unpinned: runs the tags


def test_changes_name_new_moved_retagged_and_removed_pins():
    before = {"NGINX_IMAGE": f"nginx:1.27.3@sha256:{A}", "REDIS_IMAGE": f"redis:7.2.7@sha256:{A}",
              "GRAFANA_IMAGE": f"grafana/grafana:11.3.1@sha256:{A}"}
    after = {"NGINX_IMAGE": f"nginx:1.27.3@sha256:{B}", "REDIS_IMAGE": f"redis:7.2.8@sha256:{B}",
             "MONGO_IMAGE": f"mongo:7.0.16@sha256:{A}"}
    assert pins.changes(before, after) == [
        f"GRAFANA_IMAGE: no longer run, pin removed (grafana/grafana:11.3.1@sha256:{A})",
        f"MONGO_IMAGE: pinned mongo:7.0.16@sha256:{A}",
        f"NGINX_IMAGE: the tag nginx:1.27.3 moved: sha256:{A[:12]} -> sha256:{B[:12]}",
        f"REDIS_IMAGE: redis:7.2.7 -> redis:7.2.8@sha256:{B}",
    ]
    assert pins.changes(after, after) == []


def test_the_pins_file_round_trips_through_the_config_reader(tmp_path):
    from fabfile.config import _pins

    path = tmp_path / "pins.yml"
    pins.write(path, {"NGINX_IMAGE": f"nginx:1.27.3@sha256:{A}"})
    assert path.read_text().startswith("# The infrastructure images by digest")
    assert _pins(path) == {"NGINX_IMAGE": f"nginx:1.27.3@sha256:{A}"}
    assert _pins(tmp_path / "none.yml") == {}
