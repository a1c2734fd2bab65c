-- Record a recoverable event and publish it, atomically: the event gets the next offset of the
-- cluster's one order, is appended to its channel's recovery stream and is published with its
-- offset in front, so every node delivers it with the same offset and in offset order.
-- KEYS: 1 rec:clock (HASH ms, seq)  2 the channel's recovery stream
-- ARGV: 1 channel  2 frame  3 max stream length  4 window ms  5 key TTL s
-- Returns the offset `<ms>-<seq>`.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local last = tonumber(redis.call('HGET', KEYS[1], 'ms') or '0')
-- Offsets never go back, even if the clock does.
if now < last then now = last end
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
redis.call('HSET', KEYS[1], 'ms', now)
redis.call('EXPIRE', KEYS[1], ARGV[5])
local id = now .. '-' .. seq
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], id, 'f', ARGV[2])
redis.call('XTRIM', KEYS[2], 'MINID', '~', now - tonumber(ARGV[4]))
redis.call('EXPIRE', KEYS[2], ARGV[5])
redis.call('PUBLISH', ARGV[1], 'SR' .. string.char(#id) .. id .. ARGV[2])
return id
