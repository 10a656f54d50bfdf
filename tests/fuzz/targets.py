"""The fuzz targets: one function per parser of untrusted bytes, ``bytes -> None``.

Each feeds its input to the parser and lets only the errors the parser documents pass (the
``ProtocolError`` family, the ValueError subclasses a module declares, ``crirt.errors``); any
other exception, or a broken invariant (an ``assert``), is a finding. Plain Python without
atheris: ``tests/fuzz/fuzz.py`` runs them under atheris (coverage-guided), and
``tests/unit/test_fuzz_corpus.py`` replays the committed corpus through them.

Three helpers widen what a mutating fuzzer reaches:

* ``expand``: an input that starts with ``TEMPLATE`` is ``head, unit1, mid, unit2, tail`` (split
  on ``0xFE``) with a 16-bit count: the parser gets ``head + unit1*n + mid + unit2*n + tail``.
  A few mutated bytes thus become 5,000 nested brackets or a 4,301-digit number, which byte
  mutations alone never build.
* ``_chunks``: the same bytes fed in pieces (sizes drawn from the input's first byte) must give
  what they give in one piece: the incremental parsers may not depend on how TCP splits them.
* ``_retyped_docs``: a JSON (or TOML) document that parses is tried again with one value, at the
  top or one level down, of each other type: ``"ips": 1``, ``search = 1``, which valid JSON or
  TOML rarely becomes by byte mutation.
"""

from __future__ import annotations

import contextlib
import io
import json
import random
import struct
import tarfile
import tomllib
import zlib
from collections.abc import Callable, Iterator
from typing import Any

from crirt.errors import ImageNotFound, InvalidArgument, RegistryError
from crirt.registry.config import RegistriesConfig
from crirt.sansio import (
    authfile,
    cgroupstats,
    challenge,
    cni,
    crilog,
    http1,
    manifest,
    portforward,
    reference,
    remotecommand,
    spdy,
    tarplan,
    websocket,
)
from crirt.sansio.errors import LocalProtocolError, ProtocolError
from crirt.storage import layers

TEMPLATE = b"\xffR"
MAX_REPEAT = 5000
MAX_EXPANDED = 1 << 20


def expand(data: bytes) -> bytes:
    """``data`` itself, or the expansion of a template input (see the module docstring)."""
    if not data.startswith(TEMPLATE) or len(data) < 4:
        return data
    count = min(int.from_bytes(data[2:4], "big"), MAX_REPEAT)
    parts = data[4:].split(b"\xfe", 4)
    parts += [b""] * (5 - len(parts))
    head, unit1, mid, unit2, tail = parts
    per = len(unit1) + len(unit2)
    if per and per * count > MAX_EXPANDED:
        count = MAX_EXPANDED // per
    return head + unit1 * count + mid + unit2 * count + tail


def _chunks(data: bytes, seed: int) -> Iterator[bytes]:
    """``data`` in pieces of 1..64 bytes (seed 0: byte by byte)."""
    rng = random.Random(seed)
    i = 0
    while i < len(data):
        n = 1 if seed == 0 else rng.randint(1, 64)
        yield data[i : i + n]
        i += n


# Values of every JSON type but the one a parser expects somewhere (see ``_retyped``).
_OTHER_TYPES: tuple[object, ...] = (None, 1, "x", [1], {"a": 1})


