"""Port-forward stream pairing and the legacy WebSocket channel layout."""

from __future__ import annotations

import pytest

from crirt.sansio import portforward as pf


def hdrs(stype: str, port: str = "80", rid: str | None = "0") -> dict[str, str]:
    h = {"streamtype": stype, "port": port}
    if rid is not None:
        h["requestid"] = rid
    return h


def test_pairing_by_request_id() -> None:
    # Given the table
    t = pf.PairTable()
    # When crictl opens error then data for request 0 and another error for request 1
    p = t.add(1, hdrs("error"), 0.0)
    assert not p.complete
    q = t.add(3, hdrs("error", rid="1"), 0.0)
    p2 = t.add(5, hdrs("data"), 0.0)
    # Then request 0 is complete and forgotten, request 1 waits
    assert p2 is p
    assert (p.complete, p.error_stream, p.data_stream, p.port) == (True, 1, 5, 80)
    assert len(t) == 1
    assert not q.complete


@pytest.mark.parametrize("data_first", [False, True])
def test_the_pair_goes_to_the_data_streams_port(data_first: bool) -> None:
    # The kubelet reads the port from the data stream's headers; a client whose two streams
    # disagree must reach the same port through crirt.
    t = pf.PairTable()
    streams = [(1, hdrs("error", port="81")), (3, hdrs("data", port="8080"))]
    for sid, h in reversed(streams) if data_first else streams:
        p = t.add(sid, h, 0.0)
    assert (p.complete, p.port) == (True, 8080)


def test_pairing_without_request_id_uses_stream_ids() -> None:
    t = pf.PairTable()
    t.add(7, hdrs("error", rid=None), 0.0)
    p = t.add(9, hdrs("data", rid=None), 0.0)
    assert p.complete
    assert p.request_id == "7"


@pytest.mark.parametrize(
    "headers",
    [
        {"streamtype": "data"},
        hdrs("data", port="0"),
        hdrs("data", port="65536"),
        hdrs("data", port="-1"),
        hdrs("data", port="http"),
        # Non-ASCII digits (str.isdigit() is true for them, int() refuses some), signs, spaces,
        # and more digits than int() converts.
        hdrs("data", port="\u00b2"),
        hdrs("data", port="\u0668\u0660"),
        hdrs("data", port="+80"),
        hdrs("data", port=" 80"),
        hdrs("data", port="9" * 5000),
        {"port": "80"},
        hdrs("stdin"),
    ],
)
def test_bad_streams_are_rejected(headers: dict[str, str]) -> None:
    with pytest.raises(pf.StreamRejected):
        pf.PairTable().add(1, headers, 0.0)


def test_port_parsing_is_ascii_decimal() -> None:
    assert pf.parse_port("00080") == 80
    assert pf.parse_port("65535") == 65535
    assert pf.parse_port("0" * 5000 + "80") == 80  # as Go's strconv.ParseUint
    for bad in ("\u00b2", "\uff18\uff10", "1_000", "0" * 5000 + "65536"):
        with pytest.raises(pf.StreamRejected):
            pf.parse_port(bad)
    with pytest.raises(pf.StreamRejected):
        pf.parse_ports(["80,\u00b2"])


def test_duplicate_type_is_rejected() -> None:
    t = pf.PairTable()
    t.add(1, hdrs("error"), 0.0)
    with pytest.raises(pf.StreamRejected):
        t.add(3, hdrs("error"), 0.0)


def test_expiry_and_drop() -> None:
    t = pf.PairTable()
    t.add(1, hdrs("error", rid="a"), 0.0)
    t.add(3, hdrs("error", rid="b"), 20.0)
    old = t.expired(31.0, 30.0)
    assert [p.request_id for p in old] == ["a"]
    t.drop_stream(3)
    assert len(t) == 0


def test_legacy_websocket_layout() -> None:
    assert (pf.data_channel(1), pf.error_channel(1)) == (2, 3)
    assert pf.port_prefix(8080) == b"\x90\x1f"
    assert pf.parse_ports(["80,443", "8080"]) == [80, 443, 8080]
    assert pf.error_text(80, "refused") == b"error forwarding port 80 to pod: refused"


# ----- bounded work (issue 15) -------------------------------------------------------------------


def _reset_work(n: int, monkeypatch: pytest.MonkeyPatch) -> int:
    """Pair-stream reads to open ``n`` half pairs and then reset each of them."""
    reads = [0]

    class CountingPair(pf.Pair):
        def __getattribute__(self, name: str) -> object:
            if name in ("data_stream", "error_stream"):
                reads[0] += 1
            return super().__getattribute__(name)

    monkeypatch.setattr(pf, "Pair", CountingPair)
    t = pf.PairTable(max_pending=n)
    for i in range(n):
        t.add(2 * i + 1, hdrs("error", rid=str(i)), 0.0)
    for i in range(n):
        t.drop_stream(2 * i + 1)
    assert len(t) == 0
    return reads[0]


def test_resets_cost_linear_work(monkeypatch: pytest.MonkeyPatch) -> None:
    # Every RST_STREAM scanned every pending pair: n resets cost n² reads.
    n = 500
    small, big = _reset_work(n, monkeypatch), _reset_work(2 * n, monkeypatch)
    assert 1.8 < big / small < 2.2, (small, big)


def test_pending_pairs_are_capped() -> None:
    t = pf.PairTable(max_pending=2)
    t.add(1, hdrs("error", rid="a"), 0.0)
    t.add(3, hdrs("error", rid="b"), 0.0)
    with pytest.raises(pf.StreamRejected, match="pending"):
        t.add(5, hdrs("error", rid="c"), 0.0)
    # The other half of a pending pair is still welcome, and completing a pair makes room.
    assert t.add(7, hdrs("data", rid="a"), 0.0).complete
    t.add(9, hdrs("error", rid="c"), 0.0)
    # So does a reset.
    t.drop_stream(3)
    t.add(11, hdrs("error", rid="d"), 0.0)
    assert len(t) == 2
    assert pf.PairTable().max_pending == pf.MAX_PENDING_PAIRS


def test_expired_pairs_are_forgotten_with_their_streams() -> None:
    t = pf.PairTable()
    t.add(1, hdrs("error", rid="a"), 0.0)
    t.add(3, hdrs("data", rid="b"), 10.0)
    t.add(5, hdrs("error", rid="c"), 20.0)
    assert [p.request_id for p in t.expired(41.0, 30.0)] == ["a", "b"]
    assert [p.request_id for p in t.expired(41.0, 30.0)] == []
    t.drop_stream(1)  # no longer known: nothing happens
    assert len(t) == 1
    # A late second half of an expired pair starts a new pair, not a stale one.
    p = t.add(7, hdrs("error", rid="b"), 42.0)
    assert (p.data_stream, p.error_stream, p.created_at) == (0, 7, 42.0)
