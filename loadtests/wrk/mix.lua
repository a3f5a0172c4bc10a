-- wrk script for loadtests/bench_workers.py: a shop's read mix instead of one URL.
-- WRK_MIX names a file of request lines "<path>\t<Authorization header or ->", cycled through
-- in order by each connection (from a different start), so every worker meets the same mix.
-- The requests are formatted in init(), once per thread: only then does wrk know the Host.
local requests = {}
local counter = 0
init = function(args)
  local file = assert(io.open(os.getenv("WRK_MIX"), "r"))
  for line in file:lines() do
    local path, auth = line:match("^([^\t]+)\t(.+)$")
    local headers = { Host = wrk.headers["Host"] or wrk.host .. ":" .. wrk.port }
    if auth ~= "-" then headers["Authorization"] = auth end
    requests[#requests + 1] = wrk.format("GET", path, headers)
  end
  file:close()
  counter = math.random(#requests)
end

request = function()
  counter = counter % #requests + 1
  return requests[counter]
end

dofile(os.getenv("WRK_REPORT"))
