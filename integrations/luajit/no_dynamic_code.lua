-- What a program sees of a host with no dynamic code, for stock LuaJIT: run.sh
-- runs this (luajit -e) before each program of tests/ to get the output the
-- hostmem LuaJIT must print under HOSTMEM_CODE_NONE.
--
-- Without the JIT every result is the same, so nothing changes there. A
-- callback is different: ffi.cast of a Lua function needs a trampoline in
-- executable memory, which the manager refuses, and the patched
-- lj_ccallback.c raises LuaJIT's own error at that ffi.cast. Here ffi.cast
-- raises the same message at the same place (error level 2: the caller's line).
-- Programs in tests/ make callbacks with ffi.cast only; an implicit conversion
-- of a function argument would need the same here.
local ffi = require("ffi")
local cast = ffi.cast
ffi.cast = function(ctype, init)
  if type(init) == "function" then
    error("runtime code generation failed, restricted kernel?", 2)
  end
  return cast(ctype, init)
end
