-- An online user sets a status. Atomic.
-- KEYS: 1 user:{u}:sockets  2 user:{u}:status
-- ARGV: 1 status  2 status_ttl_s
-- Returns 1 when the status changed, 0 when unchanged or the user is offline.
if redis.call('SCARD', KEYS[1]) == 0 then
  return 0
end
local old = redis.call('GET', KEYS[2])
redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[2])
if old == ARGV[1] then return 0 end
return 1
