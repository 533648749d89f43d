-- The FFI: C arrays and structs in hot loops (compiled to plain loads and
-- stores), and callbacks - Lua functions C calls through trampolines LuaJIT
-- writes into its callback area, one more machine-code area on the manager.
local ffi = require("ffi")
ffi.cdef[[
typedef struct { double x, y; int tag; } point_t;
void qsort(void *base, size_t n, size_t size, int (*cmp)(const void *, const void *));
]]

local n = 100000
local a = ffi.new("double[?]", n)
for i = 0, n - 1 do a[i] = i * 0.25 end
local s = 0
for i = 0, n - 1 do s = s + a[i] end
print("array", s)

local pts = ffi.new("point_t[?]", 5000)
for i = 0, 4999 do
  pts[i].x, pts[i].y, pts[i].tag = i, -i / 2, i % 7
end
local sx, sy, tags = 0, 0, 0
for i = 0, 4999 do
  local p = pts[i]
  sx, sy, tags = sx + p.x, sy + p.y, tags + p.tag
end
print("structs", sx, sy, tags)

local u = ffi.new("uint32_t[?]", 1000)
local h = ffi.new("uint32_t", 2166136261)
for i = 0, 999 do u[i] = (i * 2654435761) % 4294967296 end
local acc = 0ULL
for i = 0, 999 do acc = acc + u[i] end
print("integers", tostring(acc), tonumber(h))

local ints = ffi.new("int[?]", 2000)
for i = 0, 1999 do ints[i] = (i * 7919) % 2003 end
local calls = 0
local cmp = ffi.cast("int (*)(const void *, const void *)", function(pa, pb)
  calls = calls + 1
  local x = ffi.cast("const int *", pa)[0]
  local y = ffi.cast("const int *", pb)[0]
  return x < y and -1 or (x > y and 1 or 0)
end)
ffi.C.qsort(ints, 2000, ffi.sizeof("int"), cmp)
local sorted = true
for i = 1, 1999 do if ints[i - 1] > ints[i] then sorted = false end end
cmp:free()
print("qsort", sorted, ints[0], ints[1999], calls > 2000)

local twice = ffi.cast("int (*)(int)", function(x) return x * 2 end)
local t = 0
for i = 1, 20000 do t = t + twice(i) end
twice:free()
print("callback", t)

local buf = ffi.new("char[?]", 64)
ffi.copy(buf, "hostmem and luajit")
print("string", ffi.string(buf), ffi.sizeof(buf))
