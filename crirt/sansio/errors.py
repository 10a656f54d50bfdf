"""The one error family of crirt's wire protocols (h11's naming): ``ProtocolError`` when bytes
break a protocol, ``LocalProtocolError`` when crirt itself asked to send what the protocol
forbids (a bug in the caller). Each protocol subclasses it where it carries more: the HTTP
status to answer (``http1.BadRequest``), the WebSocket close code (``websocket.FrameError``),
a monitor's refusal (``monitor.protocol.MessageError``)."""

from __future__ import annotations


class ProtocolError(ValueError):
    """The bytes received break the protocol: the exchange cannot go on as it was."""


class LocalProtocolError(ProtocolError):
    """We asked to send something the protocol forbids (a bug in the caller)."""
