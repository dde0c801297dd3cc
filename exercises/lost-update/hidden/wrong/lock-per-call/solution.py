"""A lock made inside transfer: every call has its own, so no two calls ever wait on
each other and the lock protects nothing."""
import threading


def transfer(accounts, locks, src: int, dst: int, amount: int) -> bool:
    lock = threading.Lock()
    with lock:
        balance = accounts[src]
        if balance < amount:
            return False
        accounts[src] = balance - amount
        accounts[dst] = accounts[dst] + amount
        return True
