-- Duplicates of an in-flight key: the key changes every BATCH requests of
-- a wrk thread (the script's argument, `-- BATCH`; run.sh passes the
-- thread's connection count).
--
-- A wrk thread sends a connection's next request as soon as its answer
-- is in, and request() numbers the requests of the thread in the order
-- they are sent. At the start every connection sends one request: the
-- first BATCH requests, all with key 0, reach the proxy together. One
-- claims the key and is forwarded; the others find the key in flight and
-- wait for its answer (a few, arriving after it completed, replay it).
-- The first one's answer releases them all at once, so all connections
-- send their next request at about the same moment, with key 1: the
-- batches stay lined up by themselves, and each key is one execution plus
-- BATCH - 1 duplicates, most of them waiting for an in-flight first
-- request. run.sh reads idemgate's counters after the run (executed,
-- replayed, waits) to show the mix.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")

local batch = 32
local counter = 0

function init(args)
    batch = tonumber(args[1]) or batch
end

function request()
    local n = math.floor(counter / batch)
    HEADERS["Idempotency-Key"] = "dup-" .. RUN .. "-" .. tid .. "-" .. n
    counter = counter + 1
    return wrk.format("POST", "/bench", HEADERS, body_for(tid, n))
end
