-- GET /r/{code}: codes drawn from a Zipf-skewed list (args[1]); visitors as in clicks.lua.
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "common.lua")

local codes, position, counter, last_code, last_ip, first_octet
local BROWSER = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
  .. "Chrome/124.0 Mobile Safari/537.36"
local BOT = "WhatsApp/2.23.20.0"
local SOURCES = {"facebook", "instagram", "whatsapp", "email", "tiktok"}

function init(args)
  codes = read_lines(args[1])
  position = (tid * 7919) % #codes
  counter = 0
  -- The run's number ends the last argument (bench/runners.py): no run repeats another's visitors.
  first_octet = 11 + (tid + 2 * (tonumber(string.match(args[#args] or "", "(%d+)$")) or 0)) % 200
end

function request()
  counter = counter + 1
  local code, ip
  if counter % 10 == 0 and last_code then
    code, ip = last_code, last_ip
  else
    position = position % #codes + 1
    code = codes[position]
    ip = string.format("%d.%d.%d.%d", first_octet, math.floor(counter / 65536) % 256,
      math.floor(counter / 256) % 256, counter % 256)
    last_code, last_ip = code, ip
  end
  local path = string.format("/r/%s?utm_source=%s&utm_medium=social", code,
    SOURCES[counter % #SOURCES + 1])
  return wrk.format("GET", path, {
    ["X-Forwarded-For"] = ip,
    ["User-Agent"] = (counter % 20 == 7) and BOT or BROWSER,
    ["Referer"] = "https://social.example/post/1",
  })
end
