// jafar MongoDB users: create them, or bring them up to date. Idempotent, safe to re-run.
//
// Normally run by scripts/init-replica.sh, which streams this file to the real mongosh inside
// the mongo-primary container after the replica set step, with `jafarAdminDb` set to the admin
// database of the PRIMARY, authenticated as root. To run it alone, connect mongosh to the PRIMARY
// as root (let mongosh prompt for the password: never put it on the command line) and
// `load('scripts/init-mongo.js')`; it then works on `db.getSiblingDB('admin')`.
//
// Users (both are defined in MONGO_APP_DB, so clients authenticate with authSource=MONGO_APP_DB,
// which is the drivers' default when the URI names that database):
//   MONGO_APP_USER     readWrite on MONGO_APP_DB: the jafar services.
//   MONGO_LEDGER_USER  read on MONGO_APP_DB only (least privilege): the ledger service reads
//                      wallets/transactions to reconcile; its own books are in PostgreSQL.
//   MONGO_BACKUP_USER  MongoDB's `backup` role (on admin): scripts/backup.sh's mongodump reads
//                      every collection with it and can write nothing.
// An existing user whose roles differ, or whose password no longer logs in (checked with a
// separate, short-lived connection), gets both reset with updateUser (rotation = change the
// secret, env.sync, run this again); otherwise nothing is written, so a second run changes
// nothing.
//
// Names come from the container's environment (process.env); the passwords from the secret
// files Compose mounts under /run/secrets (never from an environment variable, never printed).
// Output: one line per user: `user NAME created`, `user NAME updated` or `user NAME unchanged`.
(function () {
  const env = process.env;
  const fail = (typeof jafarRs !== 'undefined' && jafarRs.fail) || function (message) {
    process.stderr.write('init-mongo: error: ' + message + '\n');
    quit(3);
  };

  function required(name) {
    const value = env[name];
    if (!value) {
      fail(name + ' is not set in the mongo-primary container (.env.ec2)');
    }
    return value;
  }

  const secretsDir = (typeof jafarRs !== 'undefined' && jafarRs.secretsDir) || '/run/secrets';
  // The data plane speaks TLS only (mongod --tlsMode requireTLS): verify it with the data CA.
  const TLS_OPTIONS = 'tls=true&tlsCAFile=' + secretsDir + '/data_ca_crt';
  function secret(name) {
    let value = '';
    try {
      value = require('fs').readFileSync(secretsDir + '/' + name, 'utf8').replace(/\n+$/, '');
    } catch (e) {
      fail(secretsDir + '/' + name + ' cannot be read in mongo-primary (run env.sync)');
    }
    if (!value) {
      fail(secretsDir + '/' + name + ' is empty (run env.sync)');
    }
    return value;
  }

  const appDbName = required('MONGO_APP_DB');
  const users = [
    {
      user: required('MONGO_APP_USER'),
      pwd: secret('mongo_app_password'),
      roles: [{ role: 'readWrite', db: appDbName }],
    },
    {
      user: required('MONGO_LEDGER_USER'),
      pwd: secret('mongo_ledger_password'),
      roles: [{ role: 'read', db: appDbName }],
    },
    {
      user: required('MONGO_BACKUP_USER'),
      pwd: secret('mongo_backup_password'),
      roles: [{ role: 'backup', db: 'admin' }],
    },
  ];
  if (new Set(users.map((u) => u.user)).size !== users.length) {
    fail('MONGO_APP_USER, MONGO_LEDGER_USER and MONGO_BACKUP_USER must be different users');
  }

  const admin = (typeof jafarAdminDb !== 'undefined' && jafarAdminDb) || db.getSiblingDB('admin');
  const appDb = admin.getSiblingDB(appDbName);

  // Where to test a user's current password: the PRIMARY (init-replica.sh knows it; alone,
  // the member this shell is connected to).
  function memberAddress() {
    if (typeof jafarRs !== 'undefined' && jafarRs.primaryHost) {
      return jafarRs.primaryHost;
    }
    try {
      return admin.runCommand({ hello: 1 }).me || null;
    } catch (e) {
      return null;
    }
  }

  // True when USER can log in with PWD: a separate connection, closed at once.
  function passwordWorks(spec) {
    const address = memberAddress();
    if (!address) {
      return false;
    }
    let conn = null;
    try {
      conn = new Mongo('mongodb://' + address + '/?directConnection=true&' + TLS_OPTIONS +
                       '&serverSelectionTimeoutMS=5000');
      conn.getDB(appDbName).auth(spec.user, spec.pwd);
      return true;
    } catch (e) {
      return false;
    } finally {
      if (conn) {
        try { conn.close(); } catch (e) { /* already closed */ }
      }
    }
  }

  function roleKey(roles) {
    return (roles || []).map((r) => r.db + '.' + r.role).sort().join(',');
  }

  for (const spec of users) {
    let info;
    try {
      info = appDb.runCommand({ usersInfo: spec.user });
    } catch (e) {
      info = { ok: 0, errmsg: e.message };
    }
    if (!info || info.ok !== 1) {
      fail('cannot read user ' + spec.user + ': ' + ((info && info.errmsg) || 'no answer'));
    }
    const existing = (info.users && info.users.length > 0) ? info.users[0] : null;
    if (existing && roleKey(existing.roles) === roleKey(spec.roles) && passwordWorks(spec)) {
      print('user ' + spec.user + ' unchanged');
      continue;
    }
    // The error messages of these commands never contain the password.
    const command = existing
      ? { updateUser: spec.user, pwd: spec.pwd, roles: spec.roles }
      : { createUser: spec.user, pwd: spec.pwd, roles: spec.roles };
    let result;
    try {
      result = appDb.runCommand(command);
    } catch (e) {
      result = { ok: 0, errmsg: e.message };
    }
    if (!result || result.ok !== 1) {
      fail((existing ? 'updateUser ' : 'createUser ') + spec.user + ' failed: ' +
           ((result && result.errmsg) || 'no answer'));
    }
    print('user ' + spec.user + (existing ? ' updated' : ' created'));
  }
})();
