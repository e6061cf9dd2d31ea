
local ids = {"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}
local n = #ids
local first = 0
local counter = 0
local headers = {["Content-Type"] = "application/json"}
local template = "{\"code\": \"200\", \"message\": \"SUCCESS\", \"task_id\": \"%s\", \"data\": {\"segment_index\": %d, \"segment_start_time\": \"%d.0\", \"segment_end_time\": \"%d.0\", \"status\": 0, \"message\": \"final\", \"transcript\": {\"text\": \"words of segment %d\", \"is_final\": true}}}"

function init(args)
  first = tonumber(args[1])
end

function request()
  local k = counter
  counter = counter + 1
  local index = first + math.floor(k / n)
  local body = string.format(template, ids[(k % n) + 1], index, index * 5, index * 5 + 5, index)
  return wrk.format("POST", "/memories/bench-token-0123456789abcdef", headers, body)
end