def _retyped(body: bytes, limit: int = 40) -> list[bytes]:
    """Variants of a JSON object with one value (at the top or one level down) replaced by a
    value of another type: the type confusions a byte mutator rarely builds in valid JSON."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        return []
    return [json.dumps(d).encode() for d in _retyped_docs(doc, _OTHER_TYPES, limit)]


def _retyped_docs(doc: object, others: tuple[object, ...], limit: int) -> Iterator[object]:
    """``doc`` (a dict) again and again, each time with one value of another type."""
    if not isinstance(doc, dict):
        return
    n = 0
    slots: list[tuple[dict[str, Any], str]] = []
    for key, value in list(doc.items())[:12]:
        slots.append((doc, key))
        inner = value[0] if isinstance(value, list) and value else value
        if isinstance(inner, dict):
            slots += [(inner, k) for k in list(inner)[:6]]
    for holder, key in slots:
        old = holder[key]
        for alt in others:
            if type(alt) is type(old):
                continue
            holder[key] = alt
            yield doc
            n += 1
            if n >= limit:
                holder[key] = old
                return
        holder[key] = old


def _toml(doc: dict[str, Any]) -> str:
    """A TOML document of ``doc`` (nested tables inline); what tomllib reads back as ``doc``."""

    def value(v: object) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v) if v == v else "nan"  # inf and -inf are TOML too
        if isinstance(v, str):
            return json.dumps(v, ensure_ascii=False)  # TOML has no surrogate escapes
        if isinstance(v, list):
            return "[" + ", ".join(value(i) for i in v) + "]"
        if isinstance(v, dict):
            return "{" + ", ".join(f"{value(k)} = {value(i)}" for k, i in v.items()) + "}"
        return str(getattr(v, "isoformat", lambda: v)())

    return "".join(f"{value(k)} = {value(v)}\n" for k, v in doc.items())


def _text(data: bytes) -> str:
    # What crosses gRPC or is read as text is valid UTF-8; anything else is replaced.
    return data.decode("utf-8", "replace")


# ----- SPDY/3.1 ---------------------------------------------------------------------------------


def _spdy_frames(body: bytes) -> bytes:
    """Records ``type, flags, stream id (4), length (2), payload`` as SPDY frames; the header
    blocks of SYN_STREAM/SYN_REPLY/HEADERS are compressed with one client-side zlib context, from
    ``name=value`` lines (type bit 0x80 clear) or raw block bytes (set)."""
    z = zlib.compressobj(9, zlib.DEFLATED, 11, 4, zdict=spdy.HEADER_DICTIONARY)
    out = []
    i = 0
    while i + 8 <= len(body):
        ftype, flags = body[i], body[i + 1]
        (sid,) = struct.unpack_from(">I", body, i + 2)
        (n,) = struct.unpack_from(">H", body, i + 6)
        payload = body[i + 8 : i + 8 + n]
        i += 8 + n
        t = ftype & 0x0F
        if t == 0:
            out.append(struct.pack(">II", sid & spdy.MAX_STREAM_ID, (flags << 24) | len(payload)))
            out.append(payload)
            continue
        if t in (spdy.SYN_STREAM, spdy.SYN_REPLY, spdy.HEADERS):
            if ftype & 0x80:
                raw = payload
            else:
                lines = [ln.partition("=") for ln in payload.decode("latin-1").split("\n")]
                raw = spdy.encode_header_block({k: v for k, _, v in lines if k})
            block = z.compress(raw) + z.flush(zlib.Z_SYNC_FLUSH)
            head = struct.pack(">I", sid) + (b"\x00\x00\x00\x00\x00\x00" if t == 1 else b"")
            payload = head + block
        out.append(struct.pack(">HHI", 0x8003, t, (flags << 24) | len(payload)) + payload)
    return b"".join(out)


def _spdy_run(pieces: Iterator[bytes], client: bool) -> tuple[list[Any], str]:
    conn = spdy.Connection(client=client)
    events: list[Any] = []

    def drain() -> bool:
        while True:
            ev = conn.next_event()
            if ev is spdy.NEED_DATA:
                return True
            events.append(ev)
            if isinstance(ev, spdy.ConnectionClosed):
                return False
            # Answer as the server does, so the sending side of the state runs too.
            if isinstance(ev, spdy.SynStream) and not ev.unidirectional:
                if conn.is_open(ev.stream_id):
                    conn.send(spdy.SynReply(ev.stream_id, {"x": "y"}))
                    conn.send(spdy.Data(ev.stream_id, b"d", fin=False))
            elif isinstance(ev, spdy.Ping):
                conn.send(ev)
            elif isinstance(ev, spdy.StreamError):
                conn.send(spdy.RstStream(ev.stream_id, ev.status))

    try:
        for piece in pieces:
            if piece:  # b"" is the end of the transport
                conn.receive_data(piece)
                drain()
        conn.receive_data(b"")
        drain()
    except LocalProtocolError:
        raise  # what the harness sent was refused: a finding too
    except ProtocolError as exc:
        return events, type(exc).__name__
    return events, ""


def fuzz_spdy(data: bytes) -> None:
    """spdy.Connection, server and client side: raw bytes, or frames built from records."""
    if not data:
        return
    mode, body = data[0], data[1:]
    if mode & 2:
        body = _spdy_frames(body)
    whole = _spdy_run(iter([body]), client=bool(mode & 1))
    split = _spdy_run(_chunks(body, mode >> 2), client=bool(mode & 1))
    assert whole == split, (whole, split)
    # A header block we encode decodes to itself.
    text = data.decode("latin-1").lower()
    lines = (ln.partition("=") for ln in text.split("\n"))
    headers = {k: v for k, _, v in lines if k and k.isascii()}
    assert spdy.decode_header_block(spdy.encode_header_block(headers)) == headers


# ----- WebSocket --------------------------------------------------------------------------------


def _ws_frames(body: bytes) -> bytes:
    """Records ``fin|rsv|opcode, length, payload`` as masked client frames."""
    out = []
    i = 0
    while i + 2 <= len(body):
        b0, n = body[i], body[i + 1]
        payload = body[i + 2 : i + 2 + n]
        i += 2 + n
        out.append(
            websocket.encode_client_frame(b0 & 0x0F, payload, b"\x37\xfa\x21\x3d", bool(b0 & 0x80))
        )
    return b"".join(out)


def _ws_run(pieces: Iterator[bytes]) -> tuple[list[Any], str]:
    conn = websocket.ServerConnection(max_message=4096)
    events: list[Any] = []

    def drain() -> bool:
        while True:
            ev = conn.next_event()
            if ev is websocket.NEED_DATA:
                return True
            events.append(ev)
            if isinstance(ev, websocket.ConnectionClosed):
                return False
            if conn.close_sent:
                continue
            if isinstance(ev, websocket.Ping):
                conn.send(websocket.Pong(ev.data))
            elif isinstance(ev, websocket.Close):
                conn.send(websocket.Close(ev.code))
            elif isinstance(ev, websocket.Message):
                assert len(ev.data) <= conn.max_message
                if ev.text:
                    ev.data.decode()
                conn.send(ev)

    try:
        for piece in pieces:
            if piece:  # b"" is the end of the transport
                conn.receive_data(piece)
                drain()
        conn.receive_data(b"")
        drain()
    except websocket.FrameError as exc:
        return events, f"{exc.close_code}"
    return events, ""


def fuzz_websocket(data: bytes) -> None:
    """websocket.ServerConnection: raw bytes, or masked frames built from records."""
    if not data:
        return
    mode, body = data[0], data[1:]
    if mode & 1:
        body = _ws_frames(body)
    whole = _ws_run(iter([body]))
    split = _ws_run(_chunks(body, mode >> 1))
    assert whole == split, (whole, split)
    key = body[:4].ljust(4, b"\x00")
    assert websocket.mask(websocket.mask(body, key), key) == body


# ----- HTTP/1 request head ----------------------------------------------------------------------


def fuzz_http1(data: bytes) -> None:
    """http1.parse_request_head and HeadReader (which must agree however the head is split),
    then what the streaming server reads from a request: path, query, handshake, ports."""
    if not data:
        return
    seed, body = data[0], expand(data[1:])
    max_head = 512
    whole: tuple[http1.Request, bytes] | int | None
    try:
        got = http1.parse_request_head(body, max_head)
        whole = None if got is None else (got[0], body[got[1] :])
    except http1.BadRequest as exc:
        whole = exc.status
    reader = http1.HeadReader(max_head)
    split: tuple[http1.Request, bytes] | int | None = None
    try:
        for piece in _chunks(body, seed):
            if (split := reader.receive_data(piece)) is not None:
                break
    except http1.BadRequest as exc:
        split = exc.status
    if isinstance(whole, tuple) and isinstance(split, tuple):
        assert whole[0] == split[0], (whole, split)
        assert whole[1].startswith(split[1]), (whole, split)
    else:
        assert whole == split, (whole, split)
    if not isinstance(whole, tuple):
        return
    req = whole[0]
    _ = req.path.strip("/").split("/")
    query = req.query
    with contextlib.suppress(websocket.HandshakeError):
        websocket.check_handshake(req.header_map())
    try:
        ports = portforward.parse_ports(query.get("port", []))
        assert all(0 < p <= 0xFFFF for p in ports)
    except portforward.StreamRejected:
        pass
    offered = websocket.split_header_list(req.values("x-stream-protocol-version"))
    remotecommand.negotiate(offered, remotecommand.SPDY_PROTOCOLS)


# ----- remote-command resize and channels -------------------------------------------------------


def _resize_run(pieces: Iterator[bytes]) -> tuple[list[tuple[int, int]], bool]:
    dec = remotecommand.ResizeDecoder()
    out: list[tuple[int, int]] = []
    try:
        for piece in pieces:
            out += dec.feed(piece)
    except remotecommand.ResizeError:
        return out, True
    return out, False


def fuzz_resize(data: bytes) -> None:
    """remotecommand.ResizeDecoder (whole and in pieces), decode_channel, encode_size."""
    if not data:
        return
    seed, body = data[0], expand(data[1:])
    whole, whole_err = _resize_run(iter([body]))
    split, split_err = _resize_run(_chunks(body, seed))
    # Only the last complete object of a feed is decoded (the ones before are superseded): in
    # pieces, more objects are decoded, so more may be refused, and the last size must agree.
    if whole_err:
        assert split_err, (whole, split)
    elif not split_err:
        assert whole[-1:] == split[-1:], (whole, split)
    assert len(whole) <= 1
    for w, h in split:
        assert 0 <= w <= 0xFFFF
        assert 0 <= h <= 0xFFFF
    for protocol in (remotecommand.V5, remotecommand.V4, remotecommand.BASE64_V4):
        for text in (False, True):
            with contextlib.suppress(remotecommand.ChannelError):
                remotecommand.decode_channel(protocol, body, text)
    if len(body) >= 4:
        w, h = struct.unpack_from(">HH", body)
        assert remotecommand.ResizeDecoder().feed(remotecommand.encode_size(w, h)) == [(w, h)]


# ----- port-forward -----------------------------------------------------------------------------


def fuzz_portforward(data: bytes) -> None:
    """portforward.PairTable fed ``x|port|streamtype|requestid`` lines, one stream each (``!``
    resets an earlier stream, ``~`` expires old pairs, ``-`` omits a header), parse_port(s)."""
    table = portforward.PairTable(max_pending=4)
    for now, line in enumerate(_text(data).split("\n")):
        try:
            port = portforward.parse_port(line)
            assert 0 < port <= 0xFFFF
            assert portforward.parse_port(str(port)) == port
        except portforward.StreamRejected:
            pass
        with contextlib.suppress(portforward.StreamRejected):
            portforward.parse_ports([line])
        if line.startswith("!"):  # reset the stream of an earlier line
            table.drop_stream(2 * (sum(line.encode()) % (now + 1)) + 1)
            continue
        if line.startswith("~"):
            for pair in table.expired(float(now), 2.0):
                assert now - pair.created_at >= 2.0
            continue
        # The client's stream ids: odd, increasing (the SPDY layer refuses any other).
        fields = line.split("|")
        sid = 2 * now + 1
        headers = {
            name: value
            for name, value in zip(
                (portforward.HEADER_PORT, portforward.HEADER_STREAM_TYPE, "requestid"),
                fields[1:],
                strict=False,
            )
            if value != "-"
        }
        try:
            pair = table.add(sid, headers, float(now))
            if not pair.complete:  # a complete pair keeps the port of its first stream
                assert pair.port == portforward.parse_port(headers.get("port"))
        except portforward.StreamRejected:
            pass
        assert len(table) <= table.max_pending


# ----- image manifests, indexes, configs --------------------------------------------------------

_CONTENT_TYPES = (None, *manifest.MANIFEST_MEDIA_TYPES, "application/json", "text/plain; x=y")


def fuzz_manifest(data: bytes) -> None:
    """manifest.parse_manifest (with each Content-Type), select_platform, parse_image_config."""
    if not data:
        return
    ct, body = _CONTENT_TYPES[data[0] % len(_CONTENT_TYPES)], expand(data[1:])
    for variant in (body, *_retyped(body)):
        _manifest_one(variant, ct)


def _manifest_one(body: bytes, ct: str | None) -> None:
    try:
        doc = manifest.parse_manifest(body, ct)
        if isinstance(doc, manifest.Index):
            for plat in (("linux", "amd64", ""), ("linux", "arm", "v7")):
                try:
                    d = manifest.select_platform(doc, *plat)
                    assert d.platform is not None
                    assert d.platform.os == plat[0]
                except ImageNotFound:
                    pass
        else:
            assert all(reference.validate_digest(d.digest) for d in doc.layers)
    except InvalidArgument:
        pass
    try:
        cfg = manifest.parse_image_config(body)
        manifest.parse_image_user(cfg.user)
    except InvalidArgument:
        pass


# ----- image references -------------------------------------------------------------------------


def fuzz_reference(data: bytes) -> None:
    """reference.parse (normalised or not) and parse_normalized; a parsed reference printed
    parses back to itself."""
    s = _text(data)
    for normalize in (True, False):
        try:
            ref = reference.parse(s, normalize=normalize)
        except InvalidArgument:
            continue
        assert reference.parse(str(ref), normalize=normalize) == ref, (s, ref)
        assert ref.identifier
        # distribution/reference's grammar is ASCII (its \w is [a-zA-Z0-9_]); a reference
        # becomes a registry URL path.
        assert str(ref).isascii(), (s, ref)
    try:
        ref = reference.parse_normalized(s)
        assert reference.parse_normalized(str(ref)) == ref, (s, ref)
        assert not reference.is_short_name(str(ref)) or ref.domain == reference.DEFAULT_DOMAIN
    except InvalidArgument:
        pass
    with contextlib.suppress(InvalidArgument):
        assert reference.validate_digest(s) == s
    reference.is_short_name(s)
    reference.split_name(s)
    reference.is_image_id(s)
    reference.is_image_id_prefix(s)


# ----- layer tar entries ------------------------------------------------------------------------

_TYPES = list(tarplan.EntryType)
_TAR_TYPES = [*list(layers._TAR_TYPES), tarfile.GNUTYPE_LONGNAME, b"x", b"Z"]


class _Reader:
    """Consumes the fuzz input field by field (zeros once it runs out)."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def num(self, n: int) -> int:
        b = self.data[self.pos : self.pos + n]
        self.pos += n
        return int.from_bytes(b, "big")

    def text(self) -> str:
        n = self.num(1)
        b = self.data[self.pos : self.pos + n]
        self.pos += n
        return b.decode("utf-8", "surrogateescape")

    @property
    def left(self) -> bool:
        return self.pos < len(self.data)


