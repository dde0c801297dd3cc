"""Every access under its account's lock, but the lock is let go between the read and
the write: another transfer writes in between and one of the two updates is lost."""


def transfer(accounts, locks, src: int, dst: int, amount: int) -> bool:
    with locks[src]:
        balance = accounts[src]
    if balance < amount:
        return False
    with locks[src]:
        accounts[src] = balance - amount
    with locks[dst]:
        accounts[dst] = accounts[dst] + amount
    return True
