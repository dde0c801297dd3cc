"""``taskrace network``: what a task costs over a network (issue 11, point 4).

Real celery workers fetch tasks from a real (embedded) Redis; between them sits
workers.infra.latency_proxy, which delays every byte by RTT/2 each way (RTT 0: no proxy,
loopback). The harness reaches Redis directly, as if it stood beside it::

    harness --LPUSH, SUBSCRIBE--> Redis <--[ RTT/2 ]-- proxy <--[ RTT/2 ]-- worker -n N
                                   (0 ms)                  BRPOP, MULTI/EXEC x3, GET

For each workload and round-trip time it times whole batches (``tier.map``, from the
first message sent to the last result back) and reads the per-task cost as
``workers x wall / tasks``: worker-seconds per task (per call, for chunked tasks). A
worker that waits for k round trips per task, one after another, pays ``a + k x RTT``;
the fit (least squares on the relative error, every repeat a point) gives a and k, and
k is "round trips per task" as the workers experience them. ``INFO commandstats``
around each calibration batch says which commands the round trips are (taskrace.measuring.counting).

The proxy's own hop and the machine's timer slack add a little to the delay asked for
(~2.2 ms for "1 ms" here): each set of workers measures what its proxy really adds (PING
through it less PING direct), and the fit uses that. Task counts are chosen per point
from a calibration batch run first (also the warm-up), so that each point takes about
``--seconds`` whatever the RTT, with at least two tasks per worker. Every set of workers
is started once and kept up; each round of repeats visits every point, in alternating
order, so the repeats' spread includes the machine's drift. The scaling part runs the
same power-io work at every n (strong scaling) on local processes and on celery at RTT 0
and 5 ms, against sequential.
"""
