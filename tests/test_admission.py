"""The ingress's admission limits as plain classes: per-account and total uploads, the memory
budget, and one request's share given back exactly once."""

from serve_app.admission import Admission, MemoryBudget, UploadGate


def test_gate_limits_one_account_before_it_limits_everyone():
    gate = UploadGate(per_key=2, total=3)
    assert gate.enter("a") is None and gate.enter("a") is None
    refused = gate.enter("a")
    assert refused.status == 429 and refused.slug == "too-many-uploads"
    assert gate.enter("b") is None
    full = gate.enter("c")
    assert full.status == 503 and full.slug == "busy"
    gate.leave("a")
    assert gate.enter("c") is None and len(gate) == 3


def test_budget_refuses_what_does_not_fit_and_an_admission_gives_back_once():
    gate, budget = UploadGate(per_key=5, total=5), MemoryBudget(100)
    assert gate.enter("a") is None
    one = Admission(gate, "a", budget)
    assert one.take(60) is None and one.take(30) is None
    assert budget.held == 90
    assert gate.enter("b") is None
    other = Admission(gate, "b", budget)
    assert other.take(20).status == 503 and budget.held == 90  # a refused take holds nothing
    assert other.take(10) is None and budget.held == 100
    other.release()
    one.release()
    one.release()
    assert budget.held == 0 and len(gate) == 0
