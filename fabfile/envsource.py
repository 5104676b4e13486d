"""The env file's values for one run: from the local env file, or from the secrets store
(Secrets Manager or SSM, `secrets:` in environments.yml), checked exactly as env.check checks
the file (missing, empty, unknown, weak keys and server charsets, named by key, never by value).

Values from the store stay in memory: nothing is written on the operator's machine. They are
read once per run (the masker, env.sync and the rotation all use the same ones); a rotation
replaces them with `use` before it syncs.
"""

from __future__ import annotations

from fabfile import envfile
from fabfile.config import Environment
from fabfile.errors import BadInput

_loaded: dict[str, dict[str, str]] = {}


def _key(env: Environment) -> str:
    return f"{env.name}:{env.secrets.kind}:{env.secrets.name or env.env_file}"


def load(env: Environment) -> dict[str, str]:
    """The complete, valid values (BadInput naming every problem by key otherwise)."""
    key = _key(env)
    if key not in _loaded:
        if env.secrets.stored:
            from fabfile.aws import secretstore

            values = secretstore.store(env).read()
            require_complete(values, env.secrets.describe())
        else:
            values = envfile.require_valid(env.env_file)
        _loaded[key] = values
    return dict(_loaded[key])


def peek(env: Environment) -> dict[str, str]:
    """For a dry run, which connects nowhere (AWS included): the local file's values if it
    exists, else none."""
    if env.secrets.stored or not env.env_file.exists():
        return {}
    return envfile.parse(env.env_file)


def require_complete(values: dict[str, str], where: str) -> None:
    found = envfile.value_problems(values)
    if found:
        raise BadInput(f"{where}: " + "; ".join(found))


def use(env: Environment, values: dict[str, str]) -> None:
    """From now on this run uses these values (a rotation, after it staged them)."""
    require_complete(values, "the new values")
    _loaded[_key(env)] = dict(values)


def forget() -> None:
    """Tests: the next load reads the source again."""
    _loaded.clear()
