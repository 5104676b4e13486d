// The replica set's members, for the suite's rolling restarts (a key file rotation), or a
// person, by hand.
//
// Runs in mongosh inside mongo-primary, through scripts/mongosh-handoff.sh, which hands it
// `mongo_root_password` (the root user's current password) and `data_ca_crt` in
// JAFAR_SECRETS_DIR. JAFAR_OP (environment of `docker compose exec -e`):
//   primary   print `primary HOST:PORT` (the member that is PRIMARY now)
//   stepdown  ask the PRIMARY to step down, then wait (JAFAR_TIMEOUT seconds, default 120)
//             until another member is PRIMARY; print `primary HOST:PORT` (the new one)
//   healthy   wait (JAFAR_TIMEOUT) until every member is PRIMARY, SECONDARY or ARBITER and
//             healthy; print `healthy N members`
// On failure: exit status 3 and one line `mongo-member: error: ...` on stderr.
(function () {
  const env = process.env;
  const fs = require('fs');
  function fail(message) {
    process.stderr.write('mongo-member: error: ' + message + '\n');
    quit(3);
  }
  const dir = env.JAFAR_SECRETS_DIR;
  const TLS = 'tls=true&tlsCAFile=' + dir + '/data_ca_crt&serverSelectionTimeoutMS=10000';
  const deadline = Date.now() + Number(env.JAFAR_TIMEOUT || '120') * 1000;
  let password;
  try {
    password = fs.readFileSync(dir + '/mongo_root_password', 'utf8');
  } catch (e) {
    fail('mongo_root_password was not handed over');
  }

  function admin(address) {
    const conn = new Mongo('mongodb://' + address + '/?directConnection=true&' + TLS);
    const db = conn.getDB('admin');
    db.auth(env.MONGO_ROOT_USERNAME, password);
    return db;
  }

  // The member this container runs answers even while there is no PRIMARY.
  function status() {
    for (;;) {
      try {
        return admin('127.0.0.1:27017').runCommand({ replSetGetStatus: 1 });
      } catch (e) {
        if (Date.now() > deadline) {
          fail('no answer from the local member: ' + (e.codeName || e.message));
        }
        sleep(1000);
      }
    }
  }

  function primary(other) {
    for (;;) {
      const found = (status().members || []).find((m) => m.stateStr === 'PRIMARY');
      if (found && found.name !== other) {
        return found.name;
      }
      if (Date.now() > deadline) {
        fail(other ? 'no other member became PRIMARY after ' + other + ' stepped down'
          : 'the replica set has no PRIMARY');
      }
      sleep(1000);
    }
  }

  const op = env.JAFAR_OP;
  if (op === 'primary') {
    print('primary ' + primary(null));
  } else if (op === 'stepdown') {
    const old = primary(null);
    let answer = null;
    try {
      answer = admin(old).runCommand({ replSetStepDown: 60, secondaryCatchUpPeriodSecs: 10 });
    } catch (e) {
      // the PRIMARY closes its connections as it steps down: the answer may never come
    }
    if (answer && answer.ok !== 1) {
      fail('replSetStepDown on ' + old + ' failed: ' + (answer.codeName || answer.errmsg));
    }
    print('primary ' + primary(old));
  } else if (op === 'healthy') {
    const good = ['PRIMARY', 'SECONDARY', 'ARBITER'];
    for (;;) {
      const members = status().members || [];
      if (members.length && members.every((m) => good.includes(m.stateStr) && m.health === 1)) {
        print('healthy ' + members.length + ' members');
        return;
      }
      if (Date.now() > deadline) {
        fail('not every member is healthy: ' +
             members.map((m) => m.name + ' ' + m.stateStr).join(', '));
      }
      sleep(1000);
    }
  } else {
    fail('JAFAR_OP must be primary, stepdown or healthy');
  }
})();
