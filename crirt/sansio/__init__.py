"""Pure protocol and format code: no sockets, files, subprocesses or clocks.

Each module is driven by an I/O module elsewhere: ``reference`` and ``manifest`` by
``crirt.registry``/``crirt.image``, ``challenge`` by ``crirt.registry.client``, ``tarplan`` by
``crirt.storage.layers``. Import the modules directly (``from crirt.sansio import reference``).
"""
