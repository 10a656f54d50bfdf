from __future__ import annotations

from dataclasses import dataclass

from crirt.api.listcache import ListCache


@dataclass
class Rec:
    id: str
    state: str


def test_reused_until_the_state_changes_and_pruned_when_mostly_gone() -> None:
    calls: list[str] = []

    def conv(r: Rec) -> tuple[str, str]:
        calls.append(r.id)
        return (r.id, r.state)

    cache: ListCache[Rec, tuple[str, str]] = ListCache(conv)
    a, b = Rec("a", "running"), Rec("b", "running")
    assert cache.items([a, b], 2) == [("a", "running"), ("b", "running")]
    assert cache.items([a, b], 2) == [("a", "running"), ("b", "running")]
    assert calls == ["a", "b"]
    b.state = "exited"
    assert cache.items([b], 2) == [("b", "exited")]
    assert calls == ["a", "b", "b"]
    many = [Rec(str(i), "x") for i in range(100)]
    cache.items(many, 100)
    cache.items([a], 1)  # 101 cached for 1 alive: cleared, then rebuilt on use
    cache.items([a], 1)
    assert calls[-1] == "a"
    assert calls.count("a") == 2
