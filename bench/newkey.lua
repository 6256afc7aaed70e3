-- Every request a new Idempotency-Key and a body of its own (body_for):
-- the claim-and-complete path (two durable store writes per request).
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")

local counter = 0

function request()
    counter = counter + 1
    HEADERS["Idempotency-Key"] = RUN .. "-" .. tid .. "-" .. counter
    return wrk.format("POST", "/bench", HEADERS, body_for(tid, counter))
end
