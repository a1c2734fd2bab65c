-- Count one hit in a user's sliding window, exact across nodes. Atomic.
-- KEYS: 1 rate_limit:{u}:messages (ZSET of hits scored by ms)
-- ARGV: 1 window_ms  2 limit  3 unique member suffix
-- Returns 0 when the hit is allowed, else the ms until the oldest hit leaves the window.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) < limit then
  -- Members must be unique, or hits in the same millisecond would collapse into one.
  redis.call('ZADD', KEYS[1], now, now .. '-' .. ARGV[3])
  redis.call('PEXPIRE', KEYS[1], window)
  return 0
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local retry = tonumber(oldest[2]) + window - now
if retry < 1 then retry = 1 end
return retry
