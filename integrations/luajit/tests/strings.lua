-- Strings: concatenation and interning in loops, string.byte/char/sub/rep the
-- JIT compiles, pattern functions (which it does not: traces stop or stitch
-- there), string.format and table.concat.
local parts = {}
for i = 1, 20000 do
  parts[#parts + 1] = "k" .. i .. ":" .. (i * i) % 97
end
local joined = table.concat(parts, ",")
print("concat", #joined, joined:sub(1, 40))

local sum = 0
for i = 1, #joined do sum = sum + joined:byte(i) end
print("bytes", sum)

local chars = {}
for i = 1, 5000 do chars[i] = string.char(65 + i % 26) end
local alphabet = table.concat(chars)
print("chars", alphabet:sub(1, 30), #alphabet)

local upper = 0
for i = 1, 3000 do
  local s = string.rep("ab", i % 20 + 1) .. tostring(i)
  upper = upper + #s:upper() + #s:sub(2, -2)
end
print("rep", upper)

local words = 0
local longest = ""
local text = string.rep("the quick brown fox jumps over the lazy dog ", 400)
for w in text:gmatch("%a+") do
  words = words + 1
  if #w > #longest then longest = w end
end
print("gmatch", words, longest)

local replaced, n = text:gsub("o", "0")
print("gsub", n, replaced:sub(1, 44))

local found = 0
for i = 1, 2000 do
  local s = "item-" .. i .. "-end"
  local a, b = s:find("-", 1, true)
  local num = tonumber(s:match("%d+"))
  found = found + a + b + num
end
print("find", found)

local fmt = {}
for i = 1, 2000 do
  fmt[#fmt + 1] = string.format("%05d|%-6s|%x|%.3f", i, "x" .. i % 10, i * 31, i / 7)
end
print("format", fmt[1], fmt[#fmt], #table.concat(fmt))

local rev = 0
for i = 1, 3000 do rev = rev + #(tostring(i):reverse() .. "") end
print("reverse", rev)

-- Many distinct strings: the interning table grows and the GC sweeps it.
local seen = {}
local distinct = 0
for i = 1, 50000 do
  local s = "s" .. (i % 12345)
  if not seen[s] then seen[s] = true; distinct = distinct + 1 end
end
print("intern", distinct)
