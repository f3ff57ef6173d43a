'use strict';
// The checklist's Node service, in small: what the lab needs to rehearse it. Health endpoints
// (/health, /health/live, /health/ready, /health/detailed), login and messages through
// PgBouncer, and two scheduled jobs under Redis locks that print the checklist's log lines:
//   Acquired lock for job: <job>
//   Job lock held by another server: <job>
//   Released lock for job: <job>
// Each line starts with the process's own time ([ISO 8601, microseconds]), which the lab's
// contract reads (more exact than Docker's stamp of when it read the line).
//
// Environment: PORT, SERVER_ID, DATABASE_URL, REDIS_URL, SEED_PASSWORD, JOB_INTERVAL_MS,
// LOCK_TTL_MS, JOB_DURATION_MS, DEPENDENCY_TIMEOUT_MS, DRAIN_MS.

const http = require('http');
const crypto = require('crypto');
const os = require('os');
const { performance } = require('perf_hooks');
const { Pool } = require('pg');
const { createClient } = require('redis');

const env = process.env;
const PORT = Number(env.PORT || 3000);
const SERVER_ID = env.SERVER_ID || os.hostname();
const JOB_INTERVAL_MS = Number(env.JOB_INTERVAL_MS || 2000);
const LOCK_TTL_MS = Number(env.LOCK_TTL_MS || 10000);
const JOB_DURATION_MS = Number(env.JOB_DURATION_MS || 500);
const TIMEOUT_MS = Number(env.DEPENDENCY_TIMEOUT_MS || 1000);
const DRAIN_MS = Number(env.DRAIN_MS || 0);
const SEED_EMAIL = 'user1@lab.test';
const TOKEN_SECRET = crypto.randomBytes(32);
const JOBS = ['recurring-messages', 'phone-linking-recovery'];

function now() {
  // Wall clock with sub-millisecond resolution, as epoch milliseconds.
  return performance.timeOrigin + performance.now();
}

function stamp(ms) {
  const whole = Math.floor(ms);
  const micro = String(Math.floor((ms - whole) * 1000)).padStart(3, '0');
  return new Date(whole).toISOString().replace('Z', micro + 'Z');
}

function log(line) {
  process.stdout.write(`[${stamp(now())}] ${line}\n`);
}

function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// -- dependencies ------------------------------------------------------------------------

const pool = new Pool({
  connectionString: env.DATABASE_URL,
  max: 10,
  connectionTimeoutMillis: TIMEOUT_MS,
  idleTimeoutMillis: 30000,
});
pool.on('error', (err) => log(`database connection error: ${err.message}`));

const redis = createClient({
  url: env.REDIS_URL,
  // Fail at once while disconnected: a job must skip its tick, not queue it for later.
  disableOfflineQueue: true,
  socket: { connectTimeout: TIMEOUT_MS, reconnectStrategy: (tries) => Math.min(100 * tries, 1000) },
});
redis.on('error', () => {});   // reconnects by itself; each failed command is logged where used

async function db(text, params) {
  return withTimeout(pool.query(text, params), 2 * TIMEOUT_MS, 'database');
}

async function migrate() {
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    await client.query('SELECT pg_advisory_xact_lock(4242)');
    await client.query(`CREATE TABLE IF NOT EXISTS conversations (
      id serial PRIMARY KEY, title text NOT NULL)`);
    await client.query(`CREATE TABLE IF NOT EXISTS messages (
      id bigserial PRIMARY KEY, conversation_id int NOT NULL, body text NOT NULL,
      created_at timestamptz NOT NULL DEFAULT now())`);
    await client.query(`INSERT INTO conversations (id, title) VALUES (1, 'general')
      ON CONFLICT (id) DO NOTHING`);
    await client.query('COMMIT');
  } catch (err) {
    await client.query('ROLLBACK').catch(() => {});
    throw err;
  } finally {
    client.release();
  }
}

// -- health ------------------------------------------------------------------------------

let started = false;
let draining = false;

async function dependencies() {
  const out = {};
  await Promise.all([
    db('SELECT 1').then(() => { out.database = 'ok'; },
                        (err) => { out.database = `failed: ${err.message}`; }),
    withTimeout(redis.ping(), TIMEOUT_MS, 'redis').then(() => { out.redis = 'ok'; },
                                                       (err) => { out.redis = `failed: ${err.message}`; }),
  ]);
  return out;
}

// -- HTTP --------------------------------------------------------------------------------

function send(res, status, body) {
  const data = JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': 'application/json', 'X-Backend-Id': SERVER_ID,
                          'Content-Length': Buffer.byteLength(data) });
  res.end(data);
}

function readJson(req) {
  return new Promise((resolve) => {
    let size = 0;
    const chunks = [];
    req.on('data', (chunk) => {
      size += chunk.length;
      if (size <= 65536) chunks.push(chunk);
    });
    req.on('end', () => {
      try { resolve(JSON.parse(Buffer.concat(chunks).toString() || '{}')); } catch { resolve({}); }
    });
    req.on('error', () => resolve({}));
  });
}

function token(email) {
  const mac = crypto.createHmac('sha256', TOKEN_SECRET).update(email).digest('base64url');
  return `${Buffer.from(email).toString('base64url')}.${mac}`;
}

function authorized(req) {
  const header = req.headers.authorization || '';
  const [email, mac] = header.replace(/^Bearer /, '').split('.');
  if (!email || !mac) return false;
  const expected = token(Buffer.from(email, 'base64url').toString()).split('.')[1];
  return mac.length === expected.length &&
    crypto.timingSafeEqual(Buffer.from(mac), Buffer.from(expected));
}

