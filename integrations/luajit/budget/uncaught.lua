-- Allocates without bound with nothing to catch the error: under the host's
-- commit budget lua_pcall in the host must return LUA_ERRMEM with LuaJIT's own
-- "not enough memory", and the state must still run code afterwards.
local keep = {}
local i = 0
while true do
  i = i + 1
  keep[i] = string.rep("x", 64) .. i
end
