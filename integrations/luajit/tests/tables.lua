-- Tables: array and hash parts growing in loops, table.insert/remove, sort
-- with a comparator, metatables (__index chains, __newindex, __call), and
-- method calls on objects - all in hot loops.
local arr = {}
for i = 1, 100000 do arr[i] = i * 3 % 1001 end
local s = 0
for i = 1, #arr do s = s + arr[i] end
print("array", #arr, s)

local h = {}
for i = 1, 50000 do h["key" .. i % 5000] = (h["key" .. i % 5000] or 0) + i end
local keys = {}
for k in pairs(h) do keys[#keys + 1] = k end
table.sort(keys)
print("hash", #keys, keys[1], h[keys[1]], keys[#keys], h[keys[#keys]])

local q = {}
for i = 1, 20000 do table.insert(q, i) end
local popped = 0
for _ = 1, 10000 do popped = popped + table.remove(q) end
table.insert(q, 1, -1)
print("insert", #q, popped, q[1], q[2])

math.randomseed(42)
local r = {}
for i = 1, 20000 do r[i] = { id = i, v = (i * 7919) % 10007 } end
table.sort(r, function(a, b) if a.v ~= b.v then return a.v < b.v end return a.id < b.id end)
print("sort", r[1].id, r[1].v, r[20000].id, r[20000].v)

local Point = {}
Point.__index = Point
function Point.new(x, y) return setmetatable({ x = x, y = y }, Point) end
function Point:add(o) return Point.new(self.x + o.x, self.y + o.y) end
function Point:len2() return self.x * self.x + self.y * self.y end
local p = Point.new(0, 0)
for i = 1, 100000 do p = p:add(Point.new(i % 3, -(i % 5))) end
print("objects", p.x, p.y, p:len2())

local Base = { kind = function() return "base" end, size = function(self) return self.n end }
Base.__index = Base
local Derived = setmetatable({ kind = function() return "derived" end }, Base)
Derived.__index = Derived
local total, kinds = 0, {}
for i = 1, 30000 do
  local o = setmetatable({ n = i % 11 }, i % 2 == 0 and Derived or Base)
  total = total + o:size()
  kinds[o:kind()] = (kinds[o:kind()] or 0) + 1
end
print("inherit", total, kinds.base, kinds.derived)

local log = 0
local guarded = setmetatable({}, { __newindex = function(t, k, v) log = log + 1; rawset(t, k, v * 2) end })
for i = 1, 10000 do guarded[i % 100] = i end
print("newindex", log, guarded[1], guarded[99])

local counter = setmetatable({ n = 0 }, { __call = function(self, d) self.n = self.n + d; return self.n end })
for i = 1, 50000 do counter(i % 4) end
print("call", counter.n)

local m = {}
for i = 1, 200 do
  m[i] = {}
  for j = 1, 200 do m[i][j] = (i - j) % 7 end
end
local tr = 0
for i = 1, 200 do for j = 1, 200 do tr = tr + m[i][j] * m[j][i] end end
print("matrix", tr)

local nested = {}
for i = 1, 5000 do nested[i] = { a = { b = { c = i } } } end
local deep = 0
for i = 1, #nested do deep = deep + nested[i].a.b.c end
print("nested", deep)
