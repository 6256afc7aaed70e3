-- One key for every request: after the first, each is a replay.
local key = string.format("replay-%x", os.time())

wrk.method = "POST"
wrk.body = '{"amount":1000,"currency":"usd"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Idempotency-Key"] = key
