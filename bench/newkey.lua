-- Every request a new Idempotency-Key: the claim-and-complete path (two
-- durable store writes per request).
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")

local counter = 0

function request()
    counter = counter + 1
    HEADERS["Idempotency-Key"] = RUN .. "-" .. tid .. "-" .. counter
    return wrk.format("POST", "/bench", HEADERS, BODY)
end
