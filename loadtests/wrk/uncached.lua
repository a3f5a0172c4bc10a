-- wrk script for loadtests/bench.py's database cell: the URL plus a random `min_price` on every
-- request, so no cache can answer it and each one runs its list query in PostgreSQL.
request = function()
  return wrk.format("GET", wrk.path .. "&min_price=" .. math.random(0, 25000))
end

dofile(os.getenv("WRK_REPORT"))