def _check_ops(ops: list[tarplan.Op], max_depth: int) -> None:
    for op in ops:
        paths = [op.path] + ([op.target] if isinstance(op, tarplan.MakeHardlink) else [])
        for path in paths:
            assert len(path) <= max_depth
            assert all(c not in ("", ".", "..") and "/" not in c and "\x00" not in c for c in path)
        meta = getattr(op, "meta", None)
        if meta is not None:
            assert 0 <= meta.mode <= 0o7777
            assert meta.uid >= 0
            assert meta.gid >= 0
            assert all(k.startswith(tarplan.ALLOWED_XATTR_PREFIXES) for k, _ in meta.xattrs)
            assert not any(k.startswith("user.overlay.") for k, _ in meta.xattrs)
        if isinstance(op, tarplan.MakeDevice):
            assert op.kind is not tarplan.EntryType.BLOCK
            if op.kind is tarplan.EntryType.CHAR:
                assert (op.major, op.minor) in tarplan.ALLOWED_CHAR_DEVICES
        if not isinstance(op, tarplan.MakeDir | tarplan.MakeOpaque):
            assert op.path, op  # only a directory's metadata may be applied to the root


def _plan_tar(raw: bytes, max_depth: int) -> None:
    """What layers.py does with a layer's tar stream, up to the filesystem operations."""
    try:
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r|", tarinfo=layers._BoundedTarInfo) as tf:
            for member in tf:
                _check_ops(tarplan.plan(layers._header(member), max_depth), max_depth)
    except (InvalidArgument, tarfile.TarError, EOFError):
        pass


