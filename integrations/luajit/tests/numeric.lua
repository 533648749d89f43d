-- Numeric kernels: floating-point arithmetic, math library calls the JIT
-- inlines, integer-valued doubles, bit operations.
local bit = require("bit")

local function mandelbrot(size, iterations)
  local inside = 0
  for y = 0, size - 1 do
    local ci = 2 * y / size - 1
    for x = 0, size - 1 do
      local cr = 2.5 * x / size - 2
      local zr, zi = 0.0, 0.0
      local escaped = false
      for _ = 1, iterations do
        local zr2, zi2 = zr * zr, zi * zi
        if zr2 + zi2 > 4 then escaped = true; break end
        zi = 2 * zr * zi + ci
        zr = zr2 - zi2 + cr
      end
      if not escaped then inside = inside + 1 end
    end
  end
  return inside
end
print("mandelbrot", mandelbrot(160, 60))

local function nbody_energy(steps)
  local bodies = {
    {x = 0, y = 0, z = 0, vx = 0, vy = 0, vz = 0, m = 39.47},
    {x = 4.84, y = -1.16, z = -0.10, vx = 0.606, vy = 2.81, vz = -0.02, m = 0.037},
    {x = 8.34, y = 4.12, z = -0.40, vx = -1.01, vy = 1.82, vz = 0.008, m = 0.011},
    {x = 12.89, y = -15.11, z = -0.22, vx = 1.08, vy = 0.868, vz = -0.01, m = 0.0017},
    {x = 15.37, y = -25.91, z = 0.179, vx = 0.979, vy = 0.594, vz = -0.034, m = 0.002},
  }
  local n = #bodies
  local dt = 0.01
  for _ = 1, steps do
    for i = 1, n do
      local bi = bodies[i]
      for j = i + 1, n do
        local bj = bodies[j]
        local dx, dy, dz = bi.x - bj.x, bi.y - bj.y, bi.z - bj.z
        local d2 = dx * dx + dy * dy + dz * dz
        local mag = dt / (d2 * math.sqrt(d2))
        bi.vx = bi.vx - dx * bj.m * mag
        bi.vy = bi.vy - dy * bj.m * mag
        bi.vz = bi.vz - dz * bj.m * mag
        bj.vx = bj.vx + dx * bi.m * mag
        bj.vy = bj.vy + dy * bi.m * mag
        bj.vz = bj.vz + dz * bi.m * mag
      end
    end
    for i = 1, n do
      local b = bodies[i]
      b.x = b.x + dt * b.vx
      b.y = b.y + dt * b.vy
      b.z = b.z + dt * b.vz
    end
  end
  local e = 0
  for i = 1, n do
    local b = bodies[i]
    e = e + 0.5 * b.m * (b.vx * b.vx + b.vy * b.vy + b.vz * b.vz)
  end
  return e
end
print("nbody", string.format("%.9f", nbody_energy(20000)))

local function sieve(n)
  local composite = {}
  local count = 0
  for i = 2, n do
    if not composite[i] then
      count = count + 1
      for j = i * i, n, i do composite[j] = true end
    end
  end
  return count
end
print("primes", sieve(300000))

local function fib(n)
  local a, b = 0, 1
  for _ = 1, n do a, b = b, a + b end
  return a
end
local fsum = 0
for i = 1, 5000 do fsum = fsum + fib(i % 70) % 1000 end
print("fib", fsum)

local h = 0
for i = 1, 200000 do
  h = bit.bxor(bit.rol(h, 5), i)
  h = bit.band(h + bit.lshift(i, 3), 0x7fffffff)
end
print("bits", h, bit.tohex(h))

local s = 0
for i = 1, 100000 do
  s = s + math.floor(math.sin(i) * 1000) + math.abs(i % 13 - 6) + math.max(i % 7, 3)
end
print("math", s)

local x = 1.0
for i = 1, 100000 do x = x * 1.0000001 + 1 / i end
print("float", string.format("%.6f", x))
