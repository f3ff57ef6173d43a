// An ordinary k6 script, as a team already has one: `lab load --script examples/load.js`
// runs it against the lab unchanged. It needs only what the lab puts in its environment:
//   LAB_BASE_URL  where the lab answers (NGINX, as this generator reaches it)
//   LAB_TOKEN     a bearer token of the seeded user user1@lab.test
// (also LAB_USERS: every seeded user with a token and a conversation id; LAB_PASSWORD.)
// Outside the lab, point the same variables at any deployment: `k6 run examples/load.js`.
import http from 'k6/http';
import { check, sleep } from 'k6';

const BASE = __ENV.LAB_BASE_URL || 'http://127.0.0.1:8080';
const AUTH = { headers: { Authorization: `Bearer ${__ENV.LAB_TOKEN}` } };

export const options = {
  scenarios: {
    browse: {
      executor: 'constant-arrival-rate',
      rate: 20,
      timeUnit: '1s',
      duration: '10s',
      preAllocatedVUs: 10,
      maxVUs: 40,
    },
  },
  thresholds: {
    http_req_failed: ['rate<0.01'],
    'http_req_duration{name:health}': ['p(95)<100'],
    checks: ['rate>0.99'],
  },
};

export default function () {
  const health = http.get(`${BASE}/health`, { tags: { name: 'health' } });
  check(health, { 'health is 200': (r) => r.status === 200 });
  const list = http.get(`${BASE}/api/conversations`, Object.assign({ tags: { name: 'conversations' } }, AUTH));
  check(list, { 'conversations listed': (r) => r.status === 200 && r.json('conversations').length > 0 });
  sleep(0.1);
}
