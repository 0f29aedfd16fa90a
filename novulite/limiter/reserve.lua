-- Reserve a slot for a member in a fixed window kept as a set with a TTL.
-- KEYS[1]: the window's set. ARGV[1]: limit (members per window). ARGV[2]: window length in ms.
-- ARGV[3]: the member.
-- Returns {granted (1 or 0), members in the window, ms until the window ends}.
-- Redis runs the TTL on its own clock, so every process that shares this Redis gets the same window.
local key = KEYS[1]
local limit = tonumber(ARGV[1])
local window_ms = tonumber(ARGV[2])
local member = ARGV[3]

local granted = 0
if redis.call('SISMEMBER', key, member) == 1 then
  granted = 1
elseif redis.call('SCARD', key) < limit then
  redis.call('SADD', key, member)
  granted = 1
end

-- The first member starts the window. Checking the TTL, not the count, also repairs a set that lost
-- its TTL (PERSIST by hand), which would otherwise never reopen.
if granted == 1 and redis.call('PTTL', key) < 0 then
  redis.call('PEXPIRE', key, window_ms)
end

return {granted, redis.call('SCARD', key), math.max(redis.call('PTTL', key), 0)}