def _build_tar(r: _Reader) -> bytes | None:
    out = io.BytesIO()
    try:
        with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tf:
            while r.left:
                ti = tarfile.TarInfo(r.text())
                ti.type = _TAR_TYPES[r.num(1) % len(_TAR_TYPES)]
                ti.linkname = r.text()
                ti.mode = r.num(2)
                ti.uid, ti.gid = r.num(3), r.num(1)
                ti.devmajor, ti.devminor = r.num(1) % 16, r.num(1) % 16
                size = r.num(1) if ti.type in (tarfile.REGTYPE, tarfile.AREGTYPE) else 0
                ti.size = size
                if r.num(1) & 1:
                    ti.pax_headers = {"SCHILY.xattr." + r.text(): r.text()}
                tf.addfile(ti, io.BytesIO(bytes(size)))
    except (ValueError, tarfile.TarError, UnicodeError, OverflowError):
        return None  # the writer refused the entry: nothing for the reader to read
    return out.getvalue()


def fuzz_tarplan(data: bytes) -> None:
    """tarplan.plan: of headers built from the input (mode 0), of a tar archive written from
    the input and read back as layers.py reads a layer (mode 1), of raw tar bytes (mode 2)."""
    if not data:
        return
    mode, max_depth = data[0] % 3, 1 + (data[0] >> 2) % 8
    r = _Reader(data[1:])
    if mode == 0:
        while r.left:
            h = tarplan.Header(
                name=r.text(),
                type=_TYPES[r.num(1) % len(_TYPES)],
                linkname=r.text(),
                mode=r.num(3),
                uid=r.num(2) - 8,
                gid=r.num(2) - 8,
                size=r.num(1) - 2,
                devmajor=r.num(1) % 8,
                devminor=r.num(1) % 16,
                xattrs={r.text(): b"v"},
            )
            with contextlib.suppress(InvalidArgument):
                _check_ops(tarplan.plan(h, max_depth), max_depth)
    elif mode == 1:
        raw = _build_tar(r)
        if raw is not None:
            _plan_tar(raw, max_depth)
    else:
        _plan_tar(data[1:], max_depth)


