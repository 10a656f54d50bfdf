"""Per-container monitors (conmon's role) and crirt's client for them.

Deliberately empty: ``python3 -m crirt.monitor`` and the fork server import this package, and
must not pull in asyncio or the client. Import ``crirt.monitor.client`` (``MonitorClient``) and
``crirt.monitor.protocol`` (``MonitorSpec``, ``ExitInfo``) directly.
"""
