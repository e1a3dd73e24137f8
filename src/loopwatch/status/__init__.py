"""Status that answers while the loop is blocked: the socket's place and
checks (``paths``), the server of one process (``server``: its native core
``native`` over ``ext/status/``, twin ``twin``), the document it serves
(``document``) and the client (``client``).

Imports the capabilities below it (``loop``, ``sessions``) only through
the objects it is given; the gateway object and the CLI sit on top.
"""