# ----- registry auth ----------------------------------------------------------------------------


def fuzz_challenge(data: bytes) -> None:
    """challenge.parse_challenges (never raises), the token URL of a Bearer challenge, and
    parse_token_response."""
    body = expand(data)
    header = body.decode("latin-1")  # how http.client hands header values over
    for ch in challenge.parse_challenges(header):
        assert ch.scheme
        assert ch.scheme == ch.scheme.lower()
        assert all(k == k.lower() for k in ch.params)
    bearer = challenge.bearer_challenge(header)
    if bearer is not None:
        challenge.refresh_token_form(bearer, ["repository:a:pull"], "r", "crirt")
        try:
            url = challenge.token_url(bearer, [challenge.pull_scope("library/busybox")])
            assert url.startswith(("http://", "https://"))
        except RegistryError:
            pass
    for variant in (body, *_retyped(body)):
        try:
            tok = challenge.parse_token_response(variant)
            assert tok.token
            assert tok.expires_in > 0
        except RegistryError:
            pass


def fuzz_authfile(data: bytes) -> None:
    """authfile.parse and lookup, parse_helper_output, normalize_key."""
    body = expand(data)
    for variant in (body, *_retyped(body)):
        _authfile_one(variant)
    authfile.candidate_keys(_text(body[:200]), "a/b")


