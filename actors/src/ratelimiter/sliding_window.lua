-- Count one hit in a user's sliding window, exact across nodes, and its bytes against the
-- user's daily quota. Atomic.
-- KEYS: 1 rate_limit:{u}:messages (ZSET of hits scored by ms)
--       2 rate_limit:{u}:bytes:{day} (bytes stored today)
-- ARGV: 1 window_ms  2 limit  3 unique member suffix  4 daily quota in bytes (0: none)
--       5 this hit's bytes  6 ms left in the day
-- Returns 0 when the hit is allowed, else the ms until it would be.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local quota = tonumber(ARGV[4])
local bytes = tonumber(ARGV[5])
-- The quota first: a hit it refuses must not use up the window.
if quota > 0 and tonumber(redis.call('GET', KEYS[2]) or '0') + bytes > quota then
  return math.max(tonumber(ARGV[6]), 1)
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) < limit then
  -- Members must be unique, or hits in the same millisecond would collapse into one.
  redis.call('ZADD', KEYS[1], now, now .. '-' .. ARGV[3])
  redis.call('PEXPIRE', KEYS[1], window)
  if quota > 0 then
    redis.call('INCRBY', KEYS[2], bytes)
    redis.call('PEXPIRE', KEYS[2], 2 * 24 * 3600 * 1000)
  end
  return 0
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local retry = tonumber(oldest[2]) + window - now
if retry < 1 then retry = 1 end
return retry
