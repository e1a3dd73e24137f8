"""Sessions: the timer wheel (``wheel_native``, over ``ext/wheel/``, and its
twin ``wheel_twin``) and the :class:`~loopwatch.SessionRegistry` built on
the selected wheel (``registry``).

Internal: the public names are ``loopwatch.TimerWheel``,
``loopwatch.SessionRegistry`` and its value types. Imports nothing above
it in the package but :mod:`loopwatch._selector`.
"""