def _authfile_one(body: bytes) -> None:
    try:
        f = authfile.parse(body, "fuzz.json")
        for registry, repo in (("docker.io", "library/busybox"), ("quay.io", "a/b/c")):
            found = authfile.lookup([f], registry, repo)
            assert found.credential is None or found.key in f.auths
    except InvalidArgument:
        pass
    with contextlib.suppress(InvalidArgument):
        authfile.parse_helper_output(body, "fuzz")


_NAMES = (
    "busybox",
    "library/busybox:1.36",
    "docker.io/library/busybox",
    "registry.example.com/a/b:1@sha256:" + "a" * 64,
    "localhost:5000/x",
    "quay.io/ns/repo",
)


def fuzz_registries_conf(data: bytes) -> None:
    """RegistriesConfig.parse of one or two documents (split at a ``#---`` line), then resolve,
    candidates and endpoints of a few names, and of the input's last line as a name."""
    texts = _text(expand(data)).split("\n#---\n", 1)
    _registries_one(texts)
    # The first document again with one value retyped (a table where a string belongs, ...).
    try:
        doc = tomllib.loads(texts[0])
    except (ValueError, RecursionError):
        return
    for variant in _retyped_docs(doc, (1, "x", [1], {"a": 1}), 40):
        assert isinstance(variant, dict)
        _registries_one([_toml(variant), *texts[1:]])


def _registries_one(texts: list[str]) -> None:
    try:
        conf = RegistriesConfig.parse(*((f"f{i}", t) for i, t in enumerate(texts)))
    except InvalidArgument:
        return
    for name in (*_NAMES, texts[-1].rsplit("\n", 1)[-1][:300]):
        try:
            ref = conf.resolve(name)
            for ep in conf.endpoints(ref):
                assert ep.host
                assert ep.base_url.startswith(("http://", "https://"))
            conf.candidates(name)
        except (InvalidArgument, RegistryError):
            pass


# ----- CRI logs ---------------------------------------------------------------------------------

_MAX_NS = 253402300799 * 1_000_000_000  # 9999-12-31T23:59:59Z


