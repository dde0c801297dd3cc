"""Both locks held across the whole transfer, but taken source first: A->B holds A and
waits for B while B->A holds B and waits for A (a deadlock)."""


def transfer(accounts, locks, src: int, dst: int, amount: int) -> bool:
    with locks[src]:
        with locks[dst]:
            if accounts[src] < amount:
                return False
            accounts[src] -= amount
            accounts[dst] += amount
            return True
