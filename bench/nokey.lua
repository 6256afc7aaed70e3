-- A POST without a key: proxied unchanged.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")

wrk.method = "POST"
wrk.body = BODY
wrk.headers["Content-Type"] = "application/json"
