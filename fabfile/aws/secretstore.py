"""The env file's values in AWS: one Secrets Manager secret holding a JSON object of strings
(`secrets: {manager: jafar/prod}`), or SSM Parameter Store SecureStrings under a path
(`secrets: {ssm: /jafar/prod/}`, one parameter per key: /jafar/prod/REDIS_PASSWORD).

A change goes in two moves, so that a rotation never loses a value: `stage` keeps the new
values in the store without making them current (Secrets Manager: the version labelled
AWSPENDING, AWS's own rotation protocol; SSM has no such label: the new values stay in memory
until `commit`), `commit` makes them current (Secrets Manager moves AWSCURRENT, and the version
before becomes AWSPREVIOUS; SSM writes a new version of each changed parameter), `restore`
undoes a commit, `discard` drops what was staged. Values never appear in an error.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from fabfile.aws.client import answered, client
from fabfile.config import Environment
from fabfile.envfile import KEY
from fabfile.errors import BadInput

CURRENT, PENDING, PREVIOUS = "AWSCURRENT", "AWSPENDING", "AWSPREVIOUS"
HISTORY = 100  # versions read to date each key's last change (Secrets Manager keeps ~100)


@dataclass
class Staged:
    """New values kept in the store (or in memory, for SSM) before they are made current."""

    before: dict[str, str]
    after: dict[str, str]
    version: str | None = None       # Secrets Manager: the AWSPENDING version id
    committed: bool = False

    def changed(self) -> list[str]:
        return sorted(k for k in set(self.before) | set(self.after)
                      if self.before.get(k) != self.after.get(k))


@dataclass(frozen=True)
class Version:
    """One version of the values, with when it was made."""

    created: datetime
    values: dict[str, str] = field(repr=False)


def strings(doc: Any, where: str) -> dict[str, str]:
    """A JSON object of KEY: "string" pairs, or BadInput naming the first bad key (no value)."""
    if not isinstance(doc, dict):
        raise BadInput(f"{where} is not a JSON object of KEY: \"value\" pairs; store the env "
                       "file's values as one object (inv secrets.push writes it)")
    for key, value in doc.items():
        if not isinstance(key, str) or not KEY.fullmatch(key):
            raise BadInput(f"{where}: a key is not an env file key (letters, digits and '_'); "
                           "fix the secret")
        if not isinstance(value, str):
            raise BadInput(f"{where}: {key} is not a string; store every value as a string")
    return dict(doc)


class SecretsManager:
    """One secret, its SecretString a JSON object of the env file's keys."""

    def __init__(self, env: Environment) -> None:
        self.env = env
        self.name = str(env.secrets.name)
        self.what = f"Secrets Manager secret {self.name}"
        self.api = client(env, "secretsmanager")

    def _value(self, **version: str) -> dict[str, str]:
        return self._version(**version).values

    def _version(self, **version: str) -> Version:
        with answered(self.env, f"reading {self.what}"):
            answer = self.api.get_secret_value(SecretId=self.name, **version)
        if "SecretString" not in answer:
            raise BadInput(f"{self.what} holds binary data; store the values as a JSON object")
        try:
            doc = json.loads(answer["SecretString"])
        except ValueError:
            raise BadInput(f"{self.what} is not valid JSON; store the values as one JSON "
                           "object (inv secrets.push writes it)") from None
        return Version(answer["CreatedDate"], strings(doc, self.what))

    def read(self) -> dict[str, str]:
        # the stage named (AWS's default anyway): moto answers the last version put otherwise
        return self._value(VersionStage=CURRENT)

    def exists(self) -> bool:
        try:
            with answered(self.env, f"reading {self.what}"):
                self.api.describe_secret(SecretId=self.name)
        except BadInput:  # AWS says there is no such secret
            return False
        return True

    def create(self, values: dict[str, str]) -> None:
        with answered(self.env, f"creating {self.what}"):
            self.api.create_secret(Name=self.name, ClientRequestToken=str(uuid.uuid4()),
                                   SecretString=json.dumps(values, sort_keys=True))

    def stage(self, values: dict[str, str]) -> Staged:
        before = self.read()
        with answered(self.env, f"staging a new version of {self.what}"):
            answer = self.api.put_secret_value(
                SecretId=self.name, ClientRequestToken=str(uuid.uuid4()),
                SecretString=json.dumps(values, sort_keys=True), VersionStages=[PENDING])
        return Staged(before, dict(values), version=answer["VersionId"])

    def _current_version(self) -> str:
        with answered(self.env, f"reading the versions of {self.what}"):
            versions = self.api.describe_secret(SecretId=self.name)["VersionIdsToStages"]
        return next(v for v, stages in versions.items() if CURRENT in stages)

    def commit(self, staged: Staged) -> None:
        """AWSCURRENT to the staged version (the one before becomes AWSPREVIOUS)."""
        current = self._current_version()
        with answered(self.env, f"making the new version of {self.what} current"):
            self.api.update_secret_version_stage(SecretId=self.name, VersionStage=CURRENT,
                                                 MoveToVersionId=staged.version,
                                                 RemoveFromVersionId=current)
            self.api.update_secret_version_stage(SecretId=self.name, VersionStage=PENDING,
                                                 RemoveFromVersionId=staged.version)
        staged.committed = True

    def discard(self, staged: Staged) -> None:
        with answered(self.env, f"dropping the staged version of {self.what}"):
            self.api.update_secret_version_stage(SecretId=self.name, VersionStage=PENDING,
                                                 RemoveFromVersionId=staged.version)

    def restore(self, staged: Staged) -> None:
        """After a commit: the version before is current again."""
        with answered(self.env, f"restoring the previous version of {self.what}"):
            versions = self.api.describe_secret(SecretId=self.name)["VersionIdsToStages"]
            previous = next(v for v, stages in versions.items() if PREVIOUS in stages)
            self.api.update_secret_version_stage(SecretId=self.name, VersionStage=CURRENT,
                                                 MoveToVersionId=previous,
                                                 RemoveFromVersionId=staged.version)
        staged.committed = False

    def discard_pending(self) -> None:
        """Drop a staged version a rotation left behind (it was never made current)."""
        with answered(self.env, f"reading the versions of {self.what}"):
            versions = self.api.describe_secret(SecretId=self.name)["VersionIdsToStages"]
        for version, stages in versions.items():
            if PENDING in stages and CURRENT not in stages:
                self.discard(Staged({}, {}, version=version))

    def pending(self) -> bool:
        """A staged version left by a rotation that did not finish."""
        with answered(self.env, f"reading the versions of {self.what}"):
            versions = self.api.describe_secret(SecretId=self.name)["VersionIdsToStages"]
        return any(PENDING in stages and CURRENT not in stages
                   for stages in versions.values())

    def previous(self) -> dict[str, str] | None:
        with answered(self.env, f"reading the versions of {self.what}"):
            versions = self.api.describe_secret(SecretId=self.name)["VersionIdsToStages"]
        if not any(PREVIOUS in stages for stages in versions.values()):
            return None
        return self._value(VersionStage=PREVIOUS)

    def history(self) -> list[Version]:
        """The versions that were current once, newest first (at most HISTORY)."""
        listed: list[dict[str, Any]] = []
        token: dict[str, str] = {}
        with answered(self.env, f"listing the versions of {self.what}"):
            while True:  # boto3 has no paginator for this call
                page = self.api.list_secret_version_ids(SecretId=self.name,
                                                        IncludeDeprecated=True, **token)
                listed += page["Versions"]
                if not page.get("NextToken"):
                    break
                token = {"NextToken": page["NextToken"]}
        kept = sorted((v for v in listed if set(v.get("VersionStages") or []) != {PENDING}),
                      key=lambda v: v["CreatedDate"], reverse=True)
        # each version's date as get_secret_value gives it (moto's listing dates them all
        # now); newest first, the current version first of all (dates may tie to the second)
        found = [(CURRENT in (v.get("VersionStages") or []),
                  self._version(VersionId=v["VersionId"])) for v in kept[:HISTORY]]
        found.sort(key=lambda f: (f[0], f[1].created), reverse=True)
        return [version for _, version in found]


