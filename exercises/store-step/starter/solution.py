"""The bank's transfer, on Redis: many clients, no shared memory, no lock you could hold.

``transfer(r, src, dst, amount)`` moves ``amount`` from the account whose key is ``src``
to the one whose key is ``dst`` when ``src`` holds at least that much, and returns True;
otherwise it changes nothing and returns False.

* ``r``: a ``redis.Redis`` client of your own (``decode_responses=True``: ``r.get`` gives
  a str). Every other client (threads, processes) has its own, on the same Redis.
* ``src``, ``dst``: key names; each holds an integer balance as a Redis string.
"""


def transfer(r, src: str, dst: str, amount: int) -> bool:
    # TODO(student): three round trips (GET, then SET, SET) and other clients' commands
    # can run between any two of them: two clients read the same balance, and one
    # update is lost. Make the read, the check and both writes ONE step of Redis:
    # a Lua script (r.register_script(...)), which Redis runs with nothing in between,
    # or WATCH/MULTI/EXEC, retried when EXEC fails because a watched key changed.
    balance = int(r.get(src))
    if balance < amount:
        return False  # not enough money: refused, nothing changes
    r.set(src, balance - amount)
    r.set(dst, int(r.get(dst)) + amount)
    return True
