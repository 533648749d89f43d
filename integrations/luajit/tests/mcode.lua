-- Machine-code areas: hundreds of distinct hot loops fill more than one area
-- (each a VirtualAlloc near the VM, flipped between PAGE_READWRITE and
-- PAGE_EXECUTE_READ), jit.flush() gives every area back (VirtualFree), and the
-- loops compiled again take new ones.
jit.opt.start("maxtrace=4000", "maxmcode=4096")

local function make(i)
  local src = string.format([[
    local k = %d
    return function(n)
      local s = 0
      for j = 1, n do
        if j %% (k %% 5 + 2) == 0 then s = s + j * k else s = s - (j %% 3) end
      end
      return s
    end
  ]], i)
  return loadstring(src)()
end

local fns = {}
for i = 1, 400 do fns[i] = make(i) end

local function run_all()
  local total = 0
  for i = 1, #fns do total = total + fns[i](300) end
  return total
end

print("first", run_all())
print("again", run_all())
jit.flush()
print("flushed", run_all())
print("final", run_all())

-- Keeps the compiled loops reachable after the script ends, so that their
-- traces are still there when the host looks at where their code lies.
KEEP_ALIVE = fns
