"""The signed audit trail: real SSHSIG signatures (ssh-keygen), the hash chain, and each kind
of tampering named; who may sign (one person per key)."""

from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from fabfile.config import HostSetup
from fabfile.errors import BadInput
from fabfile.ops import audit
from fabfile.ops.identity import allowed_signers, whoami
from tests.conftest import shipped


def keypair(tmp: Path, name: str) -> Path:
    key = tmp / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)],
                   check=True, timeout=30)
    return key


@pytest.fixture
def team(tmp_path):
    """alice (whose key the hosts use) and bob, one .pub file each."""
    alice, bob = keypair(tmp_path, "alice"), keypair(tmp_path, "bob")
    ops = tmp_path / "operators"
    ops.mkdir()
    (ops / "alice.pub").write_text(Path(f"{alice}.pub").read_text())
    (ops / "bob.pub").write_text("# bob\n" + Path(f"{bob}.pub").read_text())
    env = shipped("sandbox")
    env = replace(env, hosts=tuple(replace(h, ssh=replace(h.ssh, key=alice)) for h in env.hosts),
                  host_setup=replace(env.host_setup, operator_keys=(ops / "alice.pub",
                                                                   ops / "bob.pub")))
    signers = tmp_path / "allowed_signers"
    signers.write_text(allowed_signers(env))
    return env, signers, bob


def trail_lines(env, n: int, host: str = "h1") -> list[str]:
    operator = whoami(env)
    lines, prev = [], "0" * 64
    for seq in range(1, n + 1):
        t = audit.Trail("scale", {"spec": f"api={seq}"})
        t.add(host, "scale api-service", "changed", f"1 -> {seq}")
        line = audit.make_line(audit.fields(env.name, host, operator, t, "v1", seq, prev),
                               operator.key)
        lines.append(line)
        prev = audit.line_hash(line)
    return lines


def test_whoami_names_the_person_of_the_key(team):
    env, signers, _ = team
    me = whoami(env)
    assert me.person == "alice" and me.fingerprint.startswith("SHA256:")
    text = signers.read_text()
    assert text.startswith('alice namespaces="jafar-audit" ssh-ed25519 ')
    assert '\nbob namespaces="jafar-audit" ssh-ed25519 ' in text


def test_a_shared_key_cannot_act(team, tmp_path):
    env, _, _ = team
    shared = tmp_path / "operators" / "carol.pub"
    shared.write_text((tmp_path / "operators" / "alice.pub").read_text())
    env = replace(env, host_setup=replace(env.host_setup, operator_keys=(
        *env.host_setup.operator_keys, shared)))
    with pytest.raises(BadInput, match="is shared by alice, carol: a shared key cannot act or "
                                       "sign; give each person their own key"):
        whoami(env)


def test_a_key_of_nobody_cannot_act(team, tmp_path):
    env, _, _ = team
    env = replace(env, host_setup=HostSetup(operator_keys=(tmp_path / "operators" / "bob.pub",)))
    with pytest.raises(BadInput, match="is in none of the operator key files"):
        whoami(env)


def test_operator_files_are_named_by_person(team, tmp_path):
    env, _, _ = team
    odd = tmp_path / "operators" / "Alice Smith.pub"
    odd.write_text("")
    with pytest.raises(BadInput, match="must be named <person>.pub"):
        whoami(replace(env, host_setup=replace(env.host_setup, operator_keys=(odd,))))


def test_records_verify_with_plain_openssh(team, tmp_path):
    env, signers, _ = team
    line = trail_lines(env, 1)[0]
    payload, sig = line.split("\t")
    (tmp_path / "r.json").write_text(payload)
    (tmp_path / "r.sig").write_bytes(__import__("base64").b64decode(sig))
    proc = subprocess.run(["ssh-keygen", "-Y", "verify", "-f", str(signers), "-I", "alice",
                           "-n", "jafar-audit", "-s", str(tmp_path / "r.sig")],
                          input=payload.encode(), capture_output=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    other = subprocess.run(["ssh-keygen", "-Y", "verify", "-f", str(signers), "-I", "bob",
                            "-n", "jafar-audit", "-s", str(tmp_path / "r.sig")],
                           input=payload.encode(), capture_output=True, timeout=30)
    assert other.returncode != 0  # the signature names alice, not bob


def test_an_intact_trail_verifies(team):
    env, signers, _ = team
    lines = trail_lines(env, 4)
    local = {"seq": 4, "line": lines[3]}
    assert audit.verify("h1", lines, signers, local) == []


def test_each_kind_of_tampering_is_named(team):
    env, signers, _ = team
    lines = trail_lines(env, 5)

    edited = list(lines)
    edited[2] = edited[2].replace('"api=3"', '"api=9"')
    assert audit.verify("h1", edited, signers, None) == [
        "h1: record 3 (seq 3): signature does not verify (the record was edited, or its key is "
        "not an operator's)"]

    deleted = lines[:2] + lines[3:]
    assert audit.verify("h1", deleted, signers, None) == [
        "h1: record 3 has seq 4, expected 3 (a record was deleted, inserted or moved)"]

    swapped = [lines[0], lines[2], lines[1], *lines[3:]]
    assert audit.verify("h1", swapped, signers, None)[0].startswith("h1: record 2 has seq 3")

    truncated = lines[:3]
    assert audit.verify("h1", truncated, signers, None) == []  # alone, it looks fine...
    assert audit.verify("h1", truncated, signers, {"seq": 5, "line": lines[4]}) == [
        "h1: the trail has 3 records, but this machine appended record 5 to it: the tail was "
        "truncated or replaced"]


def test_a_forged_record_with_a_non_operator_key_is_refused(team, tmp_path):
    env, signers, bob = team
    lines = trail_lines(env, 2)
    record = audit.parse(lines[1])[0]
    forged = audit.make_line({**record, "result": "failed"}, keypair(tmp_path, "mallory"))
    assert audit.verify("h1", [lines[0], forged], signers, None)[0].startswith(
        "h1: record 2 (seq 2): signature does not verify")


def test_records_are_one_line_and_carry_no_tab():
    env = shipped("sandbox")
    t = audit.Trail("deploy", {"only": "core.up"})
    t.add("h1", "core.up", "failed", "exit 1:\tsomething\nelse")
    from fabfile.ops.identity import Operator
    op = Operator("alice", "al", "laptop", 1, Path("/k"), "SHA256:x")
    text = audit.encode(audit.fields(env.name, "h1", op, t, "v1", 1, "0" * 64))
    assert "\t" not in text and "\n" not in text
    assert '"detail":"exit 1:\\tsomething\\nelse"' in text
