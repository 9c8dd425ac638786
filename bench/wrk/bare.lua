-- The framework ceiling: GET a constant from the bare FastAPI app (bench/bare_app.py).
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "common.lua")

wrk.method = "GET"
wrk.path = "/ping"
