-- POST /v1/conversions: a purchase by a new customer naming a referral code (Zipf-skewed list,
-- args[1]); a secret key (args[2]); the program (args[3]); a run tag that makes event ids unique
-- across runs (args[4]). Event ids: tag-thread-counter. Every 10th request re-sends the
-- thread's previous request byte for byte (a retry, possibly still in flight on another
-- connection): it must be answered 200 with the first result and store nothing.
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "common.lua")

local codes, position, counter, last_request
local key, program, tag

function init(args)
  codes = read_lines(args[1])
  key, program = args[2], args[3]
  tag = args[4] .. (args[5] and ("-" .. args[5]) or "")
  position = (tid * 7919) % #codes
  counter = 0
end

function request()
  counter = counter + 1
  if counter % 10 == 0 and last_request then
    replays = replays + 1
    return last_request
  end
  position = position % #codes + 1
  local event = string.format("%s-%d-%d", tag, tid, counter)
  local body = string.format(
    '{"program_id":"%s","event_id":"%s","customer_id":"cust-%s","amount":"%d.%02d",'
      .. '"currency":"USD","code":"%s"}',
    program, event, event, 20 + counter % 180, counter % 100, codes[position])
  last_request = wrk.format("POST", "/v1/conversions", {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. key,
  }, body)
  return last_request
end
