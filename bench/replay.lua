-- One key for every request: the first executes, every later one is a
-- replay of its stored answer.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")

wrk.method = "POST"
wrk.body = BODY
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Idempotency-Key"] = "replay-" .. RUN
