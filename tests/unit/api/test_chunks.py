from crirt.api.chunks import CHUNK, chunked


def test_chunks_of_at_most_size_and_none_for_nothing() -> None:
    assert list(chunked([], 2)) == []
    assert list(chunked([1, 2, 3, 4, 5], 2)) == [[1, 2], [3, 4], [5]]
    assert [len(c) for c in chunked(list(range(7000)))] == [CHUNK, CHUNK, 1000]
