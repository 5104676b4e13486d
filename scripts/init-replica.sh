#!/usr/bin/env bash
# Initiate the MongoDB replica set rs0 (once) and create/update the application users.
#
# Run on the data host, from the deploy path (the suite's `replica.init` step runs exactly this):
#     ./scripts/init-replica.sh [--project NAME] [--timeout SECONDS]
#
#   --project NAME     compose project of the data stack (default: jafar-data)
#   --timeout SECONDS  how long to wait for mongod and for a PRIMARY (default: 120)
#
# Replica set members, in the order primary, secondary, arbiter, as the clients reach them:
#   1. MONGO_RS_MEMBERS from this script's environment, else
#   2. MONGO_HOSTS from .env.ec2 (what the services use to connect: one source of truth), else
#   3. mongo-primary:27017,mongo-secondary:27018,mongo-arbiter:27019 (single topology).
#
# How it works: the real mongosh runs INSIDE the mongo-primary container
# (`docker compose exec -T mongo-primary mongosh --nodb --file /dev/stdin`), and this script
# streams the JavaScript to it on stdin: the replica set step below, then scripts/init-mongo.js
# (users), then the final status line. Nothing has to be copied or mounted into the container,
# and the JavaScript the host has is the JavaScript that runs.
#
# The users' names (MONGO_APP_USER, MONGO_LEDGER_USER, MONGO_BACKUP_USER) come from .env.ec2 and their passwords
# from the host's secret files (secrets/, written by env.sync), handed to the container at each
# run: first on the same stdin (one `NAME BASE64` line per file), written by the container's
# shell into a private folder on its /tmp (a tmpfs), removed when mongosh ends. Not from the
# container's own /run/secrets: a Compose secret is a bind mount of the file as it was when the
# container started, and env.sync replaces files, so after a rotation that copy is stale (and
# the container is not recreated: its configuration names no user and no password). No secret
# is on any command line, in an environment variable, in this script, or in its output.
# On a fresh replica set the root user is created here, through mongod's localhost exception,
# after rs0 has a PRIMARY (the mongo image is given no root user: its entrypoint would put the
# password on jq's command line).
#
# Idempotent: when rs0 is already initiated it is left alone and only the users are brought up to
# date. The last line of the output is exactly one of:
#     replica set rs0 initiated
#     replica set rs0 already initiated
# On failure: exit status 1 with one line `init-replica: error: ...` on stderr; bad arguments:
# exit status 2.
# Needs: bash, coreutils `timeout`, Docker with the compose plugin (v2).
set -euo pipefail

readonly DEFAULT_MEMBERS="mongo-primary:27017,mongo-secondary:27018,mongo-arbiter:27019"
readonly COMPOSE_FILE="compose/docker-compose.data.yml"
readonly ENV_FILE=".env.ec2"
readonly USERS_JS="scripts/init-mongo.js"
readonly HANDOFF_SH="scripts/mongosh-handoff.sh"
readonly SECRETS_DIR="secrets"
readonly HANDED=(mongo_root_password mongo_app_password mongo_ledger_password mongo_backup_password
    data_ca_crt)

project="jafar-data"
timeout_s=120

die() {
    echo "init-replica: error: $*" >&2
    exit 1
}

usage_error() {
    echo "init-replica: $* (usage: ./scripts/init-replica.sh [--project NAME] [--timeout SECONDS])" >&2
    exit 2
}

while [ "$#" -gt 0 ]; do
    case "$1" in
        --project)
            [ "$#" -ge 2 ] || usage_error "--project needs a value"
            project="$2"
            shift 2
            ;;
        --project=*)
            project="${1#*=}"
            shift
            ;;
        --timeout)
            [ "$#" -ge 2 ] || usage_error "--timeout needs a value"
            timeout_s="$2"
            shift 2
            ;;
        --timeout=*)
            timeout_s="${1#*=}"
            shift
            ;;
        -h | --help)
            sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"
            exit 0
            ;;
        *)
            usage_error "unknown argument: $1"
            ;;
    esac
done

