"""The dispatcher's queue as a plain class: order, FIFO, aging, bounded depth, cancellation."""

import asyncio

import pytest

from serve_app.queue import PriorityJobQueue, QueueFull


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def drain(q):
    out = []
    while (e := q.pop()) is not None:
        out.append(e.job_id)
    return out


def test_priority_order_and_fifo_within_a_level():
    clock = Clock()
    q = PriorityJobQueue(clock=clock)
    for job, prio in [("L0", "low"), ("L1", "low"), ("N0", "normal"), ("H0", "high"), ("L2", "low"),
                      ("N1", "normal"), ("H1", "high")]:
        clock.t += 1
        q.put(job, prio)
    assert drain(q) == ["H0", "H1", "N0", "N1", "L0", "L1", "L2"]


def test_aging_lifts_a_waiting_job_one_level_per_period():
    clock = Clock()
    q = PriorityJobQueue(aging_s=10, clock=clock)
    q.put("free", "low")
    clock.t = 9
    q.put("pro", "normal")
    assert q.position("free") == 1
    clock.t = 10  # free has waited one period: ranks as normal, and arrived first
    assert q.position("free") == 0
    q.put("vip", "high")
    assert drain(q) == ["vip", "free", "pro"]


def test_aged_free_job_is_not_starved_by_a_flood():
    clock = Clock()
    q = PriorityJobQueue(aging_s=5, clock=clock)
    q.put("free", "low")
    served = []
    for i in range(20):  # a steady flood of pro jobs, one served per second
        clock.t += 1
        q.put(f"pro{i}", "normal")
        served.append(q.pop().job_id)
    assert "free" in served and served.index("free") <= 6


def test_bounded_depth_per_level():
    q = PriorityJobQueue(max_depth=2)
    q.put("a", "low")
    q.put("b", "low")
    with pytest.raises(QueueFull) as info:
        q.put("c", "low")
    assert info.value.level == "low"
    q.put("d", "high")  # other levels are unaffected
    assert q.depth() == {"high": 1, "normal": 0, "low": 2}


def test_cancel_removes_and_positions_update():
    q = PriorityJobQueue()
    for j in ("a", "b", "c"):
        q.put(j, "normal")
    assert q.cancel("b").job_id == "b" and q.cancel("b") is None
    assert [q.position(j) for j in ("a", "c")] == [0, 1] and q.position("b") is None
    assert len(q) == 2


def test_get_waits_for_work():
    async def main():
        q = PriorityJobQueue()
        getter = asyncio.create_task(q.get())
        await asyncio.sleep(0.01)
        assert not getter.done()
        q.put("x", "low")
        return (await asyncio.wait_for(getter, 1)).job_id

    assert asyncio.run(main()) == "x"


def test_a_rebuilt_job_keeps_its_arrival_order_and_may_pass_the_depth_bound():
    clock = Clock()
    q = PriorityJobQueue(max_depth=1, aging_s=None, clock=clock)
    clock.t = 100
    q.put("late", "low")
    with pytest.raises(QueueFull):
        q.put("other", "low")
    q.put("early", "low", enqueued=50, force=True)  # from its record: it arrived first
    q.put("vip", "high", enqueued=90, force=True)
    assert [q.pop().job_id for _ in range(3)] == ["vip", "early", "late"]
