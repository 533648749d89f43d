-- Loops the trace compiler turns into root traces, with branches that change
-- direction part-way (side exits, then side traces), nested loops (inner loops
-- compiled first, outer ones linked to them), while/repeat loops and loops that
-- end early with break.
local function branchy(n)
  local a, b, c = 0, 0, 0
  for i = 1, n do
    if i % 3 == 0 then
      a = a + i
    elseif i % 5 == 0 then
      b = b - i
    else
      c = c + 1
    end
  end
  return a, b, c
end
print("branchy", branchy(300000))

-- The branch flips after a while: the trace exits there, then a side trace
-- takes over.
local function flip(n)
  local s = 0
  for i = 1, n do
    if i < n / 2 then s = s + 2 else s = s - 1 end
  end
  return s
end
print("flip", flip(200000))

local function nested(n)
  local total = 0
  for i = 1, n do
    for j = 1, i % 17 do
      total = total + i * j
    end
  end
  return total
end
print("nested", nested(40000))

local function collatz_max(limit)
  local best, best_n = 0, 0
  for n = 1, limit do
    local steps, x = 0, n
    while x ~= 1 do
      if x % 2 == 0 then x = x / 2 else x = 3 * x + 1 end
      steps = steps + 1
    end
    if steps > best then best, best_n = steps, n end
  end
  return best_n, best
end
print("collatz", collatz_max(30000))

local function first_square_over(limit)
  local i = 0
  repeat
    i = i + 1
  until i * i > limit
  return i
end
local found = 0
for k = 1, 2000 do found = found + first_square_over(k * 1000) end
print("repeat", found)

local function find(t, v)
  for i = 1, #t do
    if t[i] == v then return i end
  end
  return nil
end
local arr = {}
for i = 1, 500 do arr[i] = (i * 7919) % 1000 end
local hits = 0
for v = 0, 999 do
  local at = find(arr, v)
  if at then hits = hits + at end
end
print("break", hits)

-- A loop whose variable changes type halfway (integer to float): the
-- specialised trace exits and a new one is compiled.
local acc = 0
local step = 1
for i = 1, 100000 do
  if i == 50000 then step = 0.5 end
  acc = acc + step
end
print("typeflip", acc)
