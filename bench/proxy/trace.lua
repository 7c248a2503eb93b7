-- wrk script for bench/proxy/run.sh: every request is its own trace, as in real traffic,
-- with a random trace-id and parent-id in traceparent and the context in baggage. With one
-- fixed traceparent all requests would share one trace, which no real load does: a proxy
-- that remembers in-flight requests by trace-id (ctxprop's correlation table) would see
-- one entry contended by every connection instead of one entry per request.
local hex = "0123456789abcdef"

local function rand_hex(n)
	local t = {}
	for i = 1, n do
		local r = math.random(1, 16)
		t[i] = hex:sub(r, r)
	end
	return table.concat(t)
end

request = function()
	return wrk.format(nil, nil, {
		["traceparent"] = "00-" .. rand_hex(32) .. "-" .. rand_hex(16) .. "-01",
		["baggage"] = "ctx.name=bench",
	})
end
