-- wrk: every request to a URL of its own, so each is a cache miss that gets stored
-- (bench/bench_cache.py's cold fills). The tag (wrk's argument after --) keeps the
-- URLs of one run apart from another's, which would otherwise be hits.
local tag, count = "", 0

init = function(args)
  tag = args[1] or ""
end

request = function()
  count = count + 1
  return wrk.format("GET", wrk.path .. "?fill=" .. tag .. "-" .. count)
end