async function handle(req, res) {
  const path = (req.url || '/').split('?')[0];
  if (path === '/health' || path === '/health/live') {
    return send(res, 200, { status: 'ok', server: SERVER_ID });
  }
  if (path === '/health/ready' || path === '/health/detailed') {
    if (!started || draining) {
      return send(res, 503, { status: draining ? 'draining' : 'starting', server: SERVER_ID });
    }
    const deps = await dependencies();
    const failed = Object.entries(deps).filter(([, v]) => v !== 'ok').map(([k]) => k);
    const body = { status: failed.length ? `${failed.join(' and ')} failed` : 'ok', server: SERVER_ID };
    return send(res, failed.length ? 503 : 200, path === '/health/detailed' ? { ...body, ...deps } : body);
  }
  if (path === '/api/auth/login' && req.method === 'POST') {
    const { email, password } = await readJson(req);
    if (email === SEED_EMAIL && env.SEED_PASSWORD && password === env.SEED_PASSWORD) {
      return send(res, 200, { token: token(email) });
    }
    return send(res, 401, { error: 'invalid credentials' });
  }
  if (path === '/api/conversations' && req.method === 'GET') {
    const { rows } = await db('SELECT id, title FROM conversations ORDER BY id LIMIT 20');
    return send(res, 200, { conversations: rows });
  }
  if (path === '/api/messages' && req.method === 'POST') {
    if (!authorized(req)) return send(res, 401, { error: 'unauthorized' });
    const { conversation_id: conversation, body } = await readJson(req);
    if (!Number.isInteger(conversation) || typeof body !== 'string') {
      return send(res, 400, { error: 'conversation_id and body required' });
    }
    const { rows } = await db('INSERT INTO messages (conversation_id, body) VALUES ($1, $2) ' +
                              'RETURNING id', [conversation, body]);
    return send(res, 201, { id: Number(rows[0].id) });
  }
  if (path.startsWith('/webhooks/') && req.method === 'POST') {
    await readJson(req);
    return send(res, 200, { ok: true });
  }
  return send(res, 404, { error: 'not found' });
}

const server = http.createServer((req, res) => {
  handle(req, res).catch((err) => send(res, 503, { error: `dependency failed: ${err.message}` }));
});
server.keepAliveTimeout = 65000;

// -- jobs under Redis locks ----------------------------------------------------------------

const RELEASE = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1])
else return 0 end`;
const EXTEND = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2])
else return 0 end`;
// A node that wakes late, after the winner released, must not run the same tick again.
const CLAIM_TICK = `local last = tonumber(redis.call('GET', KEYS[1]) or '-1')
if last < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) return 1 end return 0`;
let stopping = false;

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function runOnce(job, tick) {
  const key = `job-lock:${job}`;
  const value = `${SERVER_ID}:${crypto.randomBytes(8).toString('hex')}`;
  let acquired;
  try {
    acquired = await withTimeout(redis.set(key, value, { NX: true, PX: LOCK_TTL_MS }), TIMEOUT_MS, 'redis');
  } catch (err) {
    log(`Could not reach Redis, skipping job: ${job} (${err.message})`);
    return;
  }
  if (acquired !== 'OK') {
    log(`Job lock held by another server: ${job}`);
    return;
  }
  let claimed = 0;
  try {
    claimed = await withTimeout(redis.eval(CLAIM_TICK, { keys: [`job-tick:${job}`], arguments: [String(tick)] }),
                                TIMEOUT_MS, 'redis');
  } catch (err) {
    log(`Could not claim the tick, skipping job: ${job} (${err.message})`);
  }
  if (claimed !== 1) {
    await redis.eval(RELEASE, { keys: [key], arguments: [value] }).catch(() => {});
    return;
  }
  log(`Acquired lock for job: ${job}`);
  const renew = setInterval(() => {
    redis.eval(EXTEND, { keys: [key], arguments: [value, String(LOCK_TTL_MS)] }).catch(() => {});
  }, Math.max(10, LOCK_TTL_MS / 3));
  try {
    await sleep(JOB_DURATION_MS);   // the job's work
  } finally {
    clearInterval(renew);
    // Logged before the delete: the run is over while Redis still names this node.
    log(`Released lock for job: ${job}`);
    await withTimeout(redis.eval(RELEASE, { keys: [key], arguments: [value] }), TIMEOUT_MS, 'redis')
      .catch((err) => log(`Could not release lock for job: ${job} (${err.message})`));
  }
}

async function schedule(job) {
  // Every node wakes at the same wall-clock ticks (multiples of the interval since the epoch).
  while (!stopping) {
    const next = Math.floor(now() / JOB_INTERVAL_MS) + 1;
    // setTimeout may fire up to a millisecond early: the tick must have begun.
    while (now() < next * JOB_INTERVAL_MS) await sleep(Math.max(1, next * JOB_INTERVAL_MS - now()));
    if (stopping) return;
    runOnce(job, next).catch((err) => log(`Job failed: ${job} (${err.message})`));
  }
}

// -- start and stop ------------------------------------------------------------------------

async function main() {
  server.listen(PORT, () => log(`${SERVER_ID} listening on ${PORT}`));
  redis.connect().catch(() => {});
  for (;;) {
    try {
      await migrate();
      break;
    } catch (err) {
      log(`database not ready: ${err.message}`);
      await sleep(500);
    }
  }
  started = true;
  JOBS.forEach((job) => schedule(job));
}

process.on('SIGTERM', () => {
  draining = true;
  stopping = true;
  log(`${SERVER_ID} draining`);
  setTimeout(() => {
    server.close(() => process.exit(0));
    setTimeout(() => process.exit(0), 2000).unref();
  }, DRAIN_MS);
});

main();
