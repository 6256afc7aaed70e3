-- Every request a new Idempotency-Key: the claim-and-complete path.
local thread_id = 0
local counter = 0
local prefix = string.format("%x", os.time())

function setup(thread)
    thread_id = thread_id + 1
    thread:set("tid", thread_id)
end

function request()
    counter = counter + 1
    return wrk.format("POST", "/bench", {
        ["Idempotency-Key"] = prefix .. "-" .. tid .. "-" .. counter,
        ["Content-Type"] = "application/json",
    }, '{"amount":1000,"currency":"usd"}')
end