class ParameterStore:
    """SecureString parameters under one path, one per key."""

    def __init__(self, env: Environment) -> None:
        self.env = env
        self.path = str(env.secrets.name)
        self.what = f"SSM parameters under {self.path}"
        self.api = client(env, "ssm")

    def _parameters(self) -> list[dict[str, Any]]:
        with answered(self.env, f"reading {self.what}"):
            pages = self.api.get_paginator("get_parameters_by_path").paginate(
                Path=self.path.rstrip("/"), Recursive=False, WithDecryption=True)
            found = [p for page in pages for p in page["Parameters"]]
        if not found:
            raise BadInput(f"{self.what}: there is no parameter; check secrets.ssm in "
                           "config/environments.yml, or fill the path with inv secrets.push")
        return found

    def exists(self) -> bool:
        try:
            self._parameters()
        except BadInput:
            return False
        return True

    def create(self, values: dict[str, str]) -> None:
        self._write(values, sorted(values))

    def read(self) -> dict[str, str]:
        values = {}
        for parameter in self._parameters():
            key = parameter["Name"][len(self.path):]
            if parameter.get("Type") != "SecureString":
                raise BadInput(f"{self.what}: {key} is a {parameter.get('Type')}, not a "
                               "SecureString; store secrets encrypted")
            values[key] = parameter["Value"]
        return strings(values, self.what)

    def stage(self, values: dict[str, str]) -> Staged:
        return Staged(self.read(), dict(values))

    def _write(self, values: dict[str, str], keys: list[str]) -> None:
        for key in keys:
            with answered(self.env, f"writing {self.path}{key}"):
                if key in values:
                    self.api.put_parameter(Name=self.path + key, Value=values[key],
                                           Type="SecureString", Overwrite=True)
                else:
                    self.api.delete_parameter(Name=self.path + key)

    def commit(self, staged: Staged) -> None:
        self._write(staged.after, staged.changed())
        staged.committed = True

    def discard(self, staged: Staged) -> None:
        """Nothing was written before commit."""

    def restore(self, staged: Staged) -> None:
        self._write(staged.before, staged.changed())
        staged.committed = False

    def pending(self) -> bool:
        return False

    def discard_pending(self) -> None:
        """SSM stages nothing in the store."""

    def previous(self) -> dict[str, str] | None:
        """Each key's version before its newest (SSM keeps the history per parameter)."""
        found = {}
        for key, versions in self._histories().items():
            found[key] = versions[1][1] if len(versions) > 1 else versions[0][1]
        return found

    def _histories(self) -> dict[str, list[tuple[datetime, str]]]:
        """key -> its versions (modified, value), newest first."""
        histories = {}
        for parameter in self._parameters():
            key = parameter["Name"][len(self.path):]
            with answered(self.env, f"reading the history of {self.path}{key}"):
                pages = self.api.get_paginator("get_parameter_history").paginate(
                    Name=parameter["Name"], WithDecryption=True)
                versions = [(v["LastModifiedDate"], v["Value"]) for page in pages
                            for v in page["Parameters"]]
            histories[key] = sorted(versions, key=lambda v: v[0], reverse=True)
        return histories

    def history(self) -> list[Version]:
        """The values as they were after each change, newest first."""
        histories = self._histories()
        moments = sorted({when for versions in histories.values() for when, _ in versions},
                         reverse=True)[:HISTORY]
        return [Version(when, {key: next(v for w, v in versions if w <= when)
                               for key, versions in histories.items()
                               if any(w <= when for w, _ in versions)})
                for when in moments]


Store = SecretsManager | ParameterStore


def store(env: Environment) -> Store:
    if env.secrets.kind == "manager":
        return SecretsManager(env)
    if env.secrets.kind == "ssm":
        return ParameterStore(env)
    raise BadInput(f"environment {env.name} keeps its values in the local env file "
                   f"{env.env_file}; set secrets: {{manager: NAME}} or {{ssm: /PATH/}} to use "
                   "AWS")


def last_changed(versions: list[Version]) -> dict[str, tuple[datetime, bool]]:
    """key -> (when its current value first appeared, whether the history reached back far
    enough to be sure). `versions` newest first."""
    if not versions:
        return {}
    current = versions[0].values
    found: dict[str, tuple[datetime, bool]] = {}
    for key, value in current.items():
        since = versions[0].created
        exact = False
        for version in versions:
            if version.values.get(key) != value:
                exact = True
                break
            since = version.created
        else:
            exact = len(versions) < HISTORY  # the whole history: it was there from the start
        found[key] = (since, exact)
    return found