def fuzz_crilog(data: bytes) -> None:
    """crilog.parse_log and join_messages; what StreamEncoder writes parses back to the bytes
    it was fed; a formatted timestamp parses back to itself."""
    if len(data) < 2:
        return
    body = expand(data[2:])
    with contextlib.suppress(crilog.LogParseError):
        crilog.join_messages(crilog.parse_log(body))
    for line in body.split(b"\n")[:50]:
        try:
            rec = crilog.parse_record(line)
            assert rec.stream in (crilog.STDOUT, crilog.STDERR)
        except crilog.LogParseError:
            pass
    stream: crilog.Stream = "stdout" if data[0] & 1 else "stderr"
    enc = crilog.StreamEncoder(stream, max_line=data[1] % 48)
    now = int.from_bytes(body[:8].ljust(8, b"\0"), "big") % _MAX_NS
    out = b"".join(enc.feed(piece, now) for piece in _chunks(body, data[0] >> 1))
    out += enc.finish(now)
    records = crilog.parse_log(out)
    assert all(r.timestamp_ns == now and r.stream == stream for r in records)
    assert b"".join(m for _, m in crilog.join_messages(records)) == body
    assert crilog.parse_timestamp(crilog.format_timestamp(now)) == now


# ----- CNI --------------------------------------------------------------------------------------


def fuzz_cni(data: bytes) -> None:
    """cni config parsing (by file name), plugin stdin building, result and error parsing."""
    if not data:
        return
    name = ("a.conflist", "a.conf", "a.json", "a.txt")[data[0] % 4]
    body = expand(data[1:])
    for variant in (body, *_retyped(body)):
        _cni_one(name, variant, data[0] - 128)


def _cni_one(name: str, body: bytes, returncode: int) -> None:
    try:
        net = cni.parse_config_file(name, body)
        again = cni.config_from_raw(net.raw)
        assert (again.name, again.cni_version) == (net.name, net.cni_version)
        assert json.dumps(again.plugins) == json.dumps(net.plugins)
        cni.supports_check(net)
        caps = {"portMappings": [cni.PortMapping(80, 8080).to_cni()], "bandwidth": {}}
        for i in range(len(net.plugins)):
            conf = cni.build_plugin_config(net, i, {"cniVersion": net.cni_version}, caps)
            cni.encode_config(conf)
            assert set(conf.get("runtimeConfig", {})) <= set(caps)
    except cni.CniConfigError:
        pass
    cni.select_config([(name, body), ("b.conflist", body[:10])])
    try:
        result = cni.parse_result(body)
        summary = cni.summarize_result(result, "eth0")
        assert len(summary.ips) == len(summary.cidrs)
    except cni.CniPluginError:
        pass
    err = cni.parse_error(body, body[:20], returncode)
    str(err)


# ----- cgroup and /proc/net/dev text ------------------------------------------------------------


def fuzz_cgroupstats(data: bytes) -> None:
    """Every cgroupstats parser, on the input's NUL-separated parts (none of them raises)."""
    parts = _text(data).split("\x00")
    parts += [""] * (3 - len(parts))
    a, b, c = parts[0], parts[1], parts[2]
    for m in (cgroupstats.memory_v1(a, b, c), cgroupstats.memory_v2(a, b, c)):
        assert m.working_set >= 0
        assert m.available is None or m.available >= 0
    cgroupstats.cpu_usage_ns_v1(a)
    cgroupstats.cpu_usage_ns_v2(a)
    cgroupstats.parse_flat_keyed(a)
    cgroupstats.psi(a)
    swap = cgroupstats.swap_v2(a, b)
    assert swap is None or swap.available is None or swap.available >= 0
    for iface in cgroupstats.net_dev(a):
        assert iface.name != "lo"
    cgroupstats.net_dev(a, skip_loopback=False)


TARGETS: dict[str, Callable[[bytes], None]] = {
    "spdy": fuzz_spdy,
    "websocket": fuzz_websocket,
    "http1": fuzz_http1,
    "resize": fuzz_resize,
    "portforward": fuzz_portforward,
    "manifest": fuzz_manifest,
    "reference": fuzz_reference,
    "tarplan": fuzz_tarplan,
    "challenge": fuzz_challenge,
    "authfile": fuzz_authfile,
    "registries_conf": fuzz_registries_conf,
    "crilog": fuzz_crilog,
    "cni": fuzz_cni,
    "cgroupstats": fuzz_cgroupstats,
}
