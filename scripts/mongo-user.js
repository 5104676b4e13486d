// One change to one MongoDB user, for the suite's password rotation (or a person, by hand).
//
// Runs in mongosh inside mongo-primary, through scripts/mongosh-handoff.sh, which hands it the
// files it needs in JAFAR_SECRETS_DIR: `mongo_root_password` (the root user's CURRENT password,
// to log in), `password` (the password the operation sets or tests) and `data_ca_crt` (to
// verify the member's certificate: the data plane speaks TLS only). The rest comes from the
// environment of `docker compose exec -e`:
//   JAFAR_OP     ensure   create the user, or set its password and roles (JAFAR_ROLES, JSON)
//                password change the password only (the root user's own, for example)
//                drop     remove the user (nothing to do when it does not exist)
//                refused  check that `password` no longer logs the user in (a new connection)
//   JAFAR_USER, JAFAR_DB   the user, and the database it is defined in
//   MONGO_ROOT_USERNAME    (the container's own) the root user
// Output: one line `user NAME created|updated|dropped|absent|refused`; on failure exit status 3
// and one line `mongo-user: error: ...` on stderr. Passwords are never printed.
(function () {
  const env = process.env;
  const fs = require('fs');
  function fail(message) {
    process.stderr.write('mongo-user: error: ' + message + '\n');
    quit(3);
  }
  const dir = env.JAFAR_SECRETS_DIR;
  function handed(name) {
    try {
      return fs.readFileSync(dir + '/' + name, 'utf8');
    } catch (e) {
      return fail(name + ' was not handed over');
    }
  }
  const op = env.JAFAR_OP;
  const user = env.JAFAR_USER;
  const dbName = env.JAFAR_DB;
  if (!['ensure', 'password', 'drop', 'refused'].includes(op) || !user || !dbName) {
    fail('JAFAR_OP (ensure, password, drop, refused), JAFAR_USER and JAFAR_DB are required');
  }
  const TLS = 'tls=true&tlsCAFile=' + dir + '/data_ca_crt&serverSelectionTimeoutMS=10000';

  function connect(address, name, password, db) {
    const conn = new Mongo('mongodb://' + address + '/?directConnection=true&' + TLS);
    conn.getDB(db).auth(name, password);
    return conn;
  }

  if (op === 'refused') {
    let conn = null;
    try {
      conn = connect('127.0.0.1:27017', user, handed('password'), dbName);
    } catch (e) {
      print('user ' + user + ' refused');
      return;
    }
    try { conn.close(); } catch (e) { /* closed */ }
    process.stderr.write('mongo-user: error: the old password of ' + user + ' still logs in\n');
    quit(1);
  }

  // The PRIMARY takes user changes (after a failover it is not this container's member).
  let admin;
  try {
    const local = connect('127.0.0.1:27017', env.MONGO_ROOT_USERNAME,
                          handed('mongo_root_password'), 'admin');
    const hello = local.getDB('admin').runCommand({ hello: 1 });
    admin = hello.isWritablePrimary || !hello.primary ? local.getDB('admin')
      : connect(hello.primary, env.MONGO_ROOT_USERNAME, handed('mongo_root_password'),
                'admin').getDB('admin');
  } catch (e) {
    fail('cannot log in as the root user: ' + (e.codeName || e.message));
  }
  const db = admin.getSiblingDB(dbName);
  const info = db.runCommand({ usersInfo: user });
  const exists = info.ok === 1 && info.users.length > 0;

  function run(command, said) {
    const result = db.runCommand(command);
    if (result.ok !== 1) {
      fail(Object.keys(command)[0] + ' ' + user + ' failed: ' + (result.codeName || result.errmsg));
    }
    print('user ' + user + ' ' + said);
  }

  if (op === 'drop') {
    if (!exists) {
      print('user ' + user + ' absent');
      return;
    }
    run({ dropUser: user }, 'dropped');
  } else if (op === 'password') {
    if (!exists) {
      fail('user ' + user + ' does not exist');
    }
    run({ updateUser: user, pwd: handed('password') }, 'updated');
  } else {
    let roles;
    try {
      roles = JSON.parse(env.JAFAR_ROLES || '');
    } catch (e) {
      fail('JAFAR_ROLES must be a JSON list of roles');
    }
    const command = exists ? { updateUser: user, pwd: handed('password'), roles: roles }
      : { createUser: user, pwd: handed('password'), roles: roles };
    run(command, exists ? 'updated' : 'created');
  }
})();
