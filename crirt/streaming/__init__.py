"""The streaming server (exec, attach, port-forward over SPDY/3.1 and WebSocket).

``server`` owns the HTTP endpoint and the token cache; ``remotecommand`` and ``portforward``
drive the sessions over the transports in ``transport``; ``exec`` and ``attach`` are the two
remote-command backends (runc, the container's monitor).
"""

from crirt.streaming.server import AttachRequest as AttachRequest
from crirt.streaming.server import ExecRequest as ExecRequest
from crirt.streaming.server import PortForwardRequest as PortForwardRequest
from crirt.streaming.server import StreamingServer as StreamingServer

__all__ = ["AttachRequest", "ExecRequest", "PortForwardRequest", "StreamingServer"]
