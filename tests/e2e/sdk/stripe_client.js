// stripe_client.js — drives the real stripe-node client against a gateway
// and prints what it saw as one JSON object.
//
//   node stripe_client.js PORT KEY [slow]
//
// Without "slow": a create, its retry, a reuse with other parameters and
// an invalid key. With "slow": one create whose upstream never answers in
// time, so the gateway stores an unknown outcome, with the SDK's own retries
// on.
'use strict';

const Stripe = require('stripe');

const port = Number(process.argv[2]);
const key = process.argv[3];
const slow = process.argv[4] === 'slow';

const stripe = new Stripe('sk_test_idemgate', {
  host: '127.0.0.1',
  port,
  protocol: 'http',
  maxNetworkRetries: 2,
  timeout: 20000,
});

async function attempt(fn) {
  try {
    const r = await fn();
    return {resolved: true, id: r.id === undefined ? null : r.id,
            headers: r.lastResponse ? r.lastResponse.headers : {}};
  } catch (e) {
    return {resolved: false, type: e.type, rawType: e.rawType || null,
            statusCode: e.statusCode || null, message: e.message,
            headers: e.headers || {}};
  }
}

async function main() {
  const out = {};
  if (slow) {
    out.unknown = await attempt(() =>
      stripe.customers.create({name: 'Slow'}, {idempotencyKey: key}));
  } else {
    out.first = await attempt(() =>
      stripe.customers.create({name: 'Jane'}, {idempotencyKey: key}));
    out.retry = await attempt(() =>
      stripe.customers.create({name: 'Jane'}, {idempotencyKey: key}));
    out.mismatch = await attempt(() =>
      stripe.customers.create({name: 'John'}, {idempotencyKey: key}));
    out.invalid = await attempt(() =>
      stripe.customers.create({name: 'Jane'},
                              {idempotencyKey: 'x'.repeat(300)}));
  }
  // the SDK's kept-alive sockets would hold the process for a while
  process.stdout.write(JSON.stringify(out) + '\n', () => process.exit(0));
}

main().catch((e) => {
  process.stderr.write(String(e && e.stack || e) + '\n');
  process.exit(1);
});
