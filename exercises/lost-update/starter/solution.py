"""The bank's transfer: move money between two accounts, safely.

``transfer(accounts, locks, src, dst, amount)`` moves ``amount`` from account ``src`` to
account ``dst`` when ``src`` holds at least that much, and returns True; otherwise it
changes nothing and returns False.

* ``accounts``: the integer balances (a ``multiprocessing.Array`` underneath), shared by
  every thread or process that calls ``transfer`` at the same time: ``accounts[i]``
  reads one, ``accounts[i] = v`` writes one. Each of those is atomic; a read, a check
  and a write are three steps, and another transfer can run between any two of them.
* ``locks``: one lock per account (``locks[i]`` guards ``accounts[i]``), shared by every
  caller: ``threading.Lock`` on threads, ``multiprocessing.Lock`` on processes. Both work
  as ``with locks[i]:``.
"""


def transfer(accounts, locks, src: int, dst: int, amount: int) -> bool:
    # TODO(student): this is correct when one transfer runs at a time, and loses money
    # when several do: two transfers read the same balance and each writes its own result.
    # Hold the locks of both accounts from the first read to the last write. Careful:
    # transfers A->B and B->A run at once; if each takes "its" first lock, they can wait
    # on each other forever.
    balance = accounts[src]
    if balance < amount:
        return False  # not enough money: refused, nothing changes
    accounts[src] = balance - amount
    accounts[dst] = accounts[dst] + amount
    return True