[[ "$project" =~ ^[a-z0-9][a-z0-9_-]*$ ]] \
    || usage_error "--project must be a compose project name (lowercase letters, digits, - and _)"
[[ "$timeout_s" =~ ^[1-9][0-9]{0,4}$ ]] \
    || usage_error "--timeout must be a whole number of seconds between 1 and 99999"

# Run from the deploy path, as documented.
[ -f "$COMPOSE_FILE" ] \
    || die "$COMPOSE_FILE not found: run this from the deploy path (e.g. cd /opt/jafar)"
[ -f "$ENV_FILE" ] || die "$ENV_FILE not found in $(pwd): run env.sync first"
[ -f "$USERS_JS" ] || die "$USERS_JS not found in $(pwd)"
[ -f "$HANDOFF_SH" ] || die "$HANDOFF_SH not found in $(pwd)"
for name in "${HANDED[@]}"; do
    [ -r "$SECRETS_DIR/$name" ] || die "$SECRETS_DIR/$name cannot be read in $(pwd) (run env.sync)"
done

# MONGO_HOSTS from .env.ec2, read as data (the file is never sourced: it holds secrets and a
# value could be shell code). Surrounding quotes are removed.
env_file_value() {
    local key="$1" line value=""
    while IFS= read -r line || [ -n "$line" ]; do
        case "$line" in
            "$key="*) value="${line#*=}" ;;
        esac
    done <"$ENV_FILE"
    value="${value%\"}"
    value="${value#\"}"
    value="${value%\'}"
    value="${value#\'}"
    printf '%s' "$value"
}

if [ -n "${MONGO_RS_MEMBERS:-}" ]; then
    members="$MONGO_RS_MEMBERS"
    members_source="MONGO_RS_MEMBERS"
else
    members="$(env_file_value MONGO_HOSTS)"
    members_source="MONGO_HOSTS in $ENV_FILE"
    if [ -z "$members" ]; then
        members="$DEFAULT_MEMBERS"
        members_source="default"
    fi
fi
member_re='[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?:[0-9]{1,5}'
[[ "$members" =~ ^${member_re},${member_re},${member_re}$ ]] \
    || die "replica set members ($members_source) must be three host:port entries, comma separated, in the order primary,secondary,arbiter"

compose=(docker compose -p "$project" --env-file "$ENV_FILE" -f "$COMPOSE_FILE")

# The container must be running (data.up starts the stack and waits until it is healthy).
errors="$(mktemp)"
trap 'rm -f "$errors"' EXIT
if ! running="$("${compose[@]}" ps --status running --quiet mongo-primary 2>"$errors")"; then
    die "docker compose cannot read project $project: $(tail -n 1 "$errors")"
fi
[ -n "$running" ] \
    || die "mongo-primary is not running in compose project $project (run data.up first)"

app_user="$(env_file_value MONGO_APP_USER)"
ledger_user="$(env_file_value MONGO_LEDGER_USER)"
backup_user="$(env_file_value MONGO_BACKUP_USER)"
if [ -z "$app_user" ] || [ -z "$ledger_user" ] || [ -z "$backup_user" ]; then
    die "MONGO_APP_USER, MONGO_LEDGER_USER and MONGO_BACKUP_USER must be set in $ENV_FILE (run env.sync)"
fi

echo "replica set rs0: members $members ($members_source), timeout ${timeout_s}s"

