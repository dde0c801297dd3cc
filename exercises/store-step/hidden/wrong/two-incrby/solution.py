"""DECRBY and INCRBY are each atomic and never lose an update, but the balance check is
a GET before them: two clients both see enough money and both take it."""


def transfer(r, src: str, dst: str, amount: int) -> bool:
    if int(r.get(src)) < amount:
        return False
    r.decrby(src, amount)
    r.incrby(dst, amount)
    return True
