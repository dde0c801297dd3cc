"""The transfer as one Lua script (the reference solution): Redis runs a script whole,
with no other client's command in between, so the check and both writes are one step."""

TRANSFER = """
local amount = tonumber(ARGV[1])
if tonumber(redis.call('GET', KEYS[1])) < amount then
  return 0
end
redis.call('DECRBY', KEYS[1], amount)
redis.call('INCRBY', KEYS[2], amount)
return 1
"""


def transfer(r, src: str, dst: str, amount: int) -> bool:
    # register_script only hashes the text; the call sends EVALSHA (EVAL the first time).
    script = r.register_script(TRANSFER)
    return script(keys=[src, dst], args=[amount]) == 1
