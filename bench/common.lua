-- common.lua — what every scenario shares: an API client's Authorization
-- header (what idemgate scopes keys by, by default), the request body (a
-- 205-byte JSON object) and a done() that prints one line run.sh reads:
--
--   BENCH requests=N duration_us=D p50_us=X p99_us=Y status_errors=S socket_errors=E
--
-- (latencies from wrk's own histogram, in microseconds; status_errors are
-- answers of 400 and above, socket_errors connect/read/write/timeout).
-- Each scenario loads it with dofile from its own directory.

BODY = '{"customer":"cus_8f3a2b1c9d","amount":1000,"currency":"usd",'
    .. '"subject":"Delivery window and invoice copy for order 4471",'
    .. '"metadata":{"order":"ord_4471","channel":"web","priority":"normal"},'
    .. '"source":"bench"}'

-- a body of the same shape and length whose order number is thread t's
-- n-th: a new request differs from the others by its parameters, not
-- only by its key (idemgate caches the fingerprints of repeated requests,
-- which are retries); distinct for 256 threads of 2^24 requests each
function body_for(t, n)
    return string.format('{"customer":"cus_8f3a2b1c9d","amount":1000,"currency":"usd",'
        .. '"subject":"Delivery window and invoice copy for order 4471",'
        .. '"metadata":{"order":"%02x%06x","channel":"web","priority":"normal"},'
        .. '"source":"bench"}', t % 0x100, n % 0x1000000)
end

AUTH = "Bearer sk_test_4eC39HqLyjWDarjtT1zdp7dc"
wrk.headers["Authorization"] = AUTH
HEADERS = { ["Content-Type"] = "application/json", ["Authorization"] = AUTH }

-- a prefix no earlier run used: keys of one run never meet another's
math.randomseed(os.time() + math.floor(os.clock() * 1e6))
RUN = string.format("%x-%06x", os.time(), math.random(0, 0xffffff))

local threads = 0
function setup(thread)
    threads = threads + 1
    thread:set("tid", threads)
end

function done(summary, latency, requests)
    local e = summary.errors
    io.write(string.format(
        "BENCH requests=%d duration_us=%d p50_us=%d p99_us=%d status_errors=%d socket_errors=%d\n",
        summary.requests, summary.duration,
        latency:percentile(50), latency:percentile(99),
        e.status, e.connect + e.read + e.write + e.timeout))
end