# The JavaScript streamed to mongosh. Quoted here-documents: the shell expands nothing in them.
IFS= read -r -d '' replica_js <<'JS' || true
// --- scripts/init-replica.sh: replica set step (runs inside mongo-primary) ---
const jafarRs = (function () {
  const rsName = 'rs0';
  const env = process.env;
  const timeoutSeconds = Number(env.JAFAR_RS_TIMEOUT || '120');
  const deadline = Date.now() + timeoutSeconds * 1000;
  const members = String(env.JAFAR_RS_MEMBERS || '').split(',');
  const local = env.JAFAR_RS_LOCAL || '127.0.0.1:27017';

  // Exit status 3: the error line is written here (stderr), the shell adds nothing.
  function fail(message) {
    process.stderr.write('init-replica: error: ' + message + '\n');
    quit(3);
  }

  // The root user's name from the environment, its password from the secret file (never an
  // environment variable or an argument: the mongo image's own root-user creation would pass
  // it to `jq --arg`, visible in ps; this script creates the user instead, see below).
  const secretsDir = env.JAFAR_SECRETS_DIR || '/run/secrets';  // the handed files
  // The data plane speaks TLS only (mongod --tlsMode requireTLS): verify it with the data CA.
  const TLS_OPTIONS = 'tls=true&tlsCAFile=' + secretsDir + '/data_ca_crt';
  const rootUser = env.MONGO_ROOT_USERNAME;
  let rootPassword = '';
  try {
    rootPassword = require('fs').readFileSync(secretsDir + '/mongo_root_password', 'utf8')
      .replace(/\n+$/, '');
  } catch (e) {
    fail(secretsDir + '/mongo_root_password cannot be read (run env.sync)');
  }
  if (!rootUser || !rootPassword) {
    fail('MONGO_ROOT_USERNAME or ' + secretsDir + '/mongo_root_password is empty in ' +
         'mongo-primary');
  }
  if (members.length !== 3) {
    fail('expected three replica set members, got ' + members.length);
  }

  function isAuthError(e) {
    return e && (e.code === 18 || e.codeName === 'AuthenticationFailed');
  }

  // A connection to one member, authenticated as root; retried until the deadline. Before the
  // first user exists, mongod's localhost exception lets this (local) shell in without one:
  // `noUser` then says so, and the root user is created below, on the PRIMARY.
  function connectAdmin(host, allowNoUser) {
    let last = 'no attempt';
    for (;;) {
      try {
        const conn = new Mongo('mongodb://' + host + '/?directConnection=true&' + TLS_OPTIONS +
                               '&serverSelectionTimeoutMS=5000');
        const admin = conn.getDB('admin');
        try {
          admin.auth(rootUser, rootPassword);
          return { admin: admin, noUser: false };
        } catch (e) {
          if (!isAuthError(e)) {
            throw e;
          }
          if (allowNoUser && noUsersYet(admin)) {
            return { admin: admin, noUser: true };
          }
          fail('authentication as the root user failed on ' + host);
        }
      } catch (e) {
        last = e.message;
      }
      if (Date.now() > deadline) {
        fail('cannot reach mongod at ' + host + ' within ' + timeoutSeconds + 's: ' + last);
      }
      sleep(1000);
    }
  }

  // Without credentials, mongod answers replSetGetStatus (or says rs0 is not yet initiated)
  // only under the localhost exception, that is while there is no user at all; once a user
  // exists it answers Unauthorized (13).
  function noUsersYet(admin) {
    try {
      const status = admin.runCommand({ replSetGetStatus: 1 });
      return status.ok === 1 || status.code === 94;
    } catch (e) {
      return e.code === 94 || e.codeName === 'NotYetInitialized';
    }
  }

  const localConn = connectAdmin(local, true);
  const localAdmin = localConn.admin;

  let initiated = false;
  let status = null;
  try {
    status = localAdmin.runCommand({ replSetGetStatus: 1 });
  } catch (e) {
    if (!(e.code === 94 || e.codeName === 'NotYetInitialized')) {
      fail('replSetGetStatus failed: ' + e.message);
    }
  }
  if (status && status.ok !== 1) {
    if (status.code === 94 || status.codeName === 'NotYetInitialized') {
      status = null;
    } else {
      fail('replSetGetStatus failed: ' + (status.errmsg || 'unknown error'));
    }
  }

  if (status === null) {
    const config = {
      _id: rsName,
      members: [
        { _id: 0, host: members[0], priority: 2 },
        { _id: 1, host: members[1], priority: 1 },
        { _id: 2, host: members[2], arbiterOnly: true },
      ],
    };
    print('replica set rs0: initiating');
    let result;
    try {
      result = localAdmin.runCommand({ replSetInitiate: config });
    } catch (e) {
      result = { ok: 0, code: e.code, codeName: e.codeName, errmsg: e.message };
    }
    if (result.ok === 1) {
      initiated = true;
    } else if (result.code === 23 || result.codeName === 'AlreadyInitialized') {
      print('replica set rs0: initiated concurrently by someone else');
    } else {
      fail('replSetInitiate failed: ' + (result.errmsg || result.codeName || 'unknown error'));
    }
  } else {
    print('replica set rs0: already initiated, checking users');
  }

  // Wait for a PRIMARY (bounded by the deadline).
  let primary = null;
  let last = 'no PRIMARY elected yet';
  for (;;) {
    try {
      const hello = localAdmin.runCommand({ hello: 1 });
      if (hello.setName && hello.setName !== rsName) {
        fail('this mongod belongs to replica set ' + hello.setName + ', not ' + rsName);
      }
      if (hello.primary) {
        primary = { host: hello.primary, isLocal: hello.isWritablePrimary === true };
        break;
      }
    } catch (e) {
      last = e.message;
    }
    if (Date.now() > deadline) {
      fail('no PRIMARY in replica set rs0 within ' + timeoutSeconds + 's (' + last + ')');
    }
    sleep(1000);
  }
  print('replica set rs0: PRIMARY is ' + primary.host);

  // The first user, through the localhost exception (on the PRIMARY: this container's mongod
  // after a fresh initiate); the password reaches mongod in the createUser command only.
  if (localConn.noUser) {
    if (!primary.isLocal) {
      fail('no user exists yet and this member is not the PRIMARY (' + primary.host + ')');
    }
    const created = localAdmin.runCommand({ createUser: rootUser, pwd: rootPassword,
                                            roles: [{ role: 'root', db: 'admin' }] });
    if (created.ok !== 1) {
      fail('creating the root user failed: ' + (created.errmsg || created.codeName));
    }
    print('user ' + rootUser + ' created');
    localAdmin.auth(rootUser, rootPassword);
  }

  // Users are written on the PRIMARY (after a failover it is not this container).
  const admin = primary.isLocal ? localAdmin : connectAdmin(primary.host, false).admin;
  return { admin: admin, primaryHost: primary.host, initiated: initiated, fail: fail,
           secretsDir: secretsDir };
})();
// The users step (scripts/init-mongo.js) works on this authenticated admin database.
const jafarAdminDb = jafarRs.admin;
JS

