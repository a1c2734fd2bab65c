-- A socket connects (or is re-asserted after Redis lost its data). Atomic.
-- KEYS: 1 user:{u}:sockets  2 socket:{s}:user  3 online_users  4 user:{u}:status
--       5 user:{u}:devices  6 node:{n}:sockets  7 user:{u}:socket_devices
-- ARGV: 1 user  2 socket  3 device  4 node  5 now_ms  6 socket_ttl_s  7 status_ttl_s
--       8 most sockets per user (0: no limit; a re-asserted socket is never refused)
-- Returns 1 when this is the user's first socket (the user comes online), 0 when not, -1 when
-- the user already has the most sockets allowed (nothing is written).
local count = redis.call('SCARD', KEYS[1])
local max = tonumber(ARGV[8])
if max > 0 and count >= max and redis.call('SISMEMBER', KEYS[1], ARGV[2]) == 0 then
  return -1
end
local first = count == 0
redis.call('SADD', KEYS[1], ARGV[2])
redis.call('HSET', KEYS[2], 'userId', ARGV[1], 'deviceId', ARGV[3],
  'connectedAt', ARGV[5], 'serverInstance', ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[6])
redis.call('ZADD', KEYS[3], ARGV[5], ARGV[1])
-- Keep a status the user set (away) while refreshing its TTL.
if not redis.call('SET', KEYS[4], 'online', 'NX', 'EX', ARGV[7]) then
  redis.call('EXPIRE', KEYS[4], ARGV[7])
end
redis.call('SADD', KEYS[5], ARGV[3])
redis.call('SADD', KEYS[6], ARGV[2])
redis.call('HSET', KEYS[7], ARGV[2], ARGV[3])
if first then return 1 end
return 0
