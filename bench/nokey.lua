-- A POST without a key: proxied unchanged.
wrk.method = "POST"
wrk.body = '{"amount":1000,"currency":"usd"}'
wrk.headers["Content-Type"] = "application/json"
