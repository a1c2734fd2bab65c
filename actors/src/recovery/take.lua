-- Take a kept session, only for its own user: another user's token presenting the pid leaves it
-- in place (a pid is no proof of identity).
-- KEYS: 1 rec:session:{pid}   ARGV: 1 the user asking
-- Returns the session's JSON, or false.
local v = redis.call('GET', KEYS[1])
if not v then return false end
local ok, s = pcall(cjson.decode, v)
if not ok or type(s) ~= 'table' or s.user ~= ARGV[1] then return false end
redis.call('DEL', KEYS[1])
return v
