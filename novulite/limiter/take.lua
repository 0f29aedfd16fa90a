-- Take tokens from a token bucket kept as a hash {tokens, updated_ms} with a TTL.
-- KEYS[1]: the bucket. ARGV[1]: capacity. ARGV[2]: refill rate in tokens per ms. ARGV[3]: cost.
-- Returns {allowed (1 or 0), whole tokens left, ms until full, ms until cost tokens are available}.
-- The time comes from Redis's TIME, so every process that shares this Redis refills alike.
-- The arithmetic matches SqliteLimiter.take in sqlite.py.
local key = KEYS[1]
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local epsilon = 1e-9

local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + tonumber(clock[2]) / 1000

-- A missing bucket is a full one, because the TTL below removes a bucket only once it has refilled.
local state = redis.call('HMGET', key, 'tokens', 'updated_ms')
local tokens = tonumber(state[1])
local updated = tonumber(state[2])
if tokens == nil or updated == nil then
  tokens = capacity
else
  tokens = math.min(capacity, tokens + math.max(0, now - updated) * rate)
end

-- A refused request deducts nothing. Storing the refilled level with the new time changes nothing.
local allowed = 0
local retry_ms = 0
if tokens + epsilon >= cost then
  tokens = math.max(0, tokens - cost)
  allowed = 1
else
  retry_ms = math.ceil((cost - tokens) / rate)
end

local reset_ms = math.ceil((capacity - tokens) / rate)
redis.call('HSET', key, 'tokens', tokens, 'updated_ms', now)
redis.call('PEXPIRE', key, math.max(reset_ms, 1))

return {allowed, math.floor(tokens + epsilon), reset_ms, retry_ms}
