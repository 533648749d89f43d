-- Calls: recursion, varargs, closures with shared upvalues, tail calls,
-- pcall/error in loops, and functions passed around - the calls traces inline
-- or link to.
local function fib(n) if n < 2 then return n end return fib(n - 1) + fib(n - 2) end
print("fib", fib(27))

local function ack(m, n)
  if m == 0 then return n + 1 end
  if n == 0 then return ack(m - 1, 1) end
  return ack(m - 1, ack(m, n - 1))
end
print("ack", ack(2, 300), ack(3, 5))

local function sum(...)
  local s = 0
  for i = 1, select("#", ...) do s = s + (select(i, ...)) end
  return s
end
local vs = 0
for i = 1, 50000 do vs = vs + sum(i, i % 3, i % 5, 1) end
print("varargs", vs)

local function pack2(...) return { n = select("#", ...), ... } end
local packed = 0
for i = 1, 20000 do
  local p = pack2(i, nil, i * 2)
  packed = packed + p.n + p[1] + p[3]
end
print("pack", packed, unpack({ 1, 2, 3 }))

local function counter()
  local n = 0
  return function() n = n + 1; return n end, function() return n end
end
local inc, get = counter()
for _ = 1, 100000 do inc() end
print("upvalues", get())

local function loop_tail(n, acc)
  if n == 0 then return acc end
  return loop_tail(n - 1, acc + n % 9)
end
print("tailcall", loop_tail(1000000, 0))

local fails = 0
for i = 1, 30000 do
  local ok, err = pcall(function(x)
    if x % 100 == 0 then error({ code = x }) end
    return x
  end, i)
  if not ok then fails = fails + err.code end
end
print("pcall", fails)

local msgs = {}
for i = 1, 5 do
  local ok, err = pcall(error, "boom" .. i, 0)
  msgs[#msgs + 1] = tostring(ok) .. ":" .. err
end
print("error", table.concat(msgs, " "))

local function compose(f, g) return function(x) return f(g(x)) end end
local h = compose(function(x) return x * 2 end, function(x) return x + 1 end)
local hs = 0
for i = 1, 100000 do hs = hs + h(i) end
print("compose", hs)

local ops = {
  add = function(a, b) return a + b end,
  sub = function(a, b) return a - b end,
  mul = function(a, b) return a * b % 1000003 end,
}
local names = { "add", "sub", "mul" }
local acc = 1
for i = 1, 90000 do acc = ops[names[i % 3 + 1]](acc, i) end
print("dispatch", acc)
