"""loopwatch in a test suite: the pytest plugin that fails tests which block
the event loop, naming the code that blocked.

Registered through the ``pytest11`` entry point as ``loopwatch``
(``plugin.py``); inert unless asked for with ``--loopwatch-max-lag``, the
``loopwatch_max_lag`` ini option or ``@pytest.mark.loopwatch(max_lag=...)``.

* ``plugin.py``: options, marker, the phase hooks, activation;
* ``loops.py``: watches every loop that runs (``asyncio._set_running_loop``)
  and collects its stalls, each with the loop thread's stack;
* ``blame.py``: which frames are the project's, the failure message;
* ``summary.py``: the terminal summary (merged from xdist workers).

Nothing here is imported unless pytest loads the plugin, and the monitor
classes only once it is active.
"""
