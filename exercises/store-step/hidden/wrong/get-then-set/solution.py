"""The two writes in one MULTI/EXEC, but the read before it, unwatched: another client
writes between the GET and the transaction, and its update is overwritten."""


def transfer(r, src: str, dst: str, amount: int) -> bool:
    balance, target = int(r.get(src)), int(r.get(dst))
    if balance < amount:
        return False
    with r.pipeline(transaction=True) as pipe:
        pipe.set(src, balance - amount)
        pipe.set(dst, target + amount)
        pipe.execute()
    return True
