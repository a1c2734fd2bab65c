-- A socket leaves. Atomic; reports "last socket gone → offline".
-- KEYS: 1 user:{u}:sockets  2 socket:{s}:user  3 online_users  4 user:{u}:status
--       5 user:{u}:devices  6 node:{n}:sockets  7 user:{u}:socket_devices
-- ARGV: 1 user  2 socket  3 node (whose entry this is)
-- Returns 1 when it was the user's last socket (the user goes offline), else 0; -1 when the
-- socket is now registered by another node (it was recovered there): then it is only dropped
-- from this node's set, since sweeping a dead node must not take a living socket along.
local owner = redis.call('HGET', KEYS[2], 'serverInstance')
if owner and owner ~= ARGV[3] then
  redis.call('SREM', KEYS[6], ARGV[2])
  return -1
end
local device = redis.call('HGET', KEYS[7], ARGV[2]) or redis.call('HGET', KEYS[2], 'deviceId')
redis.call('DEL', KEYS[2])
redis.call('SREM', KEYS[6], ARGV[2])
redis.call('HDEL', KEYS[7], ARGV[2])
if redis.call('SREM', KEYS[1], ARGV[2]) == 0 then
  return 0
end
if redis.call('SCARD', KEYS[1]) == 0 then
  redis.call('DEL', KEYS[1], KEYS[4], KEYS[5], KEYS[7])
  redis.call('ZREM', KEYS[3], ARGV[1])
  return 1
end
-- A device stays listed while another of the user's sockets still uses it.
if device then
  for _, other in ipairs(redis.call('HVALS', KEYS[7])) do
    if other == device then
      return 0
    end
  end
  redis.call('SREM', KEYS[5], device)
end
return 0
