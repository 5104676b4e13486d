// Test double for the MongoDB SERVER only, used by test_static_init_replica.py: the real
// mongosh runs the real scripts; this file, streamed first, replaces the global `Mongo` with an
// in-memory replica set member kept in a JSON file (FAKE_MONGO_STATE), so that runs can be
// repeated. Errors mimic the server's codes (18 AuthenticationFailed, 13 Unauthorized,
// 94 NotYetInitialized, 23 AlreadyInitialized) and are thrown, as mongosh throws on ok: 0.
/* eslint-disable */
const fakeFs = require('fs');
const fakeStatePath = process.env.FAKE_MONGO_STATE;
function fakeLoad() { return JSON.parse(fakeFs.readFileSync(fakeStatePath, 'utf8')); }
function fakeSave(s) { fakeFs.writeFileSync(fakeStatePath, JSON.stringify(s, null, 1)); }
function fakeError(code, codeName, message) {
  const e = new Error(message);
  e.name = 'MongoServerError';
  e.code = code;
  e.codeName = codeName;
  return e;
}
function FakeMongo(uri) {
  const s = fakeLoad();
  const host = uri.replace(/^mongodb:\/\//, '').split('/')[0];
  s.log.push('connect ' + host + (/[?&]tls=true&tlsCAFile=[^&]+\/data_ca_crt(&|$)/.test(uri) ? ' tls' : ' PLAIN'));
  fakeSave(s);
  if ((s.down || []).includes(host)) {
    const e = new Error('connect ECONNREFUSED ' + host);
    e.name = 'MongoNetworkError';
    throw e;
  }
  const conn = { host: host, user: null };
  this.close = function () {};
  this.getDB = function (name) { return new FakeDb(conn, name); };
}
function FakeDb(conn, name) {
  this.getSiblingDB = function (other) { return new FakeDb(conn, other); };
  this.auth = function (user, pwd) {
    const s = fakeLoad();
    const known = s.users[name + '.' + user];
    const ok = (name === 'admin' && s.root && user === s.root.user && pwd === s.root.pwd) ||
               (known && known.pwd === pwd);
    s.log.push('auth ' + conn.host + ' ' + name + '.' + user + ' ' + (ok ? 'ok' : 'failed'));
    fakeSave(s);
    if (!ok) { throw fakeError(18, 'AuthenticationFailed', 'Authentication failed.'); }
    conn.user = user;
    return { ok: 1 };
  };
  this.runCommand = function (cmd) {
    const s = fakeLoad();
    const verb = Object.keys(cmd)[0];
    s.log.push('cmd ' + conn.host + ' ' + name + ' ' + verb);
    const members = s.rs ? s.rs.members.map((m) => m.host) : [];
    const primary = s.rs && s.electAfter <= 0 && s.primaryIndex !== null
      ? members[s.primaryIndex] : undefined;
    if (verb === 'hello') {
      if (s.rs) { s.electAfter -= 1; }
      fakeSave(s);
      const me = s.rs ? members[s.localIndex] : undefined;
      return { ok: 1, setName: s.rs ? 'rs0' : undefined, me: me, primary: primary,
               isWritablePrimary: Boolean(primary && me === primary) };
    }
    fakeSave(s);
    // the localhost exception: without any user, a local connection may manage users and rs0
    const noUser = !s.root && Object.keys(s.users).length === 0;
    const exception = noUser && conn.host === s.localAddress &&
      ['replSetGetStatus', 'replSetInitiate', 'createUser'].includes(verb);
    if (conn.user === null && !exception) {
      throw fakeError(13, 'Unauthorized', 'command ' + verb + ' requires authentication');
    }
    if (verb === 'replSetGetStatus') {
      if (!s.rs) { throw fakeError(94, 'NotYetInitialized', 'no replset config has been received'); }
      return { ok: 1, set: 'rs0' };
    }
    if (verb === 'replSetInitiate') {
      if (s.rs) { throw fakeError(23, 'AlreadyInitialized', 'already initialized'); }
      s.rs = cmd.replSetInitiate;
      fakeSave(s);
      return { ok: 1 };
    }
    // The local address of the container (127.0.0.1:27017) is the member at localIndex.
    const selfHost = (conn.host === s.localAddress && s.rs) ? members[s.localIndex] : conn.host;
    const writes = ['createUser', 'updateUser'];
    if (writes.includes(verb) && selfHost !== primary) {
      throw fakeError(10107, 'NotWritablePrimary', 'not primary');
    }
    if (verb === 'usersInfo') {
      const u = s.users[name + '.' + cmd.usersInfo];
      return { ok: 1, users: u ? [{ user: cmd.usersInfo, db: name, roles: u.roles }] : [] };
    }
    if (verb === 'createUser' && name === 'admin' &&
        (cmd.roles || []).some((r) => r.role === 'root')) {
      s.root = { user: cmd.createUser, pwd: cmd.pwd };
      s.writes.push('createUser admin.' + cmd.createUser + ' on ' + selfHost);
      fakeSave(s);
      return { ok: 1 };
    }
    if (verb === 'createUser') {
      if (s.users[name + '.' + cmd.createUser]) { throw fakeError(51003, 'Location51003', 'User already exists'); }
      s.users[name + '.' + cmd.createUser] = { pwd: cmd.pwd, roles: cmd.roles, on: selfHost };
      s.writes.push('createUser ' + name + '.' + cmd.createUser + ' on ' + selfHost);
      fakeSave(s);
      return { ok: 1 };
    }
    if (verb === 'updateUser') {
      s.users[name + '.' + cmd.updateUser] = { pwd: cmd.pwd, roles: cmd.roles, on: selfHost };
      s.writes.push('updateUser ' + name + '.' + cmd.updateUser + ' on ' + selfHost);
      fakeSave(s);
      return { ok: 1 };
    }
    throw fakeError(59, 'CommandNotFound', 'no such command: ' + verb);
  };
}
globalThis.Mongo = FakeMongo;
// --- end of the test double; the streamed scripts follow ---