IFS= read -r -d '' final_js <<'JS' || true
// --- scripts/init-replica.sh: final status line (read by the suite) ---
print(jafarRs.initiated ? 'replica set rs0 initiated' : 'replica set rs0 already initiated');
JS

# In the container: scripts/mongosh-handoff.sh writes the handed files into a private folder of
# its tmpfs, runs mongosh on the rest of stdin, and removes the folder.
container_sh="$(cat "$HANDOFF_SH")"
readonly container_sh

# The whole run is bounded: mongosh's own waits use --timeout, `timeout` is the last resort.
set +e
{
    for name in "${HANDED[@]}"; do
        printf '%s %s\n' "$name" "$(base64 -w0 <"$SECRETS_DIR/$name")"
    done
    printf -- '--\n'
    printf '%s\n' "$replica_js"
    cat "$USERS_JS"
    printf '\n%s\n' "$final_js"
} | timeout --kill-after=10 "$((timeout_s + 60))" \
    "${compose[@]}" exec -T \
    -e JAFAR_RS_MEMBERS="$members" \
    -e JAFAR_RS_TIMEOUT="$timeout_s" \
    -e MONGO_APP_USER="$app_user" \
    -e MONGO_LEDGER_USER="$ledger_user" \
    -e MONGO_BACKUP_USER="$backup_user" \
    -e HOME=/tmp \
    mongo-primary sh -c "$container_sh" init-replica
rc=$?
set -e

case "$rc" in
    0) exit 0 ;;
    3) exit 1 ;; # the JavaScript printed its `init-replica: error: ...` line
    124 | 137) die "gave up after $((timeout_s + 60))s (mongosh did not finish)" ;;
    *) die "mongosh in mongo-primary failed (exit status $rc; see the line above)" ;;
esac
