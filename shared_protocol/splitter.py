"""Splitting a byte stream at a delimiter into bounded chunks: the common core of the stream decoders."""


class Splitter:
    """``split(data)`` returns the non-empty chunks completed by a delimiter in ``data``.

    A chunk longer than ``max_len`` is dropped whole, up to the next delimiter (``overlong`` counts such
    chunks, ``dropped_bytes`` their bytes), so memory stays bounded whatever arrives and the stream
    resynchronises at the next delimiter."""

    def __init__(self, delimiter: int, max_len: int) -> None:
        self._delim = bytes([delimiter])
        self._max = max_len
        self._buf = bytearray()
        self._skipping = False
        self.overlong = 0
        self.dropped_bytes = 0

    def split(self, data: bytes) -> "list[bytes]":
        chunks: list[bytes] = []
        start = 0
        n = len(data)
        while start < n:
            end = data.find(self._delim, start)
            piece_end = n if end < 0 else end
            if self._skipping:
                self.dropped_bytes += piece_end - start
            elif len(self._buf) + piece_end - start > self._max:
                self._skipping = True
                self.overlong += 1
                self.dropped_bytes += len(self._buf) + piece_end - start
                self._buf = bytearray()
            else:
                self._buf += data[start:piece_end]
            if end < 0:
                break
            if self._skipping:
                self._skipping = False
            elif self._buf:
                chunks.append(bytes(self._buf))
                self._buf = bytearray()
            start = end + 1
        return chunks
