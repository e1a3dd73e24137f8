"""The ``loopwatch`` command (``main``: argument parsing and dispatch) and
its subcommands (``run``: watch every loop of a program and summarize it).

Sits on top: it may import any capability; none imports it.
"""
