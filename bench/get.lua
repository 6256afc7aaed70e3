-- GET passthrough: no body, no key, proxied unchanged.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")
