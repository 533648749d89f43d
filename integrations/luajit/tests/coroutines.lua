-- Coroutines: generators and pipelines resumed in hot loops, yields across
-- pcall, errors inside coroutines, and many coroutines alive at once (each
-- with its own stack from the allocator).
local function gen(n)
  return coroutine.wrap(function()
    for i = 1, n do coroutine.yield(i) end
  end)
end
local s = 0
for v in gen(100000) do s = s + v end
print("generator", s)

local function producer(n)
  return coroutine.create(function()
    for i = 1, n do coroutine.yield(i * i % 1000) end
    return "done"
  end)
end
local function filter(source)
  return coroutine.create(function()
    while true do
      local ok, v = coroutine.resume(source)
      if not ok or v == "done" or v == nil then return "done" end
      if v % 2 == 0 then coroutine.yield(v) end
    end
  end)
end
local f = filter(producer(50000))
local count, total = 0, 0
while true do
  local ok, v = coroutine.resume(f)
  if not ok or v == "done" then break end
  count, total = count + 1, total + v
end
print("pipeline", count, total, coroutine.status(f))

local co = coroutine.create(function(a)
  local sum = a
  for i = 1, 1000 do
    local ok, got = pcall(function()
      local x = coroutine.yield(i)
      if x % 250 == 0 then error("bad " .. x) end
      return x
    end)
    if ok then sum = sum + got else sum = sum - 1 end
  end
  return sum
end)
local ok, v = coroutine.resume(co, 0)
local last
while coroutine.status(co) ~= "dead" do
  ok, last = coroutine.resume(co, v)
  v = last
end
print("yield_pcall", ok, last)

local errs = 0
for i = 1, 2000 do
  local c = coroutine.create(function(x) if x % 3 == 0 then error("e" .. x) end return x end)
  local good, res = coroutine.resume(c, i)
  if not good then errs = errs + 1 else errs = errs + 0 * res end
end
print("errors", errs)

local many = {}
for i = 1, 2000 do
  many[i] = coroutine.create(function(step)
    local acc = 0
    while true do acc = acc + step; step = coroutine.yield(acc) end
  end)
end
local grand = 0
for round = 1, 20 do
  for i = 1, #many do
    local _, acc = coroutine.resume(many[i], round + i % 3)
    grand = grand + acc
  end
end
print("many", grand)

local function deep(n)
  if n == 0 then return coroutine.yield("bottom") end
  return deep(n - 1) + 1
end
local dc = coroutine.create(function() return deep(5000) end)
local _, where = coroutine.resume(dc)
local _, depth = coroutine.resume(dc, 0)
print("deep", where, depth)
