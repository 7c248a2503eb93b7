-- wrk script for bench/store/sidecar.sh: every request increments one of 16 counters of
-- the context "bench" through the admin API, as `sidecar ctl incr` or curl would.
wrk.method = "POST"
wrk.body = '{"by":1}'
wrk.headers["Content-Type"] = "application/json"
local n = 0
request = function()
	n = n + 1
	return wrk.format(nil, "/v1/contexts/bench/counters/k" .. (n % 16))
end
