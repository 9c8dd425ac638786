-- POST /v1/clicks: codes drawn from a Zipf-skewed list (one per line, args[1]), a publishable
-- key (args[2]). Every visitor has its own address (X-Forwarded-For; the service trusts it in
-- the benchmark); every 10th request repeats the previous visit (flagged duplicate), every
-- 20th comes from a link-preview bot.
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "common.lua")

local codes, position, counter, last_code, last_ip, first_octet
local key
local BROWSER = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
  .. "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1"
local BOT = "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)"
local SOURCES = {"facebook", "instagram", "whatsapp", "email", "tiktok"}

function init(args)
  codes = read_lines(args[1])
  key = args[2]
  position = (tid * 7919) % #codes
  counter = 0
  -- The run's number ends the last argument (bench/runners.py): no run repeats another's visitors.
  first_octet = 11 + (tid + 2 * (tonumber(string.match(args[#args] or "", "(%d+)$")) or 0)) % 200
end

function visitor_ip()
  return string.format("%d.%d.%d.%d", first_octet, math.floor(counter / 65536) % 256,
    math.floor(counter / 256) % 256, counter % 256)
end

function request()
  counter = counter + 1
  local code, ip
  if counter % 10 == 0 and last_code then
    code, ip = last_code, last_ip
  else
    position = position % #codes + 1
    code, ip = codes[position], visitor_ip()
    last_code, last_ip = code, ip
  end
  local body = string.format(
    '{"code":"%s","utm_source":"%s","utm_medium":"social","utm_campaign":"bench",'
      .. '"visitor_id":"%s","landing_url":"https://shop.example/landing"}',
    code, SOURCES[counter % #SOURCES + 1], ip)
  return wrk.format("POST", "/v1/clicks", {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. key,
    ["X-Forwarded-For"] = ip,
    ["User-Agent"] = (counter % 20 == 7) and BOT or BROWSER,
  }, body)
end
