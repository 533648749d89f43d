-- GC churn: many short-lived tables, strings and closures (the allocator's
-- small bins and the collector's sweeps), large blocks that take the
-- allocator's direct path (one VirtualAlloc each, given back on free), a heap
-- that grows to tens of MiB and shrinks again (segments released), weak tables
-- and finalizers. Only facts that do not depend on where memory lies are
-- printed.
local function churn(n)
  local kept, sum = {}, 0
  for i = 1, n do
    local t = { i, tostring(i), { i * 2 } }
    sum = sum + t[1] + #t[2] + t[3][1]
    if i % 1000 == 0 then kept[#kept + 1] = t end
  end
  return sum, #kept
end
print("churn", churn(300000))

local function closures(n)
  local total = 0
  for i = 1, n do
    local function add(x) return x + i end
    total = total + add(i % 10)
  end
  return total
end
print("closures", closures(200000))

local peak = 0
local function big_rounds(rounds)
  local check = 0
  for round = 1, rounds do
    local big = {}
    for i = 1, 200000 + round * 1000 do big[i] = i + round end
    check = check + big[#big] + #big
    local blob = string.rep("x", 1048576 + round)
    check = check + #blob + blob:byte(round)
    peak = math.max(peak, collectgarbage("count"))
  end
  return check
end
print("big", big_rounds(20))

local function grow_and_drop()
  local heap = {}
  for i = 1, 400000 do heap[i] = { i, "v" .. i } end
  local n = #heap
  peak = math.max(peak, collectgarbage("count"))
  return n
end
print("grow", grow_and_drop())
collectgarbage()
collectgarbage()
print("shrunk", collectgarbage("count") < peak / 2)

local function weak_cache()
  local cache = setmetatable({}, { __mode = "k" })
  local anchors = {}
  for i = 1, 10000 do
    local key = {}
    cache[key] = i
    if i % 10 == 0 then anchors[#anchors + 1] = key end
  end
  return cache, anchors
end
local cache, anchors = weak_cache()
collectgarbage()
collectgarbage()
local left, sum = 0, 0
for k, v in pairs(cache) do left = left + 1; sum = sum + v end
print("weak", left, sum, #anchors)

local finalized = 0
local function make_proxies(n)
  for _ = 1, n do
    local p = newproxy(true)
    getmetatable(p).__gc = function() finalized = finalized + 1 end
  end
end
make_proxies(5000)
collectgarbage()
collectgarbage()
print("finalized", finalized)

-- Strings built and dropped in a hot loop.
local acc = 0
for i = 1, 200000 do
  local s = "a" .. i .. "b" .. (i % 77)
  acc = acc + #s
end
print("strings", acc)
