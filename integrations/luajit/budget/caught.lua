-- Allocates without bound inside pcall: under the host's commit budget LuaJIT's
-- allocator is refused pages and LuaJIT raises its own memory error, which the
-- script catches. Then it lets everything go and shows that the state, and the
-- JIT, still work. Nothing printed depends on where the memory ran out.
local function hoard()
  local keep = {}
  local i = 0
  while true do
    i = i + 1
    keep[i] = { i, i * 2, "item" .. i }
  end
end

local ok, err = pcall(hoard)
-- The hoard is garbage now; printing needs memory too, so collect first.
collectgarbage()
collectgarbage()
print("pcall:", ok, err)

-- A hot loop again: the trace compiler needs machine code and heap both.
local s = 0
for i = 1, 200000 do
  if i % 5 == 0 then s = s + i else s = s - 1 end
end
print("after:", s)

local parts = {}
for i = 1, 2000 do parts[#parts + 1] = string.format("%04d", i) end
print("strings:", #table.concat(parts, ","))
