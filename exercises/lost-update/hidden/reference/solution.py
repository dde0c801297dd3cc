"""The bank's transfer under the accounts' locks (the reference solution)."""


def transfer(accounts, locks, src: int, dst: int, amount: int) -> bool:
    # One global order (the lower account number first): two transfers that need the same
    # two locks ask for them in the same order, so neither can hold one while waiting for
    # the other's.
    first, second = sorted((src, dst))
    with locks[first], locks[second]:
        # From the read to the last write nobody else touches these two balances.
        if accounts[src] < amount:
            return False
        accounts[src] -= amount
        accounts[dst] += amount
        return True
